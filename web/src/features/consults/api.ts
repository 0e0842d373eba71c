// The calls of a consult: requesting, accepting or declining it, the room's reads, the
// opinion, and the prescription written in it.
import { api } from "../../api/client";
import type {
  Consult,
  ConsultCreate,
  ConsultRecord,
  ConsultTransition,
  OpinionIn,
  OpinionOut,
  Prescription,
  RxCheck,
  RxCreate,
} from "../../api/types";

/** The consults I take part in (a patient: their own). */
export async function listConsults(): Promise<Consult[]> {
  return (await api.get("/consults")).items;
}

export function getConsult(id: number): Promise<Consult> {
  return api.get("/consults/{consult_id}", { path: { consult_id: id } });
}

export function requestConsult(body: ConsultCreate): Promise<Consult> {
  return api.post("/consults", { body });
}

/** The invited specialist accepts, proposing a time. */
export function acceptConsult(id: number, scheduledAt: string): Promise<Consult> {
  return api.post("/consults/{consult_id}/accept", {
    path: { consult_id: id },
    body: { scheduled_at: scheduledAt },
  });
}

export function declineConsult(id: number, reason: string): Promise<Consult> {
  return api.post("/consults/{consult_id}/decline", { path: { consult_id: id }, body: { reason } });
}

export async function consultHistory(id: number): Promise<ConsultTransition[]> {
  return (await api.get("/consults/{consult_id}/history", { path: { consult_id: id } })).items;
}

/** The record as the consult froze it, and as it stands now. */
export async function consultRecord(id: number): Promise<ConsultRecord> {
  // The snapshot is free-form in OpenAPI; types.ts names its inside.
  const answer = await api.get("/consults/{consult_id}/record", { path: { consult_id: id } });
  return answer as ConsultRecord;
}

/** The signed opinion (404 while none is written). */
export function getOpinion(consultId: number): Promise<OpinionOut> {
  return api.get("/consults/{consult_id}/opinion", { path: { consult_id: consultId } });
}

export function writeOpinion(consultId: number, body: OpinionIn): Promise<OpinionOut> {
  return api.post("/consults/{consult_id}/opinion", { path: { consult_id: consultId }, body });
}

/** The safety checks of a prescription before it is signed. */
export function checkPrescription(body: RxCreate): Promise<RxCheck> {
  return api.post("/prescriptions/check", { body });
}

export async function createPrescription(body: RxCreate): Promise<Prescription> {
  return (await api.post("/prescriptions", { body })) as Prescription;
}
