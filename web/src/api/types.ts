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
