// The calls of booking (预约挂号): the network's directory, booking and cancelling, and the
// institution administrator's department profiles and booking policy.
import { api, type QueryOf } from "../../api/client";
import type { components } from "../../api/schema";

type S = components["schemas"];
export type Directory = S["DirectoryOut"];
export type DirectoryInstitution = S["InstitutionEntry"];
export type DirectoryDepartment = S["DepartmentEntry"];
export type DirectoryDoctor = S["DoctorEntry"];
export type FreeSlot = S["FreeSlot"];
export type Specialty = S["SpecialtyOut"];
export type BookedAppointment = S["AppointmentOut"];
export type Policy = S["PolicyOut"];
export type DepartmentProfileIn = S["DepartmentProfileIn"];
export type DepartmentProfile = S["DepartmentProfileOut"];
export type DirectoryQuery = QueryOf<"/booking/directory">;

export async function listSpecialties(): Promise<Specialty[]> {
  return (await api.get("/booking/specialties")).items;
}

export function getDirectory(query: DirectoryQuery): Promise<Directory> {
  return api.get("/booking/directory", { query });
}

export function book(slotId: number): Promise<BookedAppointment> {
  return api.post("/appointments", { body: { slot_id: slotId } });
}

export async function myAppointments(): Promise<BookedAppointment[]> {
  return (await api.get("/appointments")).items;
}

export function cancelAppointment(id: number): Promise<BookedAppointment> {
  return api.post("/appointments/{appointment_id}/cancel", {
    path: { appointment_id: id },
    body: {},
  });
}

export function getPolicy(): Promise<Policy> {
  return api.get("/booking/policy");
}

export function setPolicy(body: S["PolicyIn"]): Promise<Policy> {
  return api.put("/booking/policy", { body });
}

export function setDepartmentProfile(
  departmentId: number,
  body: DepartmentProfileIn,
): Promise<DepartmentProfile> {
  return api.put("/booking/departments/{department_id}", {
    path: { department_id: departmentId },
    body,
  });
}
