// A pharmacy's weekly opening hours in words: 每天 08:00–22:00, 周一至周五 08:00–20:00 …
import { t } from "../../i18n";
import { label } from "../../ui/format";
import type { Pharmacy } from "./api";

type Span = Pharmacy["hours"][number];

function days(list: number[]): string {
  const sorted = [...list].sort((a, b) => a - b);
  if (sorted.length === 7) return t("prx.hours.everyDay");
  const consecutive = sorted.every((d, i) => i === 0 || d === (sorted[i - 1] ?? 0) + 1);
  const name = (d: number): string => label("prx.weekday", String(d));
  if (consecutive && sorted.length > 2) {
    return t("prx.hours.range", { from: name(sorted[0] ?? 1), to: name(sorted[sorted.length - 1] ?? 7) });
  }
  return sorted.map(name).join("、");
}

export function hoursText(span: Span): string {
  if (span.opens === "00:00" && span.closes === "24:00") {
    return span.days.length === 7 ? t("prx.hours.allDay") : `${days(span.days)} ${t("prx.hours.allDay")}`;
  }
  return `${days(span.days)} ${span.opens}–${span.closes}`;
}
