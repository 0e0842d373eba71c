import { shallowRef } from "vue";

/** A success message that follows the language switch (kept as a function of the locale). */
export function useNotice(): { readonly text: string; set(message: () => string): void; clear(): void } {
  const message = shallowRef<() => string>(() => "");
  return {
    get text() {
      return message.value();
    },
    set(next: () => string) {
      message.value = next;
    },
    clear() {
      message.value = () => "";
    },
  };
}
