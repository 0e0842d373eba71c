import { locale } from "../../i18n";

/** A record date (often a day without a time) in the user's language. */
export function formatDate(iso: string | null): string {
  if (!iso) return "";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  return new Intl.DateTimeFormat(locale.value, { dateStyle: "medium" }).format(date);
}
