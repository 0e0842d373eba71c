// Client-side checks mirroring the server's constrained types (server/core/types.py),
// for convenience only: the server decides, and its field errors are shown the same way.
import { t } from "../i18n";

export const USERNAME = /^[a-z][a-z0-9_.-]{2,31}$/;
export const INSTITUTION_CODE = /^[A-Z0-9][A-Z0-9_-]{1,31}$/;
export const ORG_NAME = /^[\p{L}\p{N}_ ·()（）-]+$/u;
export const PERSON_NAME = /^\p{L}+(?:[ ·'.-]\p{L}+)*\.?$/u;
export const REGION = /^\d{6}$/;
export const PASSWORD_MIN = 8;

const CONTROL = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/;

/** The server's PlainText rule and a length limit; "" when the text is acceptable. */
export function checkText(value: string, max: number): string {
  if (CONTROL.test(value)) return t("validate.plainText");
  if (value.length > max) return t("validate.maxLength", { n: max });
  return "";
}

export function checkInt(value: number | string, min: number, max: number): string {
  const n = Number(value);
  return Number.isInteger(n) && n >= min && n <= max ? "" : t("validate.range", { min, max });
}
