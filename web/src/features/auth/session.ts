// The signed-in session of this tab: tokens (sessionStorage, so each tab holds its own
// and a reload keeps it), the current user, and the refresh timer that renews the access
// token before it expires. One refresh runs at a time; concurrent callers share it.
import { reactive } from "vue";
import { ApiError, cancelRequests, useTokenSource } from "../../api/client";
import { getMe, login, logout, refresh } from "./api";
import type { TokenResponse, User } from "../../api/types";

interface Tokens {
  access: string;
  refresh: string;
  expiresAt: number; // epoch ms
}

const STORAGE_KEY = "yihao.session";
// The signed-in user as /me last answered, so a reload without a network (the installed
// app offline) still opens the user's own shell; forgotten with the tokens.
const USER_KEY = "yihao.session.user";
// Renew this long before expiry, or at 80% of the lifetime for short-lived tokens.
const REFRESH_MARGIN_MS = 60_000;

export const session = reactive({
  tokens: null as Tokens | null,
  user: null as User | null,
  endedReason: "" as string,
});

let refreshTimer: ReturnType<typeof setTimeout> | undefined;
let refreshing: Promise<boolean> | null = null;
const endListeners = new Set<() => void>();

function save(tokens: Tokens | null): void {
  session.tokens = tokens;
  if (tokens) sessionStorage.setItem(STORAGE_KEY, JSON.stringify(tokens));
  else {
    sessionStorage.removeItem(STORAGE_KEY);
    sessionStorage.removeItem(USER_KEY);
  }
  scheduleRefresh();
}

function fromResponse(answer: TokenResponse): Tokens {
  return {
    access: answer.access_token,
    refresh: answer.refresh_token,
    expiresAt: Date.now() + answer.expires_in * 1000,
  };
}

function scheduleRefresh(): void {
  clearTimeout(refreshTimer);
  const tokens = session.tokens;
  if (!tokens) return;
  const lifetime = tokens.expiresAt - Date.now();
  const early = lifetime > 2 * REFRESH_MARGIN_MS ? lifetime - REFRESH_MARGIN_MS : lifetime * 0.8;
  const wait = Math.max(1_000, early);
  refreshTimer = setTimeout(() => void refreshTokens(), wait);
}

export async function refreshTokens(): Promise<boolean> {
  if (refreshing) return refreshing;
  const tokens = session.tokens;
  if (!tokens) return false;
  refreshing = (async () => {
    try {
      const answer = await refresh(tokens.refresh);
      save(fromResponse(answer));
      return true;
    } catch (error) {
      if (error instanceof ApiError && error.status === 0) {
        // Offline: keep the session and try again shortly.
        refreshTimer = setTimeout(() => void refreshTokens(), 5_000);
        return false;
      }
      end(error instanceof ApiError ? error.detail : "");
      return false;
    } finally {
      refreshing = null;
    }
  })();
  return refreshing;
}

/** The current access token and its renewal, for the API client and the realtime socket. */
export const tokenSource = {
  accessToken: (): string | null => session.tokens?.access ?? null,
  refresh: refreshTokens,
};

useTokenSource(tokenSource);

/** Sign in; throws ApiError (code `totp_required` when a TOTP code must be sent). */
export async function signIn(username: string, password: string, totp?: string): Promise<User> {
  const answer = await login(username, password, totp);
  session.endedReason = "";
  save(fromResponse(answer));
  session.user = await getMe();
  sessionStorage.setItem(USER_KEY, JSON.stringify(session.user));
  return session.user;
}

export async function signOut(): Promise<void> {
  const tokens = session.tokens;
  // End locally first, so no screen sends another request with the ending session.
  end("");
  if (tokens) {
    try {
      await logout(tokens.access);
    } catch {
      // The session is over locally whatever the server says (it may have ended it already).
    }
  }
}

/** Forget the session (ended by the user, the server or an idle timeout). */
function end(reason: string): void {
  const wasSignedIn = session.tokens !== null;
  cancelRequests();
  save(null);
  session.user = null;
  session.endedReason = reason;
  if (wasSignedIn) endListeners.forEach((listener) => listener());
}

export function onSessionEnd(listener: () => void): void {
  endListeners.add(listener);
}

/** Restore the tab's session after a reload; false when there is none or it ended. */
export async function restoreSession(): Promise<boolean> {
  const raw = sessionStorage.getItem(STORAGE_KEY);
  if (!raw) return false;
  try {
    session.tokens = JSON.parse(raw) as Tokens;
  } catch {
    sessionStorage.removeItem(STORAGE_KEY);
    return false;
  }
  scheduleRefresh();
  try {
    session.user = await getMe();
    sessionStorage.setItem(USER_KEY, JSON.stringify(session.user));
    return true;
  } catch (error) {
    const known = sessionStorage.getItem(USER_KEY);
    if (error instanceof ApiError && error.status === 0 && known) {
      // Offline: the session is kept (the server decides on it once the network is back).
      try {
        session.user = JSON.parse(known) as User;
        return true;
      } catch {
        // fall through: an unreadable copy ends the session as before
      }
    }
    end(error instanceof ApiError && error.status !== 0 ? error.detail : "");
    return false;
  }
}
