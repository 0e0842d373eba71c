// The calls of the triage (智能导诊): a suggestion for my complaint, and my past ones.
import { api } from "../../api/client";
import type { components } from "../../api/schema";

type S = components["schemas"];
export type TriageRequest = S["TriageRequest"];
export type TriageAnswer = S["TriageAnswer"];
export type TriageHistory = S["TriageHistory"];

/** Which department to book and how urgent, from the complaint in my own words. */
export function askTriage(body: TriageRequest): Promise<TriageAnswer> {
  return api.post("/triage", { body });
}

/** My own past suggestions, newest first. */
export function triageHistory(limit = 5): Promise<TriageHistory> {
  return api.get("/triage/history", { query: { limit } });
}
