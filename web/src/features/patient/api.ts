// What the patient app's home and 我的 read. Each card reads one route; a route another
// capability serves (visits) is read with getIfServed, so the card is hidden where that
// capability is not deployed (404), never an error.
import { api, getIfServed } from "../../api/client";
import type { Appointment, Prescription } from "../../api/types";

export { listAppointments, listMyPrescriptions } from "../care/api";

export interface InboxSummary {
  unread: number;
  items: { id: number; title: string; kind: string; created_at: string; read: boolean }[];
}

/** My unread inbox items (the newest few) and how many there are. */
export async function unreadInbox(limit = 3): Promise<InboxSummary> {
  const answer = await api.get("/inbox", { query: { unread: true, limit } });
  return { unread: answer.unread, items: answer.items };
}

/** A follow-up video visit (互联网复诊), as the visits capability lists it. */
export interface VisitBrief {
  id: number;
  status: string;
  scheduled_at?: string | null;
  doctor_name?: string | null;
  condition?: string | null;
}

const LIVE_VISIT = new Set(["accepted", "waiting", "in_progress"]);

/** My visit in progress (accepted, waiting or in progress), if the server has visits. */
export async function liveVisit(): Promise<VisitBrief | null> {
  const answer = await getIfServed<{ items?: VisitBrief[] }>("/visits");
  const items = Array.isArray(answer?.items) ? answer.items : [];
  return items.find((v) => LIVE_VISIT.has(v.status)) ?? null;
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
