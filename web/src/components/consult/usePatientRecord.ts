// Loading a patient's shared record for the gp's page (summary + timeline), normalised.
import { ref } from "vue";
import { api, ApiError } from "../../api/client";
import type { ClinicalSummary, Institution, Items, Patient, Timeline } from "../../api/types";
import { fromPatientRecord, type RecordView } from "../record/record";

export function usePatientRecord(patientId: () => number) {
  const patient = ref<Patient | null>(null);
  const record = ref<RecordView | null>(null);
  const error = ref("");

  async function load(): Promise<void> {
    const id = patientId();
    try {
      const [p, summary, timeline] = await Promise.all([
        api.get<Patient>(`/api/v1/patients/${id}`),
        api.get<ClinicalSummary>(`/api/v1/patients/${id}/summary`),
        api.get<Timeline>(`/api/v1/patients/${id}/timeline?limit=200`),
      ]);
      patient.value = p;
      record.value = fromPatientRecord(summary, timeline.items);
      error.value = "";
    } catch (e) {
      error.value = e instanceof ApiError ? e.detail : String(e);
    }
  }

  return { patient, record, error, load };
}

let institutionsCache: Promise<Institution[]> | null = null;

/** The network's institutions (read once per page load). */
export function institutions(): Promise<Institution[]> {
  institutionsCache ??= api
    .get<Items<Institution>>("/api/v1/institutions")
    .then((answer) => answer.items)
    .catch((e: unknown) => {
      institutionsCache = null;
      throw e;
    });
  return institutionsCache;
}
