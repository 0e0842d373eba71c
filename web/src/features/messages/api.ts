// The calls of the patient's messages (the inbox) and of their notification choices.
import { api, type QueryOf } from "../../api/client";
import type { components } from "../../api/schema";

type S = components["schemas"];
export type InboxItem = S["InboxItemOut"];
export type InboxPage = S["InboxList"];
export type Preferences = S["PreferencesOut"];
export type PreferenceChange = S["PreferenceChange"];

/** One page of my messages, newest first; `before` continues from `next_before`. */
export function listMessages(query: QueryOf<"/inbox">): Promise<InboxPage> {
  return api.get("/inbox", { query });
}

export async function markRead(ids: number[]): Promise<number[]> {
  return (await api.post("/inbox/read", { body: { ids } })).ids;
}

export function getPreferences(): Promise<Preferences> {
  return api.get("/me/notification-preferences");
}

export function setPreferences(preferences: PreferenceChange[]): Promise<Preferences> {
  return api.put("/me/notification-preferences", { body: { preferences } });
}
