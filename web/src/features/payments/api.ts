// The calls of payments (结算支付): my orders, paying through the provider, refunds.
import { api } from "../../api/client";
import type { components } from "../../api/schema";

type S = components["schemas"];
export type Order = S["OrderOut"];
export type OrderKind = S["OrderCreate"]["kind"];
export type SandboxPaid = S["SandboxPaid"];

export async function listOrders(): Promise<Order[]> {
  return (await api.get("/orders")).items;
}

export function getOrder(id: number): Promise<Order> {
  return api.get("/orders/{order_id}", { path: { order_id: id } });
}

/** My order for one of my appointments (visits, prescriptions …); the same one if it exists. */
export function createOrder(kind: OrderKind, subjectId: number): Promise<Order> {
  return api.post("/orders", { body: { kind, subject_id: subjectId, provider: "sandbox" } });
}

/** The sandbox's payer: it charges, then notifies the server asynchronously. */
export function sandboxPay(tradeNo: string): Promise<SandboxPaid> {
  return api.post("/payments/sandbox/{trade_no}/pay", { path: { trade_no: tradeNo } });
}

export function refundOrder(id: number, reason?: string): Promise<Order> {
  return api.post("/orders/{order_id}/refund", {
    path: { order_id: id },
    body: reason ? { reason } : {},
  });
}

/** Integer fen as yuan with two decimals: 3000 → "30.00" (never through a float). */
export function yuan(fen: number): string {
  const sign = fen < 0 ? "-" : "";
  const abs = Math.abs(fen);
  return `${sign}${Math.floor(abs / 100)}.${String(abs % 100).padStart(2, "0")}`;
}

/** When a visit is: the day and the minute (seconds say nothing about an appointment). */
export function formatWhen(iso: string, lang: string): string {
  return new Intl.DateTimeFormat(lang, { dateStyle: "medium", timeStyle: "short" }).format(new Date(iso));
}
