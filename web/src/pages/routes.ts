// Routes of the pharmacy, patient, referral and schedule screens (spread into router.ts).
import type { RouteRecordRaw } from "vue-router";

export const pageRoutes: RouteRecordRaw[] = [
  { path: "/patient/record", component: () => import("./MyRecordView.vue"), meta: { roles: ["patient"] } },
  { path: "/patient/care", component: () => import("./MyCareView.vue"), meta: { roles: ["patient"] } },
  { path: "/patient/consents", component: () => import("./ConsentsView.vue"), meta: { roles: ["patient"] } },
  { path: "/patient/access", component: () => import("./AccessLogView.vue"), meta: { roles: ["patient"] } },
  {
    path: "/referrals",
    component: () => import("./ReferralsView.vue"),
    meta: { roles: ["gp", "specialist", "nurse"] },
  },
  {
    path: "/institution-admin/schedules",
    component: () => import("./SchedulesView.vue"),
    meta: { roles: ["institution_admin"] },
  },
];
