import { createRouter, createWebHistory, type RouteRecordRaw } from "vue-router";
import type { Role } from "./api/types";
import { session } from "./auth/session";
import { HOME } from "./roles";
import { pageRoutes } from "./pages/routes";
import { careRoutes } from "./care/routes";

declare module "vue-router" {
  interface RouteMeta {
    /** Roles allowed on the route; absent means any signed-in user. */
    roles?: Role[];
    public?: boolean;
  }
}

const roleHome = () => import("./views/RoleHome.vue");

const routes: RouteRecordRaw[] = [
  { path: "/login", name: "login", component: () => import("./views/LoginView.vue"), meta: { public: true } },
  { path: "/", name: "root", redirect: () => (session.user ? HOME[session.user.role] : "/login") },
  { path: "/specialist", component: roleHome, meta: { roles: ["specialist"] } },
  { path: "/gp", component: roleHome, meta: { roles: ["gp"] } },
  { path: "/pharmacist", component: roleHome, meta: { roles: ["pharmacist"] } },
  { path: "/nurse", component: roleHome, meta: { roles: ["nurse"] } },
  { path: "/patient", component: roleHome, meta: { roles: ["patient"] } },
  {
    path: "/institution-admin",
    component: () => import("./views/InstitutionAdminHome.vue"),
    meta: { roles: ["institution_admin"] },
  },
  {
    path: "/platform-admin",
    component: () => import("./views/PlatformAdminHome.vue"),
    meta: { roles: ["platform_admin"] },
  },
  {
    path: "/platform-admin/institutions/:id(\\d+)",
    component: () => import("./views/InstitutionManageView.vue"),
    props: (route) => ({ institutionId: Number(route.params.id) }),
    meta: { roles: ["platform_admin"] },
  },
  { path: "/inbox", component: () => import("./views/InboxView.vue") },
  ...pageRoutes,
  ...careRoutes,
  { path: "/:pathMatch(.*)*", component: () => import("./views/NotFoundView.vue"), meta: { public: true } },
];

export const router = createRouter({ history: createWebHistory(), routes });

router.beforeEach((to) => {
  if (to.meta.public) {
    if (to.name === "login" && session.user) return HOME[session.user.role];
    return true;
  }
  if (!session.user) {
    return { name: "login", query: to.fullPath !== "/" ? { next: to.fullPath } : {} };
  }
  if (to.meta.roles && !to.meta.roles.includes(session.user.role)) return HOME[session.user.role];
  return true;
});

// --- consults (helper "webroom") ------------------------------------------------------
router.addRoute({
  path: "/gp/patients/:id(\\d+)",
  component: () => import("./views/PatientRecordView.vue"),
  props: (route) => ({ patientId: Number(route.params.id) }),
  meta: { roles: ["gp"] },
});
router.addRoute({
  path: "/gp/patients/:id(\\d+)/consult",
  component: () => import("./views/ConsultRequestView.vue"),
  props: (route) => ({ patientId: Number(route.params.id) }),
  meta: { roles: ["gp"] },
});
router.addRoute({
  path: "/consults/:id(\\d+)/room",
  component: () => import("./views/ConsultRoomView.vue"),
  props: (route) => ({ consultId: Number(route.params.id) }),
  meta: { roles: ["gp", "specialist", "nurse"] },
});
