// The calls of follow-up video visits (互联网复诊): the patient's request and cancel, the
// doctor's answer, room, record, prescriptions and end (docs/visits.md).
import { api } from "../../api/client";
import type { FollowUpCondition, Visit, VisitCreate, VisitDoctor, VisitRecord } from "../../api/types";

export async function listVisits(): Promise<Visit[]> {
  return (await api.get("/visits")).items;
}

export function getVisit(id: number): Promise<Visit> {
  return api.get("/visits/{visit_id}", { path: { visit_id: id } });
}

export async function visitDoctors(): Promise<VisitDoctor[]> {
  return (await api.get("/visits/doctors")).items;
}

/** My diagnoses (in person or not), and whether I am a child who needs a guardian present. */
export async function myConditions(): Promise<{ items: FollowUpCondition[]; guardianRequired: boolean }> {
  const answer = await api.get("/visits/conditions");
  return { items: answer.items, guardianRequired: answer.guardian_required };
}

export function requestVisit(body: VisitCreate): Promise<Visit> {
  return api.post("/visits", { body });
}

export function cancelVisit(id: number): Promise<Visit> {
  return api.post("/visits/{visit_id}/cancel", { path: { visit_id: id } });
}

export function acceptVisit(id: number): Promise<Visit> {
  return api.post("/visits/{visit_id}/accept", { path: { visit_id: id } });
}

export function declineVisit(id: number, reason: string): Promise<Visit> {
  return api.post("/visits/{visit_id}/decline", { path: { visit_id: id }, body: { reason } });
}

/** The doctor opens the room; ``password`` when the login is too old (doctor_reauth_required). */
export function openVisit(id: number, password?: string): Promise<Visit> {
  return api.post("/visits/{visit_id}/open", { path: { visit_id: id }, body: password ? { password } : {} });
}

export function admitPatient(id: number): Promise<Visit> {
  return api.post("/visits/{visit_id}/admit", { path: { visit_id: id } });
}

export function writeVisitRecord(id: number, body: VisitRecord): Promise<Visit> {
  return api.put("/visits/{visit_id}/record", { path: { visit_id: id }, body });
}

export function linkPrescription(id: number, prescriptionId: number): Promise<Visit> {
  return api.post("/visits/{visit_id}/prescriptions", {
    path: { visit_id: id },
    body: { prescription_id: prescriptionId },
  });
}

export function endVisit(id: number): Promise<Visit> {
  return api.post("/visits/{visit_id}/end", { path: { visit_id: id } });
}
