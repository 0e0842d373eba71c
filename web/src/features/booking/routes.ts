import type { RouteRecordRaw } from "vue-router";

export const routes: RouteRecordRaw[] = [
  {
    path: "/patient/book",
    component: () => import("./BookPage.vue"),
    meta: { roles: ["patient"] },
  },
  {
    path: "/patient/appointments",
    component: () => import("./AppointmentsPage.vue"),
    meta: { roles: ["patient"] },
  },
];
