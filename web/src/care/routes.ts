// Routes of the screens that earn a care relationship (spread into router.ts).
import type { RouteRecordRaw } from "vue-router";
import "./care.css";

export const careRoutes: RouteRecordRaw[] = [
  { path: "/patient/presence", component: () => import("./PresenceView.vue"), meta: { roles: ["patient"] } },
  // The record a clinical role's institution cares for (the gp's page, for every clinician).
  {
    path: "/patients/:id(\\d+)",
    component: () => import("../views/PatientRecordView.vue"),
    props: (route) => ({ patientId: Number(route.params.id) }),
    meta: { roles: ["gp", "specialist", "nurse"] },
  },
];
