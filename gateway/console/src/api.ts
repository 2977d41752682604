// The console's view of the HTTP API: the same /v1 endpoints wgctl uses, authenticated by the
// console's session cookie (sent by the browser, HttpOnly) and, on writes, the CSRF header.

export type Role = "user" | "approver" | "admin";

export interface SessionInfo {
  token_id: string;
  name: string;
  role: Role;
  csrf: string;
  expires_at_ms: number;
}

export interface Target {
  id: string;
  name: string;
  host: string;
  port: number;
  require_approval: boolean;
  created_at: number;
}

export interface Session {
  id: string;
  token_id: string;
  target_name: string;
  host: string;
  port: number;
  status: string;
  replica: string | null;
  created_at: number;
  started_at: number | null;
  ended_at: number | null;
  bytes_up: number;
  bytes_down: number;
  end_reason: string | null;
  requested_from?: string | null;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export const CSRF_HEADER = "x-wg-csrf";
let csrf = "";
let signedOutHandler: (why: string) => void = () => {};

export function onSignedOut(f: (why: string) => void): void {
  signedOutHandler = f;
}

export function setCsrf(value: string): void {
  csrf = value;
}

export async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { accept: "application/json" };
  if (method !== "GET") headers[CSRF_HEADER] = csrf;
  if (body !== undefined) headers["content-type"] = "application/json";
  const r = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
    cache: "no-store",
  });
  if (r.status === 204) return undefined as T;
  const text = await r.text();
  let data: unknown = undefined;
  try {
    data = text ? JSON.parse(text) : undefined;
  } catch {
    data = undefined;
  }
  if (!r.ok) {
    const e = (data ?? {}) as { code?: string; message?: string };
    const err = new ApiError(r.status, e.code ?? "error", e.message ?? (text || r.statusText));
    if (r.status === 401 && path !== "/console/api/session") signedOutHandler(err.message);
    throw err;
  }
  return data as T;
}

export const signIn = (token: string) => api<SessionInfo>("POST", "/console/api/session", { token });
export const whoAmI = () => api<SessionInfo>("GET", "/console/api/session");
export const signOut = () => api<void>("DELETE", "/console/api/session");
export const targets = () => api<Target[]>("GET", "/v1/targets");
export const sessions = () => api<Session[]>("GET", "/v1/sessions?limit=200");
export const approvals = () => api<Session[]>("GET", "/v1/approvals");
export const decide = (id: string, decision: "approve" | "deny") =>
  api<unknown>("POST", `/v1/approvals/${encodeURIComponent(id)}/${decision}`, { reason: "from the web console" });
export const terminate = (id: string) => api<Session>("DELETE", `/v1/sessions/${encodeURIComponent(id)}`);
