// Loading a patient's shared record for the gp's page (summary + timeline), normalised.
import { ref } from "vue";
import { ApiError } from "../../api/client";
import { getPatient, getSummary, getTimeline } from "./api";
import type { Patient } from "../../api/types";
import { fromPatientRecord, type RecordView } from "./record";

export function usePatientRecord(patientId: () => number) {
  const patient = ref<Patient | null>(null);
  const record = ref<RecordView | null>(null);
  const error = ref("");

  async function load(): Promise<void> {
    const id = patientId();
    try {
      const [p, summary, timeline] = await Promise.all([
        getPatient(id),
        getSummary(id),
        getTimeline(id, { limit: 200 }),
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
