// 一号通 service worker: keeps the app shell (index.html, the hashed /assets/ files, the
// manifest and icons) so the app opens without a network, and tells the page when what it
// shows came from the cache. It NEVER stores or answers /api, /fhir or /socket.io: those
// answers hold patient data, and they stay on the server (the browser's own HTTP cache is
// kept out by the server's `Cache-Control: no-store` on them).
"use strict";

const VERSION = "yihao-shell-v1";
const SHELL = ["/", "/manifest.webmanifest", "/icons/icon-192.png", "/icons/icon-512.png"];
const PRIVATE = /^\/(api|fhir|socket\.io)(\/|$)/;

/** The shell, and the files index.html names (its script and stylesheet). */
async function precache() {
  const cache = await caches.open(VERSION);
  await cache.addAll(SHELL);
  const index = await cache.match("/");
  if (!index) return;
  const html = await index.text();
  const assets = [...html.matchAll(/(?:src|href)="(\/assets\/[^"]+)"/g)].map((m) => m[1]);
  await cache.addAll([...new Set(assets)]);
}

self.addEventListener("install", (event) => {
  event.waitUntil(precache().then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((keys) => Promise.all(keys.filter((k) => k !== VERSION).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

async function tellOffline(clientId) {
  const client = clientId ? await self.clients.get(clientId) : null;
  if (client) client.postMessage({ type: "offline" });
}

/** Navigations: the network first (a fresh index.html, kept for later), the kept one offline. */
async function navigate(event) {
  const cache = await caches.open(VERSION);
  try {
    const response = await fetch(event.request);
    if (response.ok) await cache.put("/", response.clone());
    return response;
  } catch (error) {
    const kept = await cache.match("/");
    if (!kept) throw error;
    // The page is not there yet to be told: it reads navigator.onLine when it starts.
    event.waitUntil(tellOffline(event.resultingClientId || event.clientId));
    return kept;
  }
}

/** Hashed assets never change: the cache first, else the network (and keep it). */
async function asset(event) {
  const cache = await caches.open(VERSION);
  const kept = await cache.match(event.request);
  if (kept) return kept;
  const response = await fetch(event.request);
  if (response.ok) await cache.put(event.request, response.clone());
  return response;
}

/** The manifest and icons: the network, the kept copy offline. */
async function publicFile(event) {
  const cache = await caches.open(VERSION);
  try {
    const response = await fetch(event.request);
    if (response.ok) await cache.put(event.request, response.clone());
    return response;
  } catch (error) {
    const kept = await cache.match(event.request);
    if (kept) return kept;
    throw error;
  }
}

self.addEventListener("fetch", (event) => {
  const request = event.request;
  if (request.method !== "GET") return;
  const url = new URL(request.url);
  if (url.origin !== self.location.origin || PRIVATE.test(url.pathname)) return; // never cached
  if (request.mode === "navigate") {
    event.respondWith(navigate(event));
  } else if (url.pathname.startsWith("/assets/")) {
    event.respondWith(asset(event));
  } else if (url.pathname === "/manifest.webmanifest" || url.pathname.startsWith("/icons/")) {
    event.respondWith(publicFile(event));
  }
});

// The page names the assets it loaded before this worker controlled it: keep them too.
self.addEventListener("message", (event) => {
  const data = event.data || {};
  if (data.type !== "keep" || !Array.isArray(data.urls)) return;
  const urls = data.urls.filter((u) => typeof u === "string" && u.startsWith("/assets/"));
  event.waitUntil(caches.open(VERSION).then((cache) => cache.addAll(urls)).catch(() => undefined));
});
