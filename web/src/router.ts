// The router: every feature declares its routes the same way (`routes` in its routes.ts);
// this module joins them and guards them by role.
import { createRouter, createWebHistory, type RouteRecordRaw } from "vue-router";
import type { Role } from "./api/types";
import { routes as admin } from "./features/admin/routes";
import { routes as auth } from "./features/auth/routes";
import { routes as booking } from "./features/booking/routes";
import { session } from "./features/auth/session";
import { routes as care } from "./features/care/routes";
import { routes as consent } from "./features/consent/routes";
import { routes as consults } from "./features/consults/routes";
import { routes as home } from "./features/home/routes";
import { HOME } from "./features/home/roles";
import { routes as inbox } from "./features/inbox/routes";
import { routes as messages } from "./features/messages/routes";
import { routes as prescriptions } from "./features/prescriptions/routes";
import { routes as payments } from "./features/payments/routes";
import { routes as patient } from "./features/patient/routes";
import { routes as records } from "./features/records/routes";
import { routes as referrals } from "./features/referrals/routes";
import { routes as scheduling } from "./features/scheduling/routes";
import { routes as triage } from "./features/triage/routes";
import { routes as visits } from "./features/visits/routes";

declare module "vue-router" {
  interface RouteMeta {
    /** Roles allowed on the route; absent means any signed-in user. */
    roles?: Role[];
    public?: boolean;
  }
}

const routes: RouteRecordRaw[] = [
  ...auth,
  ...home,
  ...admin,
  ...inbox,
  ...messages,
  ...records,
  ...consults,
  ...care,
  ...consent,
  ...referrals,
  ...scheduling,
  ...prescriptions,
  ...triage,
  ...booking,
  ...payments,
  ...visits,
  ...patient,
];

export const router = createRouter({ history: createWebHistory(), routes });

router.beforeEach((to) => {
  if (to.meta.public) {
    if (to.name === "login" && session.user) return HOME[session.user.role];
    return true;
  }
  if (!session.user) {
    return { name: "login", query: to.fullPath !== "/" ? { next: to.fullPath } : {} };
  }
  if (to.meta.roles && !to.meta.roles.includes(session.user.role)) return HOME[session.user.role];
  return true;
});
