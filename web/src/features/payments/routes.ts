import type { RouteRecordRaw } from "vue-router";

export const routes: RouteRecordRaw[] = [
  {
    path: "/patient/orders",
    component: () => import("./OrdersView.vue"),
    meta: { roles: ["patient"] },
  },
  {
    path: "/patient/orders/:id(\\d+)",
    component: () => import("./OrderView.vue"),
    meta: { roles: ["patient"] },
  },
];
