// Per-role home and navigation. New screens (consults, referrals, prescriptions, the
// patient record) add their entries here and their routes in router.ts.
import type { Role } from "./api/types";
import type { MessageKey } from "./i18n/messages";

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

export function navFor(role: Role): NavItem[] {
  const items: NavItem[] = [{ to: HOME[role], label: "nav.home" }];
  if (role === "platform_admin") items.push({ to: "/platform-admin", label: "nav.institutions" });
  items.push({ to: "/inbox", label: "nav.inbox" });
  return items.filter((item, i) => items.findIndex((other) => other.to === item.to) === i);
}
