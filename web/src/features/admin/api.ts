// The calls of administering institutions, their departments and accounts.
import { api } from "../../api/client";
import type { components } from "../../api/schema";
import type { Institution, User, UserCreate } from "../../api/types";

type S = components["schemas"];

export async function listInstitutions(): Promise<Institution[]> {
  return (await api.get("/institutions")).items;
}

export function getInstitution(id: number): Promise<Institution> {
  return api.get("/institutions/{institution_id}", { path: { institution_id: id } });
}

export function createInstitution(body: S["InstitutionCreate"]): Promise<Institution> {
  return api.post("/institutions", { body });
}

/** Add a department; answers with the institution. */
export function createDepartment(institutionId: number, name: string): Promise<Institution> {
  return api.post("/institutions/{institution_id}/departments", {
    path: { institution_id: institutionId },
    body: { name },
  });
}

/** The accounts of one institution (by its code). */
export async function listUsers(institutionCode: string): Promise<User[]> {
  return (await api.get("/users", { query: { institution: institutionCode } })).items;
}

export function getUser(id: number): Promise<User> {
  return api.get("/users/{user_id}", { path: { user_id: id } });
}

export function createUser(body: UserCreate): Promise<User> {
  return api.post("/users", { body });
}
