import type { RouteRecordRaw } from "vue-router";
import { session } from "../auth/session";
import { HOME } from "./roles";

const roleHome = () => import("./RoleHome.vue");

export const routes: RouteRecordRaw[] = [
  { path: "/", name: "root", redirect: () => (session.user ? HOME[session.user.role] : "/login") },
  { path: "/specialist", component: roleHome, meta: { roles: ["specialist"] } },
  { path: "/gp", component: roleHome, meta: { roles: ["gp"] } },
  { path: "/pharmacist", component: roleHome, meta: { roles: ["pharmacist"] } },
  { path: "/nurse", component: roleHome, meta: { roles: ["nurse"] } },
  // Ranked last by vue-router whatever the order: every other path is more specific.
  { path: "/:pathMatch(.*)*", component: () => import("./NotFoundView.vue"), meta: { public: true } },
];
