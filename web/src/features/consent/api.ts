// The calls of a patient's sharing decisions and of who looked at their record.
import { api, type QueryOf } from "../../api/client";
import type { components } from "../../api/schema";
import type { AccessLogPage, Consent } from "../../api/types";

type S = components["schemas"];

export async function listConsents(patientId: number): Promise<Consent[]> {
  return (await api.get("/patients/{patient_id}/consents", { path: { patient_id: patientId } })).items;
}

/** Share the record with one institution (by code), or stop sharing it. */
export function setConsent(patientId: number, institution: string, body: S["ConsentSet"]): Promise<Consent> {
  return api.put("/patients/{patient_id}/consents/{institution}", {
    path: { patient_id: patientId, institution },
    body,
  });
}

/** One page of the access log, newest first; `before` continues from `next_before`. */
export function accessLog(
  patientId: number,
  query: QueryOf<"/patients/{patient_id}/access-log">,
): Promise<AccessLogPage> {
  return api.get("/patients/{patient_id}/access-log", { path: { patient_id: patientId }, query });
}
