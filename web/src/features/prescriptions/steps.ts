// Where a prescription stands, as the patient's step indicator shows it:
// signed → pharmacy chosen → approved → ready → dispensed.
import type { Prescription } from "../../api/types";

export const STEPS = ["signed", "chosen", "approved", "ready", "dispensed"] as const;
export type StepName = (typeof STEPS)[number];

const REACHED: Record<string, number> = {
  signed: 0,
  sent: 1,
  under_review: 1,
  rejected: 1,
  approved: 2,
  ready: 3,
  dispensed: 4,
};

/** The index of the last step reached; -1 for a prescription that ended (cancelled, expired). */
export function reached(rx: Prescription): number {
  return REACHED[rx.status] ?? -1;
}

/** Whether the patient may still choose or change the pharmacy (before the review starts). */
export function mayChoose(rx: Prescription): boolean {
  return rx.status === "signed" || rx.status === "sent";
}
