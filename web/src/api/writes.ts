// Writes that may be sent again: the ids that make a repeat harmless, and when to repeat.
// A write that died with its node (the connection dropped, or nginx answered 502/503/504
// for it) may or may not have been done. Sent again with the same Idempotency-Key it is
// done at most once: the server answers a repeat with the first answer, or with 409
// `idempotency_in_progress` while that first answer is not there yet. This module holds
// no state and imports nothing, so its policy is tested on its own (tests/test_web_retry.py).

/** A fresh id for an Idempotency-Key or a chat message's client_id (8–64 of A-Za-z0-9_-). */
export function clientId(): string {
  // randomUUID exists only in secure contexts (HTTPS, localhost); a server reached over
  // plain HTTP on a LAN address still gets 128 random bits from getRandomValues.
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID().replace(/-/g, "");
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** How one try of a write ended, as far as retrying is concerned. */
export type Outcome =
  | { kind: "network" } // fetch rejected, not by an abort
  | { kind: "aborted" } // the session ended: never sent again
  | { kind: "answer"; status: number; code?: string; retryAfter?: string | null };

/** Waits before the 1st, 2nd, … repeat (ms); the last one repeats, within RETRY_BUDGET_MS. */
export const RETRY_DELAYS_MS: readonly number[] = [500, 1000, 2000, 4000];
/** The most waiting (ms) a write gets: 0.5 + 1 + 2 + 4 + 4 + 4 s, then the user is told. */
export const RETRY_BUDGET_MS = 16_000;
/** The longest wait a server's Retry-After may ask for between two tries (ms). */
export const RETRY_AFTER_CAP_MS = 8_000;

/** Answers of a proxy whose node is gone or a server that is not ready: try again. */
export const GATEWAY_STATUSES: ReadonlySet<number> = new Set([502, 503, 504]);

/** Whether this outcome means "the write may not have reached a live node": try again. */
export function retryable(outcome: Outcome): boolean {
  if (outcome.kind === "network") return true;
  if (outcome.kind === "aborted") return false;
  if (GATEWAY_STATUSES.has(outcome.status)) return true;
  return outcome.status === 409 && outcome.code === "idempotency_in_progress";
}

/** A Retry-After header (seconds, or an HTTP date) in ms from `now`; null if absent or bad. */
export function retryAfterMs(header: string | null | undefined, now: number): number | null {
  if (!header) return null;
  const trimmed = header.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000;
  const at = Date.parse(trimmed);
  return Number.isNaN(at) ? null : Math.max(0, at - now);
}

/**
 * How long to wait before repeating a write whose try number `attempt` (0: the first
 * send) ended in `outcome`, after `waitedMs` of waiting so far; null: give up now (the
 * outcome is final, or the budget is spent) and let the error reach the user.
 */
export function retryDelay(
  outcome: Outcome,
  attempt: number,
  waitedMs: number,
  now: number = Date.now(),
): number | null {
  if (!retryable(outcome)) return null;
  const backoff = RETRY_DELAYS_MS[Math.min(attempt, RETRY_DELAYS_MS.length - 1)];
  const asked = outcome.kind === "answer" ? retryAfterMs(outcome.retryAfter, now) : null;
  const delay = asked === null ? backoff : Math.max(backoff, Math.min(asked, RETRY_AFTER_CAP_MS));
  return waitedMs + delay > RETRY_BUDGET_MS ? null : delay;
}
