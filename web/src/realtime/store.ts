// The realtime store: one Socket.IO connection per tab, invisible reconnection, and
// catch-up by sequence number.
//
// Every server push is a committed stream event {stream, seq, …}. The store keeps the
// highest seq applied per stream and applies an event only when it is the next one:
// seq ≤ last is a duplicate (a replay racing a live push) and is dropped; a gap means
// pushes were missed, so the store asks `sync` for everything after its positions and
// applies the answer in order. On every (re)connect it syncs the same way, and when the
// server's `heads` names a stream further on than the store holds (a push that never
// arrived, e.g. while Redis was away: docs/realtime.md, "No silent lag").
import { io, type Socket } from "socket.io-client";
import { reactive } from "vue";
import type { Envelope, Problem } from "../api/types";

export type RealtimeStatus = "idle" | "connecting" | "syncing" | "live" | "reconnecting";

interface SyncAck {
  ok: boolean;
  data?: { events: Envelope[]; more: boolean; heads: Record<string, number> };
  problem?: Problem;
}

export interface Credentials {
  accessToken(): string | null;
  refresh(): Promise<boolean>;
}

type Listener = (event: Envelope) => void;

const KEEP_EVENTS = 300;
const SYNC_TIMEOUT_MS = 10_000;
const MAX_SYNC_ROUNDS = 50;

export const realtime = reactive({
  status: "idle" as RealtimeStatus,
  /** Applied events, newest first (the inbox reads these). */
  events: [] as Envelope[],
});

const seen = new Map<string, number>();
const listeners = new Set<Listener>();
let socket: Socket | null = null;
let credentials: Credentials | null = null;
let catchingUp = false;
let catchUpAgain = false;
let refusals = 0;

export function onStreamEvent(listener: Listener): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

/**
 * Call `reload` when events of a stream arrive, at most once per burst (a catch-up
 * replays many events at once; the screen needs one fresh read, not one per event).
 */
export function refreshOnStream(stream: () => string, reload: () => Promise<void>): () => void {
  let timer: ReturnType<typeof setTimeout> | undefined;
  let running = false;
  let again = false;
  const run = async (): Promise<void> => {
    timer = undefined;
    if (running) {
      again = true;
      return;
    }
    running = true;
    try {
      await reload();
    } finally {
      running = false;
      if (again) {
        again = false;
        void run();
      }
    }
  };
  const stop = onStreamEvent((event) => {
    if (event.stream === stream() && timer === undefined) timer = setTimeout(() => void run(), 50);
  });
  return () => {
    clearTimeout(timer);
    stop();
  };
}

function apply(event: Envelope): void {
  seen.set(event.stream, event.seq);
  realtime.events.unshift(event);
  if (realtime.events.length > KEEP_EVENTS) realtime.events.length = KEEP_EVENTS;
  for (const listener of listeners) {
    try {
      listener(event);
    } catch (error) {
      console.warn("stream listener failed", error);
    }
  }
}

function receive(event: Envelope): void {
  const last = seen.get(event.stream);
  if (last !== undefined && event.seq <= last) return; // already applied
  if (last !== undefined && event.seq === last + 1) {
    apply(event);
    return;
  }
  void catchUp(); // a gap, or a stream not synced yet: the replay brings it in order
}

/** The server's `heads`: catch up when a stream this tab keeps is further on than we are. */
function receiveHeads(message: { heads?: Record<string, number> }): void {
  for (const [stream, head] of Object.entries(message.heads ?? {})) {
    if (head > (seen.get(stream) ?? 0)) {
      void catchUp();
      return;
    }
  }
}

async function catchUp(): Promise<void> {
  const current = socket;
  if (!current?.connected) return;
  if (catchingUp) {
    catchUpAgain = true;
    return;
  }
  catchingUp = true;
  try {
    let positions: Record<string, number> = Object.fromEntries(seen);
    for (let round = 0; round < MAX_SYNC_ROUNDS; round++) {
      const ack = (await current
        .timeout(SYNC_TIMEOUT_MS)
        .emitWithAck("sync", { positions })) as SyncAck;
      if (!ack.ok || !ack.data) {
        if (ack.problem?.code === "not_a_member" && Object.keys(positions).length) {
          // The server placed this socket in other rooms than before: learn them anew.
          positions = {};
          continue;
        }
        throw new Error(ack.problem?.detail ?? "sync refused");
      }
      for (const event of ack.data.events) {
        if (event.seq > (seen.get(event.stream) ?? 0)) apply(event);
      }
      const next: Record<string, number> = {};
      for (const [stream, head] of Object.entries(ack.data.heads)) {
        const last = seen.get(stream) ?? 0;
        if (!seen.has(stream)) seen.set(stream, 0);
        if (head > last) next[stream] = last;
      }
      if (Object.keys(next).length === 0) break;
      positions = next;
    }
    if (current.connected) realtime.status = "live";
  } catch {
    // A timed-out or refused sync is retried while the connection lasts.
    setTimeout(() => void catchUp(), 2_000);
  } finally {
    catchingUp = false;
    if (catchUpAgain) {
      catchUpAgain = false;
      void catchUp();
    }
  }
}

/** Open the tab's connection (idempotent). */
export function startRealtime(creds: Credentials): void {
  credentials = creds;
  if (socket) return;
  realtime.status = "connecting";
  const created = io({
    path: "/socket.io/",
    transports: ["websocket"],
    // A function, so every reconnection presents the current (refreshed) token.
    auth: (send) => send({ token: credentials?.accessToken() ?? "" }),
    reconnectionDelay: 500,
    reconnectionDelayMax: 5_000,
    // A connection attempt made while the network was down can hang without an error
    // (Chromium offline); give up on it after 8 s rather than the default 20 s.
    timeout: 8_000,
  });
  socket = created;
  created.on("connect", () => {
    refusals = 0;
    realtime.status = "syncing";
    void catchUp();
  });
  created.on("event", (event: Envelope) => receive(event));
  created.on("heads", receiveHeads);
  created.on("disconnect", (reason) => {
    if (socket !== created) return;
    realtime.status = "reconnecting";
    // The server closed this connection on purpose (e.g. the session changed):
    // socket.io does not retry that by itself.
    if (reason === "io server disconnect") void reconnectWithFreshToken(created);
  });
  created.on("connect_error", () => {
    if (socket !== created) return;
    realtime.status = "reconnecting";
    // `active` is false when the server refused the handshake (an expired token);
    // otherwise the manager is already retrying with backoff.
    if (!created.active) void reconnectWithFreshToken(created);
  });
}

async function reconnectWithFreshToken(target: Socket): Promise<void> {
  refusals += 1;
  if (refusals > 3 || !credentials) return;
  const renewed = await credentials.refresh();
  if (renewed && socket === target) target.connect();
}

/** Close the connection and forget positions (sign-out). */
export function stopRealtime(): void {
  socket?.removeAllListeners();
  socket?.disconnect();
  socket = null;
  seen.clear();
  realtime.events.splice(0);
  realtime.status = "idle";
}

// --- direct socket use (the consult room) --------------------------------------------

export interface Ack<T> {
  ok: boolean;
  data?: T;
  problem?: Problem;
}

/** Emit a client → server event on the tab's socket and wait for its ack. */
export async function emitWithAck<T>(event: string, payload: unknown, timeoutMs = 10_000): Promise<Ack<T>> {
  const current = socket;
  if (!current?.connected) {
    return { ok: false, problem: { code: "offline", detail: "" } };
  }
  try {
    return (await current.timeout(timeoutMs).emitWithAck(event, payload)) as Ack<T>;
  } catch {
    return { ok: false, problem: { code: "timeout", detail: "" } };
  }
}

/** Listen to an ephemeral server emit (`presence`, `signal`); returns the unsubscribe. */
export function onSocketEvent<T>(event: string, handler: (data: T) => void): () => void {
  const target = socket;
  const listener = (data: T) => handler(data);
  target?.on(event, listener);
  return () => target?.off(event, listener);
}

/** Run `handler` on every (re)connect of the tab's socket (and now, if connected). */
export function onConnected(handler: () => void): () => void {
  const target = socket;
  target?.on("connect", handler);
  if (target?.connected) handler();
  return () => target?.off("connect", handler);
}

/** Whether the socket is connected now. */
export function isConnected(): boolean {
  return socket?.connected ?? false;
}

/** Ask for a catch-up now (after entering a room whose stream this tab has not seen). */
export function requestCatchUp(): void {
  void catchUp();
}
