import type { RouteRecordRaw } from "vue-router";

export const routes: RouteRecordRaw[] = [
  {
    path: "/institution-admin",
    component: () => import("./InstitutionAdminHome.vue"),
    meta: { roles: ["institution_admin"] },
  },
  {
    path: "/platform-admin",
    component: () => import("./PlatformAdminHome.vue"),
    meta: { roles: ["platform_admin"] },
  },
  {
    path: "/platform-admin/institutions/:id(\\d+)",
    component: () => import("./InstitutionManageView.vue"),
    props: (route) => ({ institutionId: Number(route.params.id) }),
    meta: { roles: ["platform_admin"] },
  },
];
