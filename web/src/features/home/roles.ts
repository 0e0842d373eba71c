// Per-role home and navigation. A new screen adds its nav entry here and its route to
// its feature's routes.ts.
import type { Role } from "../../api/types";
import type { MessageKey } from "../../i18n/messages";

export interface NavItem {
  to: string;
  label: MessageKey;
}

export const HOME: Record<Role, string> = {
  specialist: "/specialist",
  gp: "/gp",
  pharmacist: "/pharmacist",
  nurse: "/nurse",
  patient: "/patient",
  institution_admin: "/institution-admin",
  platform_admin: "/platform-admin",
};

// The screens each role reaches from the navigation, beside home and the inbox.
// Patients have the 一号通 app's own tabs instead (features/patient/nav.ts).
const PAGES_NAV: Partial<Record<Role, NavItem[]>> = {
  gp: [
    { to: "/referrals", label: "nav.referrals" },
    { to: "/visits", label: "nav.visits" },
  ],
  specialist: [
    { to: "/referrals", label: "nav.referrals" },
    { to: "/visits", label: "nav.visits" },
  ],
  nurse: [{ to: "/referrals", label: "nav.referrals" }],
  institution_admin: [{ to: "/institution-admin/schedules", label: "nav.schedules" }],
};

export function navFor(role: Role): NavItem[] {
  const items: NavItem[] = [{ to: HOME[role], label: "nav.home" }];
  if (role === "platform_admin") items.push({ to: "/platform-admin", label: "nav.institutions" });
  items.push(...(PAGES_NAV[role] ?? []));
  items.push({ to: "/inbox", label: "nav.inbox" });
  return items.filter((item, i) => items.findIndex((other) => other.to === item.to) === i);
}
