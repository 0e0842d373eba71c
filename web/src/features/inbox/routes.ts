import type { RouteRecordRaw } from "vue-router";

export const routes: RouteRecordRaw[] = [{ path: "/inbox", component: () => import("./InboxView.vue") }];
