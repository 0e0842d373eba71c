// The server's models under the names the screens use: aliases of the types generated
// from /api/openapi.json (schema.d.ts, `npm run api:types`), so a change on the server
// shows up here as a type error. Hand-kept only what OpenAPI does not describe:
// Socket.IO payloads (docs/realtime.md) and the inside of fields the server declares as
// free-form objects (a signed prescription's content, a consult's record snapshot).
import type { components } from "./schema";

type S = components["schemas"];

// --- identity -----------------------------------------------------------------------------

export type User = S["UserOut"];
export type Role = User["role"];
export type UserCreate = S["UserCreate"];
export type TokenResponse = S["TokenResponse"];
export type InstitutionRef = S["InstitutionRef"];
export type InstitutionKind = InstitutionRef["kind"];
export type Institution = S["InstitutionOut"];
export type Department = S["DepartmentOut"];
export type SourceInstitution = S["SourceInstitution"];
export type Patient = S["PatientOut"];
export type MyPatient = S["MyPatient"];
export type PatientRegister = S["PatientRegister"];
export type PatientRegistered = S["PatientRegistered"];

export const ROLES: readonly Role[] = [
  "specialist",
  "gp",
  "pharmacist",
  "nurse",
  "institution_admin",
  "platform_admin",
  "patient",
];

/** RFC 9457 problem details, as every /api error is answered (any member may be missing
 * when a proxy answers instead of the server). */
export type Problem = Partial<S["Problem"]>;
export type FieldError = NonNullable<Problem["errors"]>[number];

// --- care relationships, consent, the access log ------------------------------------------

export type PresenceCode = S["PresenceCodeOut"];
export type CareRelationship = S["CareRelationshipOut"];
export type CareReason = CareRelationship["reason"];
export type CareRequest = S["CareRequestOut"];
export type CareRequestStatus = CareRequest["status"];
export type Consent = S["ConsentOut"];
export type SensitiveCategory = NonNullable<S["ConsentSet"]["excluded_categories"]>[number];
export const SENSITIVE: readonly SensitiveCategory[] = [
  "mental_health",
  "reproductive_health",
  "hiv",
  "substance_use",
  "genetic",
];
export type AccessEntry = S["AccessLogEntry"];
export type AccessLogPage = S["AccessLog"];

// --- the shared record --------------------------------------------------------------------

export type RecordRef = S["RecordRef"];
export type RecordItem = S["RecordItem"];
export type LabResult = S["LabResult"];
export type ClinicalSummary = S["ClinicalSummary"];
export type Timeline = S["Timeline"];

// --- follow-up video visits ----------------------------------------------------------------

export type Visit = S["VisitOut"];
export type VisitStatus = Visit["status"];
export type VisitCreate = S["VisitCreate"];
export type VisitRecord = S["VisitRecord"];
export type VisitDoctor = S["VisitDoctor"];
export type FollowUpCondition = S["FollowUpCondition"];

/** GET /consults/{id}/record: the frozen snapshot and the live summary (free-form in OpenAPI). */
export interface ConsultRecord {
  snapshot: { taken_at?: string; summary?: ClinicalSummary; items?: Record<string, unknown>[] };
  live: ClinicalSummary;
}

// --- consults -----------------------------------------------------------------------------

export type Consult = S["ConsultOut"];
export type ConsultStatus = Consult["status"];
export type Urgency = S["ConsultCreate"]["urgency"];
export type ConsultCreate = S["ConsultCreate"];
export type ConsultParticipant = S["Participant"];
export type ConsultTransition = S["HistoryEntry"];
export type InformedConsent = S["InformedConsent"];
export type OpinionIn = S["OpinionIn"];
export type OpinionOut = S["OpinionOut"];

// --- prescriptions ------------------------------------------------------------------------

export type RxItem = S["Item"];
export type RxFrequency = RxItem["frequency"];
export type RxCreate = S["PrescriptionCreate"];
export type RxFinding = S["Finding"];
export type Finding = RxFinding;
export type RxCheck = S["CheckResult"];
export type RxStatus = S["PrescriptionOut"]["status"];
export type RxPatientView = S["PatientView"];
export type RxPrescriberView = S["PrescriberView"];
export type RxHistoryEntry = S["HistoryEntry"];

/** What the doctor signed (canonical JSON; an object without a schema in OpenAPI). A type
 * rather than an interface, so the generated free-form object converts to it. */
export type RxContent = {
  prescription_id: number;
  version: number;
  patient: { id: number; name: string; resident_id: string };
  prescriber: { user_id: number; institution_id: number };
  issued_at: string;
  valid_until: string;
  diagnosis: S["Diagnosis"];
  items: RxItem[];
  kind: string;
  notes: string | null;
  override_reason: string | null;
};

/** What the pharmacy handed out (free-form in OpenAPI). */
export type Dispensation = {
  items: S["DispensedItem"][];
  note: string | null;
  at: string;
};

export type Prescription = Omit<S["PrescriptionOut"], "content" | "dispensation"> & {
  content: RxContent;
  dispensation: Dispensation | null;
};

// --- referrals and scheduling -------------------------------------------------------------

export type ReferralStatus = S["ReferralOut"]["status"];
export type ReferralHistory = S["HistoryEntry"];
export type FollowUpTask = S["FollowUpTask"];
export type Referral = Omit<S["ReferralOut"], "follow_up"> & { follow_up: FollowUpTask[] };
export type ScheduleTemplate = S["TemplateOut"];
export type Slot = S["SlotOut"];
export type Holiday = S["HolidayItem"];
export type Appointment = S["AppointmentOut"];

// --- Socket.IO payloads (docs/realtime.md; not part of OpenAPI) ----------------------------

/** A committed stream event pushed over Socket.IO or replayed by `sync`. */
export interface Envelope {
  stream: string;
  seq: number;
  type: string;
  op: string;
  data: Record<string, unknown>;
  at: string;
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

/** A consult chat message (`consult.chat` events and `chat.send` acks). */
export interface ChatMessage {
  consult_id: number;
  message_id: number;
  client_id: string;
  sender_id: number;
  text: string;
  attachments: { resource_type: string; id: string; display?: string | null }[];
  at: string;
}
