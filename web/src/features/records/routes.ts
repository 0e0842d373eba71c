import type { RouteRecordRaw } from "vue-router";

export const routes: RouteRecordRaw[] = [
  { path: "/patient/record", component: () => import("./MyRecordView.vue"), meta: { roles: ["patient"] } },
  {
    path: "/gp/patients/:id(\\d+)",
    component: () => import("./PatientRecordView.vue"),
    props: (route) => ({ patientId: Number(route.params.id) }),
    meta: { roles: ["gp"] },
  },
  // The record a clinical role's institution cares for (the gp's page, for every clinician).
  {
    path: "/patients/:id(\\d+)",
    component: () => import("./PatientRecordView.vue"),
    props: (route) => ({ patientId: Number(route.params.id) }),
    meta: { roles: ["gp", "specialist", "nurse"] },
  },
];
