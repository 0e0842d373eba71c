// The calls of an institution's schedule: weekly templates, generated slots, closed days.
import { api, type QueryOf } from "../../api/client";
import type { components } from "../../api/schema";
import type { Holiday, ScheduleTemplate, Slot } from "../../api/types";

type S = components["schemas"];
export type SlotQuery = QueryOf<"/slots">;

export async function listTemplates(): Promise<ScheduleTemplate[]> {
  return (await api.get("/schedules/templates")).items;
}

export function createTemplate(body: S["TemplateCreate"]): Promise<ScheduleTemplate> {
  return api.post("/schedules/templates", { body });
}

export function generateSlots(body: S["GenerateSlots"]): Promise<S["GenerateResult"]> {
  return api.post("/schedules/generate", { body });
}

/** Closed days from `from` (YYYY-MM-DD) on. */
export async function listHolidays(from: string): Promise<Holiday[]> {
  return (await api.get("/schedules/holidays", { query: { from } })).items;
}

/** Close a day; answers with the slots it cancelled. */
export function createHoliday(body: S["HolidayCreate"]): Promise<S["HolidayOut"]> {
  return api.post("/schedules/holidays", { body });
}

export async function listSlots(query: SlotQuery): Promise<Slot[]> {
  return (await api.get("/slots", { query })).items;
}
