// The one HTTP client of the REST API: every call of every feature goes through `api`
// (from the feature's api.ts), with a path relative to API_BASE exactly as the OpenAPI
// document declares it, so the compiler checks the path, its parameters, the body and the
// answer against schema.d.ts. Bearer token, one refresh-and-retry on an expired token, and
// every failure turned into an ApiError that carries the server's human message. Every
// write carries an Idempotency-Key, kept for all its tries: one that died with its node
// (network error, 502/503/504, 409 idempotency_in_progress) is sent again with back-off
// (./writes.ts), silently; the user hears of it only when the client gives up.
import type { paths } from "./schema";
import type { FieldError, Problem } from "./types";
import { GATEWAY_STATUSES, clientId, retryDelay, type Outcome } from "./writes";

/** Where the REST API lives; the only place the client names it. */
export const API_BASE = "/api/v1";

export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly detail: string;
  readonly fieldErrors: FieldError[];

  constructor(status: number, problem: Problem, fallback: string) {
    // The user's language first: a code with a text in the catalogue (`problem.<code>`) is
    // shown in it; the server's own words only where the catalogue has none.
    const detail =
      (problem.code ? problemMessage(problem.code) : undefined) ||
      problem.detail ||
      problem.title ||
      fallback;
    super(detail);
    this.name = "ApiError";
    this.status = status;
    this.code = problem.code ?? "";
    this.detail = detail;
    this.fieldErrors = problem.errors ?? [];
  }

  /** The server's reason for one form field (`errors[].field`, last path segment). */
  fieldError(name: string): string | undefined {
    return this.fieldErrors.find((e) => e.field === name || e.field.endsWith(`.${name}`))?.reason;
  }
}

/** How the client gets a token and renews it; the session module provides it. */
export interface TokenSource {
  accessToken(): string | null;
  refresh(): Promise<boolean>;
}

let tokens: TokenSource | null = null;
// Requests of the current session; aborted when it ends, so none is answered 401 later.
let inFlight = new AbortController();

export function cancelRequests(): void {
  inFlight.abort();
  inFlight = new AbortController();
}

export function useTokenSource(source: TokenSource): void {
  tokens = source;
}

// Set by the i18n module so the client's own messages read in the user's language.
let networkMessage = (): string => "The server cannot be reached; check the connection.";
// A write given up while the server still had its first try unanswered (409).
let pendingMessage = (): string =>
  "The server has not confirmed this submission yet; reload to see whether it went through.";
// A problem code's text in the user's language, when the catalogue has one.
let problemMessage = (_code: string): string | undefined => undefined;

export function setClientMessages(messages: {
  network: () => string;
  pending: () => string;
  problem: (code: string) => string | undefined;
}): void {
  networkMessage = messages.network;
  pendingMessage = messages.pending;
  problemMessage = messages.problem;
}


async function parseProblem(response: Response): Promise<Problem> {
  const type = response.headers.get("Content-Type") ?? "";
  if (type.includes("json")) {
    try {
      return (await response.json()) as Problem;
    } catch {
      return {};
    }
  }
  return {};
}

interface RequestOptions {
  body?: unknown;
  auth?: boolean;
  /** Send this token instead of the session's (signing out after the session ended). */
  token?: string;
}

/** One try: the server's answer, or an ApiError (network, cancelled, signed out). */
async function send(
  method: string,
  path: string,
  options: RequestOptions,
  signal: AbortSignal,
  key: string | null,
): Promise<Response> {
  const headers: Record<string, string> = { Accept: "application/json" };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  if (key !== null) headers["Idempotency-Key"] = key;
  if (options.auth !== false) {
    const token = options.token ?? tokens?.accessToken();
    // Signed out (a screen still loading as the session ended): nothing to ask the server.
    if (!token) throw new ApiError(0, { code: "signed_out" }, "");
    headers.Authorization = `Bearer ${token}`;
  }
  try {
    return await fetch(`${API_BASE}${path}`, {
      method,
      headers,
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
      credentials: "same-origin",
      signal,
    });
  } catch (error) {
    if (signal.aborted || (error instanceof DOMException && error.name === "AbortError")) {
      throw new ApiError(0, { code: "cancelled" }, "");
    }
    throw new ApiError(0, { code: "network" }, networkMessage());
  }
}

/** Resolves after `ms`, or rejects as cancelled as soon as the session ends. */
function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const cancelled = () => {
      clearTimeout(timer);
      reject(new ApiError(0, { code: "cancelled" }, ""));
    };
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", cancelled);
      resolve();
    }, ms);
    if (signal.aborted) cancelled();
    else signal.addEventListener("abort", cancelled, { once: true });
  });
}

/** What a try's answer means for retrying (the problem's code is read from a copy). */
async function outcomeOf(response: Response): Promise<Outcome> {
  const code = response.status === 409 ? (await parseProblem(response.clone())).code : undefined;
  return {
    kind: "answer",
    status: response.status,
    code,
    retryAfter: response.headers.get("Retry-After"),
  };
}

/** Send; a write (`key` set) is sent again, same key, while its answer says it may not have
 * been done, until the policy gives up. Reads are not repeated: their caller shows the error. */
async function sendRetrying(
  method: string,
  path: string,
  options: RequestOptions,
  key: string | null,
): Promise<Response> {
  // The session's signal when the call began: a session that ends stops its retries too.
  const signal = inFlight.signal;
  let waited = 0;
  for (let attempt = 0; ; attempt++) {
    let response: Response | null = null;
    let failure: ApiError | null = null;
    try {
      response = await send(method, path, options, signal, key);
    } catch (error) {
      if (!(error instanceof ApiError) || error.code !== "network") throw error;
      failure = error;
    }
    const outcome: Outcome = response ? await outcomeOf(response) : { kind: "network" };
    const delay = key === null ? null : retryDelay(outcome, attempt, waited);
    if (delay === null) {
      if (response) return response;
      throw failure ?? new ApiError(0, { code: "network" }, networkMessage());
    }
    await pause(delay, signal);
    waited += delay;
  }
}

/** A request to `API_BASE + path` (path starts with "/"); the answer's JSON, or undefined on 204. */
async function request<T>(
  method: string,
  path: string,
  options: RequestOptions = {},
): Promise<T> {
  // One key for every try of a write, the one after a token refresh included.
  const key = method === "GET" ? null : clientId();
  let response = await sendRetrying(method, path, options, key);
  if (response.status === 401 && options.auth !== false && !options.token && tokens) {
    const problem = await parseProblem(response);
    if (problem.code === "token_expired" && (await tokens.refresh())) {
      response = await sendRetrying(method, path, options, key);
    } else {
      throw new ApiError(401, problem, response.statusText);
    }
  }
  if (!response.ok) {
    const problem = await parseProblem(response);
    if (problem.code === "idempotency_in_progress") problem.detail = pendingMessage();
    // nginx's pages for a node that is gone are HTML, not problems: say what it means.
    const fallback = GATEWAY_STATUSES.has(response.status) ? networkMessage() : response.statusText;
    throw new ApiError(response.status, problem, fallback);
  }
  if (response.status === 204) return undefined as T;
  const type = response.headers.get("Content-Type") ?? "";
  return (type.includes("json") ? await response.json() : undefined) as T;
}

// --- paths checked against the OpenAPI document --------------------------------------------
// The generated `paths` name every route with the API base; callers give the part after it,
// so a path (or a method on it) that the server does not declare is a type error.

type FullPath = keyof paths;
/** A REST path relative to API_BASE as OpenAPI declares it (`/consults/{consult_id}`). */
export type ApiPath = FullPath extends infer K
  ? K extends `${typeof API_BASE}${infer Rest}`
    ? Rest
    : never
  : never;
type Method = "get" | "post" | "put";
type Operation<P extends ApiPath, M extends Method> = paths[`${typeof API_BASE}${P}`][M];
/** The paths that answer method M. */
export type PathsOf<M extends Method> = {
  [P in ApiPath]: Operation<P, M> extends { responses: unknown } ? P : never;
}[ApiPath];

type PathParams<O> = O extends { parameters: { path: infer X } } ? X : never;
type QueryParams<O> = O extends { parameters: { query?: infer Q } } ? NonNullable<Q> : never;
type JsonBody<O> = O extends { requestBody?: infer R }
  ? NonNullable<R> extends { content: { "application/json": infer B } }
    ? B
    : never
  : never;
type PathInit<O> = [PathParams<O>] extends [never] ? { path?: never } : { path: PathParams<O> };
type QueryInit<O> = [QueryParams<O>] extends [never]
  ? { query?: never }
  : O extends { parameters: { query: unknown } }
    ? { query: QueryParams<O> }
    : { query?: QueryParams<O> };
type BodyInit<O> = [JsonBody<O>] extends [never]
  ? { body?: never }
  : O extends { requestBody: unknown }
    ? { body: JsonBody<O> }
    : { body?: JsonBody<O> };
interface SessionInit {
  /** false: a call made without a session (sign in, refresh). */
  auth?: false;
  /** Send this token instead of the session's (signing out after the session ended). */
  token?: string;
}
/** What one call of operation O takes: its path parameters, query and JSON body. */
export type Init<O> = PathInit<O> & QueryInit<O> & BodyInit<O> & SessionInit;
type RequiredKeys<T> = { [K in keyof T]-?: object extends Pick<T, K> ? never : K }[keyof T];
type InitArgs<O> = [RequiredKeys<Init<O>>] extends [never] ? [init?: Init<O>] : [init: Init<O>];

type Json<R> = R extends { content: { "application/json": infer T } } ? T : undefined;
/** The success answer of operation O as OpenAPI declares it (undefined for 204). */
export type Answer<O> = O extends { responses: infer R }
  ? R extends { 200: infer A }
    ? Json<A>
    : R extends { 201: infer A }
      ? Json<A>
      : R extends { 202: infer A }
        ? Json<A>
        : undefined
  : never;

/** The query parameters a GET of path P takes. */
export type QueryOf<P extends PathsOf<"get">> = QueryParams<Operation<P, "get">>;

type QueryValue = string | number | boolean | null | undefined;

/** `/consults/{consult_id}` with `{consult_id: 3}` → `/consults/3` (each value URL-encoded),
 * plus the query's defined members. */
function fillPath(
  template: string,
  params?: Record<string, string | number>,
  query?: Record<string, QueryValue | readonly QueryValue[]>,
): string {
  const path = template.replace(/\{([^}]+)\}/g, (_, name: string) => {
    const value = params?.[name];
    if (value === undefined) throw new Error(`${template}: no value for {${name}}`);
    return encodeURIComponent(String(value));
  });
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(query ?? {})) {
    for (const one of Array.isArray(value) ? value : [value]) {
      if (one !== undefined && one !== null) search.append(key, String(one));
    }
  }
  const text = search.toString();
  return text ? `${path}?${text}` : path;
}

function call<T>(method: string, template: string, init: object | undefined): Promise<T> {
  const loose = (init ?? {}) as {
    path?: Record<string, string | number>;
    query?: Record<string, QueryValue | readonly QueryValue[]>;
    body?: unknown;
  } & SessionInit;
  // A POST without a body still sends `{}`: the server reads every POST as JSON.
  const body = method === "POST" ? (loose.body ?? {}) : loose.body;
  return request<T>(method, fillPath(template, loose.path, loose.query), {
    body,
    auth: loose.auth,
    token: loose.token,
  });
}

export const api = {
  get: <P extends PathsOf<"get">>(path: P, ...[init]: InitArgs<Operation<P, "get">>) =>
    call<Answer<Operation<P, "get">>>("GET", path, init),
  post: <P extends PathsOf<"post">>(path: P, ...[init]: InitArgs<Operation<P, "post">>) =>
    call<Answer<Operation<P, "post">>>("POST", path, init),
  put: <P extends PathsOf<"put">>(path: P, ...[init]: InitArgs<Operation<P, "put">>) =>
    call<Answer<Operation<P, "put">>>("PUT", path, init),
};

/**
 * A GET of a route this build's OpenAPI document may not declare (another capability's,
 * deployed apart from this client): its answer, or null when the server has no such route
 * (404, 405). A screen shows what it reads from there only when the route answers.
 */
export async function getIfServed<T>(path: string): Promise<T | null> {
  try {
    return await request<T>("GET", path);
  } catch (error) {
    if (error instanceof ApiError && (error.status === 404 || error.status === 405)) return null;
    throw error;
  }
}
