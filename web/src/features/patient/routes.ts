// The patient app's own pages. The shell (PatientShell.vue, chosen in App.vue for the
// patient role) frames every /patient page, the other slices' too.
import type { RouteRecordRaw } from "vue-router";
import "./patient.css";

export const routes: RouteRecordRaw[] = [
  { path: "/patient", component: () => import("./HomeView.vue"), meta: { roles: ["patient"] } },
  { path: "/patient/me", component: () => import("./MeView.vue"), meta: { roles: ["patient"] } },
  { path: "/patient/consults", component: () => import("./ConsultsView.vue"), meta: { roles: ["patient"] } },
  {
    path: "/patient/consults/:id(\\d+)",
    component: () => import("./ConsultView.vue"),
    props: (route) => ({ consultId: Number(route.params.id) }),
    meta: { roles: ["patient"] },
  },
];
