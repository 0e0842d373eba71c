import type { RouteRecordRaw } from "vue-router";

export const routes: RouteRecordRaw[] = [
  { path: "/referrals", component: () => import("./ReferralsView.vue"), meta: { roles: ["gp", "specialist", "nurse"] } },
];
