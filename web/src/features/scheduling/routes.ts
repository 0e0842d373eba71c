import type { RouteRecordRaw } from "vue-router";

export const routes: RouteRecordRaw[] = [
  {
    path: "/institution-admin/schedules",
    component: () => import("./SchedulesView.vue"),
    meta: { roles: ["institution_admin"] },
  },
];
