import { createApp } from "vue";
import App from "./App.vue";
import { registerServiceWorker, watchConnectivity } from "./features/patient/pwa";
import { onSessionEnd, restoreSession, tokenSource } from "./features/auth/session";
import "./i18n";
import { startRealtime, stopRealtime } from "./realtime/store";
import { router } from "./router";
import "./styles.css";
import "./ui/pages.css";
import "./features/patient/patient.css";

onSessionEnd(() => {
  stopRealtime();
  void router.push({ name: "login" });
});

async function boot(): Promise<void> {
  if (await restoreSession()) startRealtime(tokenSource);
  const app = createApp(App);
  app.use(router);
  await router.isReady();
  app.mount("#app");
}

watchConnectivity();
registerServiceWorker();
void boot();
