// The network's institutions by id: names for the ids in answers, the pharmacies and
// hospitals forms offer. Read once per tab (they change rarely; a reload refreshes them).
import { reactive } from "vue";
import { api } from "../api/client";
import type { Institution } from "../api/types";
import { t } from "../i18n";

const directory = reactive({ byId: new Map<number, Institution>(), loaded: false });
let loading: Promise<Institution[]> | null = null;

export function loadInstitutions(force = false): Promise<Institution[]> {
  if (loading && !force) return loading;
  loading = api
    .get("/institutions")
    .then((answer) => {
      directory.byId = new Map(answer.items.map((i) => [i.id, i]));
      directory.loaded = true;
      return answer.items;
    })
    .catch((error: unknown) => {
      loading = null;
      throw error;
    });
  return loading;
}

export function institutionName(id: number | null | undefined): string {
  if (id === null || id === undefined) return t("common.none");
  return directory.byId.get(id)?.name ?? `#${id}`;
}

export function departmentName(institutionId: number, departmentId: number | null): string {
  if (departmentId === null) return "";
  const found = directory.byId.get(institutionId)?.departments.find((d) => d.id === departmentId);
  return found?.name ?? `#${departmentId}`;
}

export function institutions(): Institution[] {
  return [...directory.byId.values()];
}
