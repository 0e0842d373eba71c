// A small i18n module of our own. vue-i18n's default build compiles messages with
// `new Function`, which the server's Content-Security-Policy (no 'unsafe-eval') forbids;
// its CSP-safe setup needs a precompiling build plugin. Two locales of flat, typed keys
// with `{name}` placeholders need neither.
import { ref } from "vue";
import { setClientMessages } from "../api/client";
import { en, zhCN, type MessageKey } from "./messages";

export type Locale = "zh-CN" | "en";

const STORAGE_KEY = "yihao.locale";
const catalogs: Record<Locale, Record<MessageKey, string>> = { "zh-CN": zhCN, en };

function initialLocale(): Locale {
  const saved = localStorage.getItem(STORAGE_KEY);
  return saved === "en" || saved === "zh-CN" ? saved : "zh-CN";
}

export const locale = ref<Locale>(initialLocale());
document.documentElement.lang = locale.value;

export function setLocale(value: Locale): void {
  locale.value = value;
  localStorage.setItem(STORAGE_KEY, value);
  document.documentElement.lang = value;
}

export function toggleLocale(): void {
  setLocale(locale.value === "zh-CN" ? "en" : "zh-CN");
}

export function t(key: MessageKey, params: Record<string, string | number> = {}): string {
  const text = catalogs[locale.value][key];
  return text.replace(/\{(\w+)\}/g, (whole, name: string) =>
    name in params ? String(params[name]) : whole,
  );
}

/** Whether a string is a known key (for keys built from server values such as roles). */
export function isKey(key: string): key is MessageKey {
  return key in zhCN;
}

/** The text of a server problem code (`problem.<code>` in a feature's messages), if any. */
export function problemText(code: string): string | undefined {
  const key = `problem.${code}`;
  return isKey(key) ? t(key) : undefined;
}

setClientMessages({
  network: () => t("common.network"),
  pending: () => t("common.pending"),
  problem: problemText,
});
