// Shapes of the server's answers, as published in /api/openapi.json.

export type Role =
  | "specialist"
  | "gp"
  | "pharmacist"
  | "nurse"
  | "institution_admin"
  | "platform_admin"
  | "patient";

export const ROLES: readonly Role[] = [
  "specialist",
  "gp",
  "pharmacist",
  "nurse",
  "institution_admin",
  "platform_admin",
  "patient",
];

export type InstitutionKind = "tertiary" | "secondary" | "community" | "pharmacy" | "lab";

export interface TokenResponse {
  access_token: string;
  token_type: "Bearer";
  expires_in: number;
  refresh_token: string;
}

export interface InstitutionRef {
  id: number;
  code: string;
  name: string;
  kind: InstitutionKind;
}

export interface Department {
  id: number;
  name: string;
}

export interface Institution extends InstitutionRef {
  region: string | null;
  departments: Department[];
}

export interface User {
  id: number;
  username: string;
  role: Role;
  name: string | null;
  institution: InstitutionRef | null;
  department: string | null;
  title: string | null;
  can_prescribe: boolean;
  patient_id: number | null;
  totp_enabled: boolean;
  active: boolean;
  created_at: string;
}

export interface UserCreate {
  username: string;
  password: string;
  role: Role;
  name?: string;
  institution?: string;
  department?: string;
  title?: string;
  can_prescribe?: boolean;
}

export interface Items<T> {
  items: T[];
}

export interface FieldError {
  field: string;
  reason: string;
}

/** RFC 9457 problem details, as every /api error is answered. */
export interface Problem {
  title?: string;
  status?: number;
  detail?: string;
  code?: string;
  errors?: FieldError[];
}

/** A committed stream event pushed over Socket.IO or replayed by `sync`. */
export interface Envelope {
  stream: string;
  seq: number;
  type: string;
  op: string;
  data: Record<string, unknown>;
  at: string;
}

// --- consults, the shared record, prescriptions (consult room; helper "webroom") -------

export type ConsultStatus =
  | "requested"
  | "accepted"
  | "scheduled"
  | "in_session"
  | "opinion_written"
  | "closed"
  | "declined"
  | "cancelled";
export type Urgency = "routine" | "urgent" | "emergency";

export interface RecordRef {
  resource_type: string;
  id: string;
}

export interface InformedConsent {
  given_by: "patient" | "guardian" | "close_relative";
  name?: string | null;
  relation?: string | null;
  method: "written" | "electronic" | "verbal_witnessed";
  given_at: string;
}

export interface ConsultCreate {
  patient_id: number;
  consent: InformedConsent | null;
  reason: string;
  purpose: string;
  clinical_question: string;
  case_summary: string;
  urgency: Urgency;
  window_start: string;
  window_end: string;
  invited_institution_id: number;
  invited_department?: string | null;
  record_items: RecordRef[];
}

export interface ConsultParticipant {
  user_id: number;
  role: string;
  admitted: boolean;
}

export interface Consult {
  id: number;
  patient_id: number;
  status: ConsultStatus;
  requester_id: number;
  requesting_institution_id: number;
  invited_institution_id: number;
  invited_department: string | null;
  invited_specialty: string | null;
  invited_title: string | null;
  invited_specialist_id: number | null;
  host_id: number | null;
  reason: string;
  purpose: string;
  clinical_question: string;
  case_summary: string;
  urgency: Urgency;
  window_start: string;
  window_end: string;
  consent: Record<string, unknown>;
  scheduled_at: string | null;
  proposed_at: string | null;
  decline_reason: string | null;
  escalated_at: string | null;
  opinion_document_id: string | null;
  participants: ConsultParticipant[];
  created_at: string;
  updated_at: string;
}

export interface SourceInstitution {
  id: number;
  code: string;
  name: string;
}

export interface RecordItem {
  id: number;
  resource_type: string;
  code: string | null;
  code_system: string | null;
  display: string | null;
  date: string | null;
  status: string | null;
  category: string | null;
  institution: SourceInstitution;
  ingested_at: string;
}

export interface LabResult extends RecordItem {
  value: number | string | null;
  unit: string | null;
  interpretation: string | null;
  abnormal: boolean;
  reference_range: string | null;
  trend: { date: string | null; value: number | null }[];
  direction: "up" | "down" | "stable" | null;
}

export interface ClinicalSummary {
  patient_id: number;
  active_problems: RecordItem[];
  recent_labs: LabResult[];
  current_medications: RecordItem[];
  allergies: RecordItem[];
  access_reason: string;
}

export interface Timeline {
  patient_id: number;
  items: RecordItem[];
  total: number;
  next_offset: number | null;
  access_reason: string;
}

/** GET /api/v1/consults/{id}/record: the frozen snapshot and the live summary. */
export interface ConsultRecord {
  snapshot: { taken_at?: string; summary?: ClinicalSummary; items?: Record<string, unknown>[] };
  live: ClinicalSummary;
}

export interface Patient {
  id: number;
  resident_id: string;
  name: string;
  sex: "male" | "female";
  birth_date: string;
  phone: string | null;
  real_name_verified: boolean;
  merged_into_id: number | null;
  links: { institution: InstitutionRef; kind: "mrn" | "card"; number: string }[];
}

/** A member of a consult's live session (`presence`, `consult.join`). */
export interface PresenceMember {
  user_id: number;
  camera: boolean;
  mic: boolean;
  screen: boolean;
  since: string;
  /** Recording contract: the server's recorder is a member that sends no media. */
  kind?: "person" | "recorder";
}

export interface ChatMessage {
  consult_id: number;
  message_id: number;
  client_id: string;
  sender_id: number;
  text: string;
  attachments: { resource_type: string; id: string; display?: string | null }[];
  at: string;
}

export interface OpinionIn {
  findings: string;
  diagnostic_opinion: string;
  treatment_advice: string;
  refer: boolean;
  refer_note?: string | null;
}

export interface OpinionOut {
  consult_id: number;
  opinion: Record<string, unknown>;
  signature: Record<string, unknown>;
  document_id: string | null;
  verified: boolean;
}

export type RxFrequency = "qd" | "bid" | "tid" | "qid" | "q8h" | "q12h" | "qn" | "qw" | "prn";

export interface RxItem {
  drug_code: string;
  drug_name: string;
  strength: string;
  dose: number;
  dose_unit: string;
  route: string;
  frequency: RxFrequency;
  days: number;
  quantity: number;
  unit: string;
}

export interface RxCreate {
  patient_id: number;
  diagnosis: { system: "ICD-10"; code: string; display: string };
  items: RxItem[];
  kind: "normal";
  validity_days: number;
  notes?: string | null;
  override_reason?: string | null;
  pharmacy_id?: number | null;
}

export interface RxFinding {
  code: string;
  severity: "minor" | "moderate" | "severe";
  message: string;
  drugs: string[];
}

export interface RxCheck {
  findings: RxFinding[];
  blocking: boolean;
}

export interface Prescription {
  id: number;
  version: number;
  status: string;
  patient_id: number;
  prescriber_id: number;
  findings: RxFinding[];
  valid_until: string;
  created_at: string;
}

/** GET /api/v1/patients: a patient of my institution. */
export interface MyPatient {
  id: number;
  name: string;
  sex: "male" | "female";
  birth_date: string;
  numbers: string[];
  since: string;
}

// --- earning a care relationship (presence code, the patient's approval) -----------------

/** POST /api/v1/me/presence-code: the 一号通 code the patient shows at the desk. */
export interface PresenceCode {
  code: string;
  /** The QR payload: `yihao-presence:<resident ID>:<code>`. */
  qr: string;
  expires_at: string;
}

export type CareReason =
  | "presence"
  | "patient_approved"
  | "appointment"
  | "referral"
  | "merged"
  | "demo"
  | "registered";

/** An institution that cares for the patient: why, since when, until when. */
export interface CareRelationship {
  institution: InstitutionRef;
  reason: CareReason;
  since: string;
  last_encounter_at: string;
  ends_at: string;
  /** Set on the desk's confirmation of a presence code. */
  patient_id: number | null;
}

export type CareRequestStatus = "pending" | "approved" | "declined" | "expired";

/** An institution's request to care for the patient, answered in the patient's app. */
export interface CareRequest {
  id: number;
  patient_id: number;
  institution: InstitutionRef;
  requested_by: string | null;
  note: string | null;
  status: CareRequestStatus;
  created_at: string;
  expires_at: string;
  decided_at: string | null;
}

/** POST /api/v1/patients (registration at the desk). */
export interface PatientRegister {
  resident_id: string;
  name: string;
  sex?: "male" | "female";
  birth_date?: string;
  phone?: string;
  mrn?: string;
  card_number?: string;
}

/** What the desk learns from registering: nothing it did not send itself. */
export interface PatientRegistered {
  id: number;
  resident_id: string;
  name: string;
  sex: "male" | "female";
  birth_date: string;
  links: { institution: InstitutionRef; kind: "mrn" | "card"; number: string }[];
  created: boolean;
  /** "none" until the patient shows a presence code or approves a request. */
  care: "active" | "none";
}
