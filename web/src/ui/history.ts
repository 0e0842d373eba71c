/** One step of a status history (consult, prescription, referral) as `StepList` shows it. */
export interface Step {
  at: string;
  status: string;
  note: string | null;
}
