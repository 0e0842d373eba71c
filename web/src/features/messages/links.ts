// Where a message leads: the page of the thing it is about, from the ids in its data.
import type { InboxItem } from "./api";

function id(data: Record<string, unknown>, key: string): string | null {
  const value = data[key];
  return typeof value === "number" || (typeof value === "string" && value !== "") ? String(value) : null;
}

/** The patient page of a message's subject, or null when it has none. */
export function subjectLink(item: Pick<InboxItem, "kind" | "data" | "resource">): string | null {
  const data = item.data ?? {};
  switch (item.kind) {
    case "appointment_reminder":
    case "booking_confirmed":
    case "booking_cancelled":
    case "appointment.cancelled":
      return "/patient/appointments";
    case "visit_ready":
    case "visit_reminder": {
      const visit = id(data, "visit_id");
      return visit ? `/patient/visits/${visit}` : "/patient/visits";
    }
    case "prescription_approved":
    case "prescription_ready":
    case "prescription_dispensed": {
      const rx = id(data, "prescription_id");
      return rx ? `/patient/prescriptions/${rx}` : "/patient/prescriptions";
    }
    case "result_ready":
    case "opinion_available":
      return "/patient/record";
    case "payment_paid":
    case "payment_refunded": {
      const order = id(data, "order_id");
      return order ? `/patient/orders/${order}` : "/patient/orders";
    }
    case "care.request":
      return "/patient/presence";
    default:
      return null;
  }
}
