// Helpers of the pharmacy, patient, referral and schedule screens: the network's
// institutions by id (names for ids in answers), status labels, plain-text checks.
import { reactive, shallowRef } from "vue";
import { api } from "../api/client";
import type { Institution, Items } from "../api/types";
import { isKey, t } from "../i18n";

const directory = reactive({ byId: new Map<number, Institution>(), loaded: false });
let loading: Promise<void> | null = null;

/** Load the institutions once per tab (they change rarely; a reload refreshes them). */
export function loadInstitutions(force = false): Promise<void> {
  if (loading && !force) return loading;
  loading = api
    .get<Items<Institution>>("/api/v1/institutions")
    .then((answer) => {
      directory.byId = new Map(answer.items.map((i) => [i.id, i]));
      directory.loaded = true;
    })
    .catch((error: unknown) => {
      loading = null;
      throw error;
    });
  return loading;
}

export function institutionName(id: number | null | undefined): string {
  if (id === null || id === undefined) return t("common.none");
  return directory.byId.get(id)?.name ?? `#${id}`;
}

export function departmentName(institutionId: number, departmentId: number | null): string {
  if (departmentId === null) return "";
  const found = directory.byId.get(institutionId)?.departments.find((d) => d.id === departmentId);
  return found?.name ?? `#${departmentId}`;
}

export function institutions(): Institution[] {
  return [...directory.byId.values()];
}

/** A translated label for a server value (`prefix.value`), or the value itself. */
export function label(prefix: string, value: string | null | undefined): string {
  if (!value) return t("common.none");
  const key = `${prefix}.${value}`;
  return isKey(key) ? t(key) : value;
}

const CONTROL = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/;

/** The server's PlainText rule and a length limit; "" when the text is acceptable. */
export function checkText(value: string, max: number): string {
  if (CONTROL.test(value)) return t("validate.plainText");
  if (value.length > max) return t("validate.maxLength", { n: max });
  return "";
}

export function checkInt(value: number | string, min: number, max: number): string {
  const n = Number(value);
  return Number.isInteger(n) && n >= min && n <= max ? "" : t("validate.range", { min, max });
}

export function formatDate(iso: string | null | undefined, locale: string): string {
  if (!iso) return "";
  return new Intl.DateTimeFormat(locale, { dateStyle: "medium" }).format(new Date(iso));
}

/** Today in Asia/Shanghai (the schedules' zone), as YYYY-MM-DD. */
export function localDay(offsetDays = 0): string {
  const at = new Date(Date.now() + offsetDays * 86_400_000);
  return new Intl.DateTimeFormat("en-CA", { timeZone: "Asia/Shanghai" }).format(at);
}

/** A success message that follows the language switch (kept as a function of the locale). */
export function useNotice(): { readonly text: string; set(message: () => string): void; clear(): void } {
  const message = shallowRef<() => string>(() => "");
  return {
    get text() {
      return message.value();
    },
    set(next: () => string) {
      message.value = next;
    },
    clear() {
      message.value = () => "";
    },
  };
}

/** One step of a status history as the patient's screens show it. */
export interface Step {
  at: string;
  status: string;
  note: string | null;
}
