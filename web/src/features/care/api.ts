// The calls of earning a care relationship (registration, presence codes, link requests)
// and of the patient's own prescriptions and appointments.
import { api } from "../../api/client";
import type { components } from "../../api/schema";
import type {
  Appointment,
  CareRelationship,
  CareRequest,
  PatientRegister,
  PatientRegistered,
  PresenceCode,
  Prescription,
  RxHistoryEntry,
} from "../../api/types";

type S = components["schemas"];

/** Register a resident at my institution (or find the one the network holds). */
export function registerPatient(body: PatientRegister): Promise<PatientRegistered> {
  return api.post("/patients", { body });
}

/** The patient is here: their presence code earns my institution a care relationship. */
export function confirmPatientPresence(body: S["PresenceConfirm"]): Promise<CareRelationship> {
  return api.post("/care/presence", { body });
}

/** Ask the patient (in their app) to let my institution care for them. */
export function requestCare(patientId: number, note?: string): Promise<CareRequest> {
  return api.post("/patients/{patient_id}/care-requests", {
    path: { patient_id: patientId },
    body: note ? { note } : {},
  });
}

/** A new presence code for the signed-in patient. */
export function issuePresenceCode(): Promise<PresenceCode> {
  return api.post("/me/presence-code");
}

export async function listCareRequests(patientId: number): Promise<CareRequest[]> {
  const answer = await api.get("/patients/{patient_id}/care-requests", { path: { patient_id: patientId } });
  return answer.items;
}

export async function listCareRelationships(patientId: number): Promise<CareRelationship[]> {
  const answer = await api.get("/patients/{patient_id}/care-relationships", {
    path: { patient_id: patientId },
  });
  return answer.items;
}

/** The patient approves or declines an institution's link request. */
export function decideCareRequest(id: number, approve: boolean): Promise<CareRequest> {
  return api.post("/care-requests/{request_id}/decision", { path: { request_id: id }, body: { approve } });
}

/** The signed-in patient's prescriptions (or a prescriber's own). */
export async function listMyPrescriptions(limit: number): Promise<Prescription[]> {
  return (await api.get("/prescriptions", { query: { limit } })).items as Prescription[];
}

export async function prescriptionHistory(id: number): Promise<RxHistoryEntry[]> {
  const answer = await api.get("/prescriptions/{prescription_id}/history", {
    path: { prescription_id: id },
  });
  return answer.items;
}

/** My appointments (a patient) or my institution's (a desk). */
export async function listAppointments(): Promise<Appointment[]> {
  return (await api.get("/appointments")).items;
}
