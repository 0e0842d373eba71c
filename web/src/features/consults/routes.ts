import type { RouteRecordRaw } from "vue-router";

export const routes: RouteRecordRaw[] = [
  {
    path: "/gp/patients/:id(\\d+)/consult",
    component: () => import("./ConsultRequestView.vue"),
    props: (route) => ({ patientId: Number(route.params.id) }),
    meta: { roles: ["gp"] },
  },
  {
    path: "/consults/:id(\\d+)/room",
    component: () => import("./ConsultRoomView.vue"),
    props: (route) => ({ consultId: Number(route.params.id) }),
    meta: { roles: ["gp", "specialist", "nurse"] },
  },
];
