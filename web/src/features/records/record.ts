// One shape for the shared record, whichever API it came from: the gp's patient page reads
// /patients/{id}/summary + /timeline, the consult room /consults/{id}/record (the snapshot
// the requester froze, with the items they picked, and the live summary).
import type { ClinicalSummary, ConsultRecord, LabResult, RecordItem, RecordRef } from "../../api/types";

export interface RecordEntry {
  key: string;
  ref: RecordRef;
  type: string;
  display: string;
  code: string | null;
  date: string | null;
  status: string | null;
  /** The source institution's name (or code when only that is known). */
  source: string;
}

export interface RecordLab extends RecordEntry {
  value: string;
  unit: string | null;
  flag: string | null;
  abnormal: boolean;
  range: string | null;
  direction: "up" | "down" | "stable" | null;
  /** Oldest first, for the trend chart. */
  points: { date: string; value: number }[];
}

export interface RecordView {
  patientId: number;
  timeline: RecordEntry[];
  problems: RecordEntry[];
  labs: RecordLab[];
  medications: RecordEntry[];
  allergies: RecordEntry[];
  /** When the requester froze the snapshot (consult room only). */
  takenAt: string | null;
  accessReason: string;
}

function entry(item: RecordItem): RecordEntry {
  return {
    key: `${item.resource_type}/${item.id}`,
    ref: { resource_type: item.resource_type, id: String(item.id) },
    type: item.resource_type,
    display: item.display ?? item.code ?? item.resource_type,
    code: item.code,
    date: item.date,
    status: item.status,
    source: item.institution.name,
  };
}

function lab(item: LabResult): RecordLab {
  const history = [{ date: item.date, value: typeof item.value === "number" ? item.value : null }, ...item.trend];
  const points = history
    .filter((p): p is { date: string; value: number } => p.date !== null && typeof p.value === "number")
    .sort((a, b) => a.date.localeCompare(b.date));
  return {
    ...entry(item),
    value: item.value === null ? "" : String(item.value),
    unit: item.unit,
    flag: item.interpretation,
    abnormal: item.abnormal,
    range: item.reference_range,
    direction: item.direction,
    points,
  };
}

function fromSummaryParts(summary: ClinicalSummary): Omit<RecordView, "timeline" | "takenAt"> {
  return {
    patientId: summary.patient_id,
    problems: summary.active_problems.map(entry),
    labs: summary.recent_labs.map(lab),
    medications: summary.current_medications.map(entry),
    allergies: summary.allergies.map(entry),
    accessReason: summary.access_reason,
  };
}

export function fromPatientRecord(summary: ClinicalSummary, timeline: RecordItem[]): RecordView {
  return { ...fromSummaryParts(summary), timeline: timeline.map(entry), takenAt: null };
}

type Fhir = Record<string, unknown>;

function text(concept: unknown): string | null {
  const c = concept as { text?: string; coding?: { display?: string; code?: string }[] } | undefined;
  return c?.text ?? c?.coding?.[0]?.display ?? c?.coding?.[0]?.code ?? null;
}

/** A raw FHIR resource of the snapshot, as a record entry. */
function fromFhir(resource: Fhir, names: Map<string, string>): RecordEntry {
  const type = String(resource.resourceType ?? "Resource");
  const id = String(resource.id ?? "");
  const concept = resource.code ?? resource.medicationCodeableConcept ?? resource.type;
  const date = (resource.effectiveDateTime ??
    resource.onsetDateTime ??
    resource.recordedDate ??
    resource.authoredOn ??
    resource.date ??
    null) as string | null;
  const meta = resource.meta as { source?: string } | undefined;
  const code = meta?.source?.split(":").pop() ?? "";
  const status = resource.clinicalStatus ? text(resource.clinicalStatus) : ((resource.status as string | undefined) ?? null);
  return {
    key: `${type}/${id}`,
    ref: { resource_type: type, id },
    type,
    display: text(concept) ?? (resource.description as string | undefined) ?? type,
    code: (concept as { coding?: { code?: string }[] } | undefined)?.coding?.[0]?.code ?? null,
    date,
    status,
    source: names.get(code) ?? code,
  };
}

export function fromConsultRecord(record: ConsultRecord, institutionNames: Map<string, string>): RecordView {
  const summary = record.live ?? record.snapshot.summary;
  const parts = fromSummaryParts(summary);
  const timeline = (record.snapshot.items ?? []).map((r) => fromFhir(r, institutionNames));
  timeline.sort((a, b) => (b.date ?? "").localeCompare(a.date ?? ""));
  return { ...parts, timeline, takenAt: record.snapshot.taken_at ?? null };
}
