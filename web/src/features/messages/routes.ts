import type { RouteRecordRaw } from "vue-router";

export const routes: RouteRecordRaw[] = [
  { path: "/patient/messages", component: () => import("./MessagesView.vue"), meta: { roles: ["patient"] } },
  {
    path: "/patient/settings/notifications",
    component: () => import("./NotificationSettingsView.vue"),
    meta: { roles: ["patient"] },
  },
];
