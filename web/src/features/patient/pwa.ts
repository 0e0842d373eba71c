// The installable app: the service worker (web/public/sw.js) that keeps the shell for
// offline use, and whether the device is offline (the banner of OfflineBanner.vue).
// The worker never stores /api or /fhir answers: patient data stays on the server.
import { ref } from "vue";

export const offline = ref(typeof navigator !== "undefined" && navigator.onLine === false);

export function watchConnectivity(): void {
  window.addEventListener("offline", () => (offline.value = true));
  window.addEventListener("online", () => (offline.value = false));
  offline.value = navigator.onLine === false;
}

/** Register /sw.js (scope `/`) where the browser can; a failure leaves the app as it was. */
export function registerServiceWorker(): void {
  if (!("serviceWorker" in navigator) || !window.isSecureContext) return;
  // The worker is a network-first cache of the shell: no update prompt is needed.
  navigator.serviceWorker.register("/sw.js", { scope: "/" }).catch(() => undefined);
  // What this page loaded before the worker ran (the screens' chunks) is kept too.
  void navigator.serviceWorker.ready.then((registration) => {
    const loaded = performance
      .getEntriesByType("resource")
      .map((entry) => new URL(entry.name))
      .filter((url) => url.origin === location.origin && url.pathname.startsWith("/assets/"))
      .map((url) => url.pathname);
    registration.active?.postMessage({ type: "keep", urls: [...new Set(loaded)] });
  });
  navigator.serviceWorker.addEventListener("message", (event: MessageEvent) => {
    const data = event.data as { type?: string } | null;
    if (data?.type === "offline") offline.value = true;
  });
}
