// Formatting of server values for display, in the user's language.
import { isKey, locale, t } from "../i18n";

/** A date and time (an ISO 8601 instant). */
export function formatTime(iso: string): string {
  return new Intl.DateTimeFormat(locale.value, {
    dateStyle: "short",
    timeStyle: "medium",
  }).format(new Date(iso));
}

/** A date (often a day without a time, as record entries carry); unparseable input as given. */
export function formatDate(iso: string | null | undefined): string {
  if (!iso) return "";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  return new Intl.DateTimeFormat(locale.value, { dateStyle: "medium" }).format(date);
}

/** Today in Asia/Shanghai (the schedules' zone), as YYYY-MM-DD. */
export function localDay(offsetDays = 0): string {
  const at = new Date(Date.now() + offsetDays * 86_400_000);
  return new Intl.DateTimeFormat("en-CA", { timeZone: "Asia/Shanghai" }).format(at);
}

/** A translated label for a server value (`prefix.value`), or the value itself. */
export function label(prefix: string, value: string | null | undefined): string {
  if (!value) return t("common.none");
  const key = `${prefix}.${value}`;
  return isKey(key) ? t(key) : value;
}
