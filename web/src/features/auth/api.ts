// The calls of signing in and out, and of who I am.
import { api } from "../../api/client";
import type { TokenResponse, User } from "../../api/types";

/** Sign in with a password (and a TOTP code when the account has one). */
export function login(username: string, password: string, totp?: string): Promise<TokenResponse> {
  const body = totp ? { username, password, totp } : { username, password };
  return api.post("/auth/login", { body, auth: false });
}

/** A new token pair for a refresh token (the old one is spent). */
export function refresh(refreshToken: string): Promise<TokenResponse> {
  return api.post("/auth/refresh", { body: { refresh_token: refreshToken }, auth: false });
}

/** End the session of this access token (given: the session has already ended locally). */
export function logout(accessToken: string): Promise<void> {
  return api.post("/auth/logout", { token: accessToken });
}

/** The signed-in user. */
export function getMe(): Promise<User> {
  return api.get("/me");
}
