import type { RouteRecordRaw } from "vue-router";
import "./care.css";

export const routes: RouteRecordRaw[] = [
  { path: "/patient/care", component: () => import("./MyCareView.vue"), meta: { roles: ["patient"] } },
  { path: "/patient/presence", component: () => import("./PresenceView.vue"), meta: { roles: ["patient"] } },
];
