// The calls of referrals up and down: the lists and each step of either side.
import { api } from "../../api/client";
import type { components } from "../../api/schema";
import type { Referral } from "../../api/types";

type S = components["schemas"];
// A referral's follow-up tasks are free-form in OpenAPI; types.ts names their inside.
const refined = (answer: S["ReferralOut"]): Referral => answer as Referral;

/** Referrals my institution received or sent (none given: a patient's own). */
export async function listReferrals(box?: "received" | "sent"): Promise<Referral[]> {
  const answer = await api.get("/referrals", box ? { query: { box } } : {});
  return answer.items.map(refined);
}

/** The receiving desk accepts, optionally booking a slot. */
export async function acceptReferral(id: number, body: S["AcceptRequest"]): Promise<Referral> {
  const path = { referral_id: id };
  return refined(await api.post("/referrals/{referral_id}/accept", { path, body }));
}

export async function declineReferral(id: number, reason: string): Promise<Referral> {
  const path = { referral_id: id };
  return refined(await api.post("/referrals/{referral_id}/decline", { path, body: { reason } }));
}

export async function scheduleReferral(id: number, slotId: number): Promise<Referral> {
  const path = { referral_id: id };
  return refined(await api.post("/referrals/{referral_id}/schedule", { path, body: { slot_id: slotId } }));
}

export async function arriveReferral(id: number, note: string | null): Promise<Referral> {
  const path = { referral_id: id };
  return refined(await api.post("/referrals/{referral_id}/arrive", { path, body: { note } }));
}

export async function completeReferral(id: number, note: string | null): Promise<Referral> {
  const path = { referral_id: id };
  return refined(await api.post("/referrals/{referral_id}/complete", { path, body: { note } }));
}

/** The referring side withdraws its referral. */
export async function cancelReferral(id: number, reason: string): Promise<Referral> {
  const path = { referral_id: id };
  return refined(await api.post("/referrals/{referral_id}/cancel", { path, body: { reason } }));
}
