// Vite build of the Yihao browser client.
//
// The server sends a strict Content-Security-Policy (no inline scripts or styles), so the
// build must emit only files: CSS extracted to /assets/*.css, no inlined assets, no
// module-preload polyfill (it would be injected as code in index.html's entry).
import vue from "@vitejs/plugin-vue";
import { defineConfig } from "vite";

const API = process.env.YIHAO_API ?? "http://127.0.0.1:8080";

export default defineConfig({
  plugins: [vue()],
  build: {
    outDir: "dist",
    assetsDir: "assets",
    assetsInlineLimit: 0,
    cssCodeSplit: true,
    modulePreload: { polyfill: false },
    sourcemap: false,
    target: "es2022",
  },
  server: {
    host: "127.0.0.1",
    port: 5173,
    proxy: {
      "/api": { target: API, changeOrigin: false },
      "/fhir": { target: API, changeOrigin: false },
      "/healthz": { target: API, changeOrigin: false },
      "/socket.io": { target: API, ws: true, changeOrigin: false },
    },
  },
});
