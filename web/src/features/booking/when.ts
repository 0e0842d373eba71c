// Times of booking in the schedules' zone (Asia/Shanghai), in the user's language.
import { locale } from "../../i18n";

const ZONE = "Asia/Shanghai";

/** "12月5日 周六" / "Sat, Dec 5". */
export function slotDay(iso: string): string {
  return new Intl.DateTimeFormat(locale.value, {
    timeZone: ZONE,
    month: "short",
    day: "numeric",
    weekday: "short",
  }).format(new Date(iso));
}

/** "08:30". */
export function slotTime(iso: string): string {
  return new Intl.DateTimeFormat("en-GB", {
    timeZone: ZONE,
    hour: "2-digit",
    minute: "2-digit",
  }).format(new Date(iso));
}

/** "12月5日 周六 08:30". */
export function slotWhen(iso: string): string {
  return `${slotDay(iso)} ${slotTime(iso)}`;
}

/** A place's parts joined: "门诊楼 3层 301诊室". */
export function placeText(place: { building?: string | null; floor?: string | null; room?: string | null } | null | undefined): string {
  if (!place) return "";
  return [place.building, place.floor, place.room].filter(Boolean).join(" ");
}
