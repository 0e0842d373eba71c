import type { RouteRecordRaw } from "vue-router";
import "./triage.css";

export const routes: RouteRecordRaw[] = [
  { path: "/patient/triage", component: () => import("./TriageView.vue"), meta: { roles: ["patient"] } },
];
