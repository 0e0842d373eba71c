// The calls of the shared record: a patient, their summary and timeline, my patients.
import { api, type QueryOf } from "../../api/client";
import type { ClinicalSummary, MyPatient, Patient, Timeline } from "../../api/types";

export function getPatient(id: number): Promise<Patient> {
  return api.get("/patients/{patient_id}", { path: { patient_id: id } });
}

export function getSummary(patientId: number): Promise<ClinicalSummary> {
  return api.get("/patients/{patient_id}/summary", { path: { patient_id: patientId } });
}

export function getTimeline(
  patientId: number,
  query: QueryOf<"/patients/{patient_id}/timeline">,
): Promise<Timeline> {
  return api.get("/patients/{patient_id}/timeline", { path: { patient_id: patientId }, query });
}

/** The patients registered at or seen by my institution, by name or clinic number. */
export async function listMyPatients(query: QueryOf<"/patients">): Promise<MyPatient[]> {
  return (await api.get("/patients", { query })).items;
}
