// The patient app's five tabs (bottom navigation on a phone, a side rail on a laptop).
// A tab is active on its own path and below it (`/patient/visits/7` is 就诊); 首页 only on
// `/patient` itself. The other slices' pages live under these paths.
import type { MessageKey } from "../../i18n/messages";

export type TabIcon = "home" | "book" | "visits" | "messages" | "me";

export interface Tab {
  to: string;
  label: MessageKey;
  icon: TabIcon;
  /** Paths below others' tabs that belong to this one (我的 holds the record, consents …). */
  also?: string[];
}

export const TABS: Tab[] = [
  { to: "/patient", label: "papp.tab.home", icon: "home", also: ["/patient/triage"] },
  { to: "/patient/book", label: "papp.tab.book", icon: "book", also: ["/patient/appointments"] },
  { to: "/patient/visits", label: "papp.tab.visits", icon: "visits", also: ["/patient/consults"] },
  { to: "/patient/messages", label: "papp.tab.messages", icon: "messages", also: ["/inbox"] },
  {
    to: "/patient/me",
    label: "papp.tab.me",
    icon: "me",
    also: [
      "/patient/record",
      "/patient/care",
      "/patient/consents",
      "/patient/access",
      "/patient/presence",
      "/patient/settings",
      "/patient/prescriptions",
      "/patient/orders",
    ],
  },
];

function under(path: string, prefix: string): boolean {
  return path === prefix || path.startsWith(`${prefix}/`);
}

/** The tab a path belongs to (null: none, e.g. a page of no tab). */
export function tabOf(path: string): Tab | null {
  for (const tab of TABS) {
    if (tab.to !== "/patient" && under(path, tab.to)) return tab;
    if (tab.also?.some((p) => under(path, p))) return tab;
  }
  return path === "/patient" ? TABS[0] : null;
}

/** SVG path data of each tab's icon (24×24, stroked). */
export const ICONS: Record<TabIcon, string> = {
  home: "M3 11l9-7 9 7v9a1 1 0 0 1-1 1h-5v-6h-6v6H4a1 1 0 0 1-1-1z",
  book: "M4 6h16v14H4zM4 10h16M8 3v5M16 3v5M8 14h3M13 14h3M8 17h3",
  visits: "M3 7h12v10H3zM15 10l6-3v10l-6-3z",
  messages: "M4 5h16v11H9l-5 4z",
  me: "M12 12a4 4 0 1 0 0-8 4 4 0 0 0 0 8zM4 21c0-4 4-6 8-6s8 2 8 6",
};
