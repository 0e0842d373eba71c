// Form error state: the server's human message for the whole form, and its field errors
// (`errors[].field`) next to the inputs they name. Client-side checks fill the same slots.
import { reactive } from "vue";
import { ApiError } from "../api/client";

export interface FormErrors<F extends string> {
  message: string;
  fields: Record<F, string>;
  clear(): void;
  /** Show a failure; returns true when it was a server refusal with a message. */
  show(error: unknown): void;
  hasFieldErrors(): boolean;
}

export function useFormErrors<F extends string>(names: readonly F[]): FormErrors<F> {
  const empty = () => Object.fromEntries(names.map((n) => [n, ""])) as Record<F, string>;
  const state: FormErrors<F> = reactive({
    message: "",
    fields: empty(),
    clear() {
      state.message = "";
      Object.assign(state.fields, empty());
    },
    show(error: unknown) {
      if (error instanceof ApiError) {
        state.message = error.detail;
        for (const name of names) state.fields[name] = error.fieldError(name) ?? "";
      } else {
        state.message = error instanceof Error ? error.message : String(error);
      }
    },
    hasFieldErrors() {
      return names.some((n) => state.fields[n] !== "");
    },
  }) as FormErrors<F>;
  return state;
}
