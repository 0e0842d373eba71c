// The catalogues: every feature's texts (its messages.ts) merged, with the shared ones of
// ui/. zh-CN is the source of the keys; each feature's English must translate every one
// of its keys (a missing one is a build error).
import * as admin from "../features/admin/messages";
import * as auth from "../features/auth/messages";
import * as booking from "../features/booking/messages";
import * as care from "../features/care/messages";
import * as consent from "../features/consent/messages";
import * as consults from "../features/consults/messages";
import * as home from "../features/home/messages";
import * as inbox from "../features/inbox/messages";
import * as messages from "../features/messages/messages";
import * as payments from "../features/payments/messages";
import * as patient from "../features/patient/messages";
import * as pharmacy from "../features/pharmacy/messages";
import * as prescriptions from "../features/prescriptions/messages";
import * as records from "../features/records/messages";
import * as referrals from "../features/referrals/messages";
import * as scheduling from "../features/scheduling/messages";
import * as triage from "../features/triage/messages";
import * as visits from "../features/visits/messages";
import * as ui from "../ui/messages";

export const zhCN = {
  ...ui.zhCN,
  ...auth.zhCN,
  ...home.zhCN,
  ...admin.zhCN,
  ...inbox.zhCN,
  ...messages.zhCN,
  ...records.zhCN,
  ...consults.zhCN,
  ...care.zhCN,
  ...consent.zhCN,
  ...patient.zhCN,
  ...pharmacy.zhCN,
  ...referrals.zhCN,
  ...scheduling.zhCN,
  ...prescriptions.zhCN,
  ...triage.zhCN,
  ...booking.zhCN,
  ...payments.zhCN,
  ...visits.zhCN,
};

export type MessageKey = keyof typeof zhCN;

export const en: Record<MessageKey, string> = {
  ...ui.en,
  ...auth.en,
  ...home.en,
  ...admin.en,
  ...inbox.en,
  ...messages.en,
  ...records.en,
  ...consults.en,
  ...care.en,
  ...consent.en,
  ...patient.en,
  ...pharmacy.en,
  ...referrals.en,
  ...scheduling.en,
  ...prescriptions.en,
  ...triage.en,
  ...booking.en,
  ...payments.en,
  ...visits.en,
};
