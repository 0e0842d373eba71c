// The one HTTP client of the REST API: every call of every feature goes through `api`,
// with a path relative to API_BASE. Bearer token, one refresh-and-retry on an expired
// token, and every failure turned into an ApiError that carries the server's human message.
import type { FieldError, Problem } from "./types";

/** Where the REST API lives; the only place the client names it. */
export const API_BASE = "/api/v1";

export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly detail: string;
  readonly fieldErrors: FieldError[];

  constructor(status: number, problem: Problem, fallback: string) {
    const detail = problem.detail || problem.title || fallback;
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

// Set by the i18n module so network failures read in the user's language.
let networkMessage = (): string => "The server cannot be reached; check the connection.";

export function setNetworkMessage(message: () => string): void {
  networkMessage = message;
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

async function send(method: string, path: string, options: RequestOptions): Promise<Response> {
  const headers: Record<string, string> = { Accept: "application/json" };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
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
      signal: inFlight.signal,
    });
  } catch (error) {
    if (error instanceof DOMException && error.name === "AbortError") {
      throw new ApiError(0, { code: "cancelled" }, "");
    }
    throw new ApiError(0, { code: "network" }, networkMessage());
  }
}

/** A request to `API_BASE + path` (path starts with "/"); the answer's JSON, or undefined on 204. */
async function request<T>(
  method: string,
  path: string,
  options: RequestOptions = {},
): Promise<T> {
  let response = await send(method, path, options);
  if (response.status === 401 && options.auth !== false && !options.token && tokens) {
    const problem = await parseProblem(response);
    if (problem.code === "token_expired" && (await tokens.refresh())) {
      response = await send(method, path, options);
    } else {
      throw new ApiError(401, problem, response.statusText);
    }
  }
  if (!response.ok) {
    throw new ApiError(response.status, await parseProblem(response), response.statusText);
  }
  if (response.status === 204) return undefined as T;
  const type = response.headers.get("Content-Type") ?? "";
  return (type.includes("json") ? await response.json() : undefined) as T;
}

export const api = {
  get: <T>(path: string) => request<T>("GET", path),
  post: <T>(path: string, body?: unknown, auth = true) =>
    request<T>("POST", path, { body: body ?? {}, auth }),
  put: <T>(path: string, body: unknown) => request<T>("PUT", path, { body }),
  /** POST with a given token instead of the session's (signing out after the session ended). */
  postAs: <T>(token: string, path: string, body?: unknown) =>
    request<T>("POST", path, { body: body ?? {}, token }),
};
