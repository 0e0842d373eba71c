import type { RouteRecordRaw } from "vue-router";

export const routes: RouteRecordRaw[] = [
  { path: "/patient/consents", component: () => import("./ConsentsView.vue"), meta: { roles: ["patient"] } },
  { path: "/patient/access", component: () => import("./AccessLogView.vue"), meta: { roles: ["patient"] } },
];
