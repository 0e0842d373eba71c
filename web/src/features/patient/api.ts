// What the patient app's home and 我的 read. Each card reads one route; a route another
// capability serves (visits) is read with getIfServed, so the card is hidden where that
// capability is not deployed (404), never an error.
import { api, getIfServed } from "../../api/client";
import type { Appointment, Prescription } from "../../api/types";

export { listAppointments, listMyPrescriptions } from "../care/api";

export interface InboxSummary {
  unread: number;
  items: {
    id: number;
    title: string;
    kind: string;
    created_at: string;
    read: boolean;
    resource: string | null;
    data: Record<string, unknown>;
  }[];
}

/** My unread inbox items (the newest first) and how many there are. */
export async function unreadInbox(limit = 20): Promise<InboxSummary> {
  const answer = await api.get("/inbox", { query: { unread: true, limit } });
  return { unread: answer.unread, items: answer.items };
}

/** A follow-up video visit (互联网复诊), as the visits capability answers it. */
export interface VisitBrief {
  id: number;
  status: string;
  scheduled_at?: string | null;
  doctor_name?: string | null;
  condition?: string | null;
}

const LIVE_VISIT = new Set(["accepted", "waiting", "in_progress"]);

/** The visit a `visit_ready` notification names (data.visit_id, or resource `…/<id>`). */
function visitOf(item: InboxSummary["items"][number]): number | null {
  if (typeof item.data.visit_id === "number") return item.data.visit_id;
  const match = /(\d+)$/.exec(item.resource ?? "");
  return match ? Number(match[1]) : null;
}

/**
 * My visit in progress: the newest unread `visit_ready` notification's visit, when the
 * visits capability says it is still accepted, waiting or in progress. Only a server that
 * sends `visit_ready` is asked about a visit, so a deployment without visits asks nothing.
 */
export async function liveVisit(inbox: InboxSummary): Promise<VisitBrief | null> {
  const ready = inbox.items.find((item) => item.kind === "visit_ready");
  const id = ready ? visitOf(ready) : null;
  if (id === null) return null;
  const visit = await getIfServed<VisitBrief>(`/visits/${id}`);
  return visit && LIVE_VISIT.has(visit.status) ? visit : null;
}

const DONE_RX = new Set(["dispensed", "rejected", "cancelled", "expired"]);

/** Prescriptions still on their way to me, the ones waiting for my pharmacy choice first. */
export function openPrescriptions(items: Prescription[]): Prescription[] {
  return items
    .filter((rx) => !DONE_RX.has(rx.status))
    .sort((a, b) => Number(a.pharmacy_id !== null) - Number(b.pharmacy_id !== null));
}

/** The next appointment still to come. */
export function nextAppointment(items: Appointment[], now = Date.now()): Appointment | null {
  const coming = items
    .filter((a) => a.status === "booked" && Date.parse(a.slot.start) + a.slot.minutes * 60_000 >= now)
    .sort((a, b) => Date.parse(a.slot.start) - Date.parse(b.slot.start));
  return coming[0] ?? null;
}
