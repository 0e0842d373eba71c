// The patient's prescriptions and the choice of pharmacy: their list, one prescription,
// the network's pharmacies (nearest district first) and routing to the one chosen.
import { api, type QueryOf } from "../../api/client";
import type { components } from "../../api/schema";
import type { Prescription } from "../../api/types";

type S = components["schemas"];
export type Pharmacy = S["PharmacyOut"];
export type PharmacyList = S["PharmacyList"];
export type District = NonNullable<QueryOf<"/pharmacies">["district"]>;

export const DISTRICTS: District[] = ["市南区", "市北区", "崂山区", "李沧区", "城阳区", "黄岛区"];

export async function myPrescriptions(): Promise<Prescription[]> {
  return (await api.get("/prescriptions", { query: { limit: 100 } })).items as Prescription[];
}

export async function myPrescription(id: number): Promise<Prescription> {
  return (await api.get("/prescriptions/{prescription_id}", { path: { prescription_id: id } })) as Prescription;
}

export async function pharmacies(district: District | null, openNow: boolean): Promise<PharmacyList> {
  const query: QueryOf<"/pharmacies"> = {};
  if (district) query.district = district;
  if (openNow) query.open_now = true;
  return await api.get("/pharmacies", { query });
}

export async function choosePharmacy(id: number, pharmacyId: number): Promise<Prescription> {
  const path = { prescription_id: id };
  return (await api.post("/prescriptions/{prescription_id}/route", {
    path,
    body: { pharmacy_id: pharmacyId },
  })) as Prescription;
}
