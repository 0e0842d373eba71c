import type { RouteRecordRaw } from "vue-router";

// The patient's prescriptions, phone first (issue 19: rxpick).
export const routes: RouteRecordRaw[] = [
  {
    path: "/patient/prescriptions",
    component: () => import("./MyPrescriptionsView.vue"),
    meta: { roles: ["patient"] },
  },
  {
    path: "/patient/prescriptions/:id(\\d+)",
    component: () => import("./MyPrescriptionView.vue"),
    props: (route) => ({ prescriptionId: Number(route.params.id) }),
    meta: { roles: ["patient"] },
  },
];
