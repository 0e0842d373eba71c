import type { RouteRecordRaw } from "vue-router";

export const routes: RouteRecordRaw[] = [
  { path: "/patient/visits", component: () => import("./PatientVisitsView.vue"), meta: { roles: ["patient"] } },
  {
    path: "/patient/visits/:id(\\d+)",
    component: () => import("./PatientVisitView.vue"),
    props: (route) => ({ visitId: Number(route.params.id) }),
    meta: { roles: ["patient"] },
  },
  { path: "/visits", component: () => import("./DoctorVisitsView.vue"), meta: { roles: ["specialist", "gp"] } },
  {
    path: "/visits/:id(\\d+)",
    component: () => import("./DoctorVisitView.vue"),
    props: (route) => ({ visitId: Number(route.params.id) }),
    meta: { roles: ["specialist", "gp"] },
  },
];
