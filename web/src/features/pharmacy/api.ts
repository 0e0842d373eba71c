// The calls of the pharmacy: its queue, each delivery's receipt, review, ready for pickup
// and dispensing.
import { api, type QueryOf } from "../../api/client";
import type { components } from "../../api/schema";
import type { Prescription } from "../../api/types";

type S = components["schemas"];
// A prescription's content and dispensation are free-form in OpenAPI; types.ts names them.
const refined = (answer: S["PrescriptionOut"]): Prescription => answer as Prescription;

export async function pharmacyQueue(query: QueryOf<"/pharmacy/prescriptions">): Promise<Prescription[]> {
  return (await api.get("/pharmacy/prescriptions", { query })).items.map(refined);
}

/** The pharmacy got this version (repeating it is harmless). */
export async function acknowledgePrescription(id: number, version: number): Promise<void> {
  await api.post("/prescriptions/{prescription_id}/receipt", {
    path: { prescription_id: id },
    body: { prescription_id: id, version },
  });
}

export async function reviewPrescription(id: number, body: S["ReviewRequest"]): Promise<Prescription> {
  const path = { prescription_id: id };
  return refined(await api.post("/prescriptions/{prescription_id}/review", { path, body }));
}

export async function dispensePrescription(id: number, body: S["DispenseRequest"]): Promise<Prescription> {
  const path = { prescription_id: id };
  return refined(await api.post("/prescriptions/{prescription_id}/dispense", { path, body }));
}

/** Ready for pickup (备药完成): after approval, by the chosen pharmacy. */
export async function readyPrescription(id: number, body: S["ReadyRequest"]): Promise<Prescription> {
  const path = { prescription_id: id };
  return refined(await api.post("/prescriptions/{prescription_id}/ready", { path, body }));
}
