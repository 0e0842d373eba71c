// Shapes of the server's answers used by the pharmacy, patient, referral and schedule
// screens (from /api/openapi.json). Kept apart from types.ts so the consult screens'
// types and these merge without touching each other; the shared record's shapes and the
// prescription item have one definition, in types.ts.
import type { ClinicalSummary, LabResult, RecordItem, RxItem, SourceInstitution, Timeline } from "./types";

export type { ClinicalSummary, LabResult, RecordItem, RxItem, SourceInstitution, Timeline };

export type RxStatus =
  | "signed"
  | "sent"
  | "under_review"
  | "approved"
  | "rejected"
  | "dispensed"
  | "cancelled"
  | "expired";

export interface Finding {
  code: "allergy" | "interaction" | "duplicate_therapy" | "dose_over_maximum";
  severity: "minor" | "moderate" | "severe";
  message: string;
  drugs: string[];
}

/** What the doctor signed (canonical JSON). */
export interface RxContent {
  prescription_id: number;
  version: number;
  patient: { id: number; name: string; resident_id: string };
  prescriber: { user_id: number; institution_id: number };
  issued_at: string;
  valid_until: string;
  diagnosis: { system: string; code: string; display: string };
  items: RxItem[];
  kind: string;
  notes: string | null;
  override_reason: string | null;
}

/** The patient as the pharmacy sees them (the pharmacy's copy only): no record, no birth date. */
export interface RxPatientView {
  name: string;
  resident_id_masked: string;
  sex: "male" | "female";
  age: number;
  weight_kg: number | null;
  weight_at: string | null;
  allergies: string[];
}

export interface RxPrescriberView {
  user_id: number;
  name: string | null;
  title: string | null;
  institution_id: number | null;
  institution_name: string | null;
}

export interface Prescription {
  id: number;
  version: number;
  status: RxStatus;
  patient_id: number;
  prescriber_id: number;
  institution_id: number;
  pharmacy_id: number | null;
  content: RxContent;
  findings: Finding[];
  valid_until: string;
  review_reason: string | null;
  received: boolean;
  dispensation: { items: { drug_code: string; quantity: number }[]; note: string | null; at: string } | null;
  created_at: string;
  updated_at: string;
  /** Set on the pharmacy's copy, which also masks content.patient.resident_id. */
  patient?: RxPatientView | null;
  prescriber?: RxPrescriberView | null;
}

export interface RxHistoryEntry {
  at: string;
  status: string;
  version: number;
  actor_user_id: number | null;
  reason: string | null;
  details: Record<string, unknown>;
}

export type ReferralStatus =
  | "requested"
  | "accepted"
  | "scheduled"
  | "arrived"
  | "completed"
  | "declined"
  | "cancelled"
  | "expired";

export interface ReferralHistory {
  from_status: ReferralStatus | null;
  to_status: ReferralStatus;
  actor_user_id: number | null;
  note: string | null;
  at: string;
}

export interface Referral {
  id: number;
  direction: "up" | "down";
  patient_id: number;
  purpose: string;
  from_institution_id: number;
  from_user_id: number;
  to_institution_id: number;
  to_department_id: number | null;
  to_user_id: number | null;
  reason: string;
  working_diagnosis: string | null;
  urgency: "routine" | "urgent" | "emergency";
  summary: string | null;
  discharge_summary: string | null;
  follow_up: { title: string; due_date?: string | null; detail?: string | null }[];
  status: ReferralStatus;
  status_reason: string | null;
  appointment_id: number | null;
  expires_at: string;
  created_at: string;
  updated_at: string;
  history: ReferralHistory[];
}

export interface ScheduleTemplate {
  id: number;
  institution_id: number;
  department_id: number;
  practitioner_id: number | null;
  weekday: number;
  start_time: string;
  slot_minutes: number;
  slot_count: number;
  capacity: number;
  visit_type: "in_person" | "remote";
}

export interface Slot {
  id: number;
  institution_id: number;
  department_id: number;
  practitioner_id: number | null;
  start: string;
  minutes: number;
  capacity: number;
  booked: number;
  available: number;
  visit_type: "in_person" | "remote";
  status: "open" | "cancelled";
  cancel_reason: string | null;
}

export interface Holiday {
  day: string;
  reason: string;
}

export interface Appointment {
  id: number;
  slot: Slot;
  patient_id: number;
  referral_id: number | null;
  status: "booked" | "cancelled";
  cancel_reason: string | null;
}

export type SensitiveCategory =
  | "mental_health"
  | "reproductive_health"
  | "hiv"
  | "substance_use"
  | "genetic";

export const SENSITIVE: readonly SensitiveCategory[] = [
  "mental_health",
  "reproductive_health",
  "hiv",
  "substance_use",
  "genetic",
];

export interface Consent {
  institution: SourceInstitution;
  granted: boolean;
  excluded_categories: SensitiveCategory[];
  updated_at: string;
}

export interface AccessEntry {
  /** The audit entry's sequence number (the page cursor). */
  seq: number;
  at: string;
  user_id: number | null;
  user_name: string | null;
  role: string | null;
  institution: SourceInstitution | null;
  action: string;
  outcome: string;
  reason: string | null;
  resources: string | null;
  ip: string | null;
  emergency: boolean;
}

/** GET /api/v1/patients/{id}/access-log: one page, newest first. */
export interface AccessLogPage {
  items: AccessEntry[];
  /** Pass as `before` for the next (older) page; null on the last page. */
  next_before: number | null;
}

/** A consult as its patient sees it in the list (the consult screens use the full model). */
export interface PatientConsult {
  id: number;
  status: string;
  purpose: string;
  urgency: string;
  requesting_institution_id: number;
  invited_institution_id: number;
  invited_department: string | null;
  scheduled_at: string | null;
  decline_reason: string | null;
  created_at: string;
  updated_at: string;
}

export interface ConsultTransition {
  from_status: string | null;
  to_status: string;
  actor_id: number | null;
  at: string;
}
