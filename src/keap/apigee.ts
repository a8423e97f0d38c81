// Keap's gateway (Apigee) answers auth and quota failures itself, before Keap sees the
// request, with a fault body: {"fault":{"faultstring":"…","detail":{"errorcode":"…"}}}.
// The errorcode says what to do about it.
//
// The 401 policy, in one place (see /work/shared/keap-api-notes.md, "401s come from Apigee"):
// - TOKEN_FAULTS: the gateway rejected our access token, so Keap processed nothing. Refresh
//   (one refresh per rejected token, at most one per REFRESH_FLOOR_MS unless our own clock
//   says the token expired) and replay the request once, any method.
// - NOT_APPROVED_AFTER_REFRESH (one of TOKEN_FAULTS): Apigee also answers it for a single
//   revoked token, so it gets the same refresh and replay; only when the replay gets it
//   again is the app itself not approved (logged as app_not_approved).
// - APP_NOT_APPROVED_FAULTS: the app is not allowed; no refresh helps. The 401 goes to the
//   client and the operator is told (app_not_approved).
// - Anything else (no fault body, an unknown errorcode, not JSON) is not the gateway's: it
//   is the application's own 401. It goes to the client as it is: no refresh, no replay.
//   Refreshing on it would let any upstream answer (or any client whose request provokes
//   one) rotate our refresh token and duplicate writes.

/** Apigee's errorcodes for an access token it will not accept: a new token fixes them. */
export const TOKEN_FAULTS: ReadonlySet<string> = new Set([
  'keymanagement.service.access_token_expired',
  'keymanagement.service.invalid_access_token',
  /** Missing or malformed Authorization header. */
  'oauth.v2.InvalidAccessToken',
  'keymanagement.service.access_token_not_approved',
]);

/** In TOKEN_FAULTS, but twice in a row (before and after a refresh) it means the app is not approved. */
export const NOT_APPROVED_AFTER_REFRESH = 'keymanagement.service.access_token_not_approved';

/** The app itself is refused: an operator must act in Keap's developer portal. */
export const APP_NOT_APPROVED_FAULTS: ReadonlySet<string> = new Set([
  'keymanagement.service.invalid_client-client_id_not_approved',
]);

export type UnauthorizedKind =
  /** The gateway rejected the token: a new one fixes it, and a replay is safe. */
  | 'token'
  /** The app itself is not allowed: no refresh helps; an operator must act. */
  | 'not_approved'
  /** Not a gateway token fault: the application's own answer, passed on untouched. */
  | 'other';

export interface Fault {
  errorcode: string | undefined;
  faultstring: string | undefined;
}

/** Reads an Apigee fault body; anything else gives undefined fields, never an exception. */
export function parseFault(body: Buffer): Fault {
  try {
    const parsed = JSON.parse(body.toString('utf8')) as {
      fault?: { faultstring?: unknown; detail?: { errorcode?: unknown } };
    };
    const fault = parsed.fault;
    return {
      errorcode: typeof fault?.detail?.errorcode === 'string' ? fault.detail.errorcode : undefined,
      faultstring: typeof fault?.faultstring === 'string' ? fault.faultstring : undefined,
    };
  } catch {
    return { errorcode: undefined, faultstring: undefined };
  }
}

/** Only a known errorcode counts: a 401 we cannot read is not proof that our token is bad. */
export function classifyUnauthorized(fault: Fault): UnauthorizedKind {
  const code = fault.errorcode;
  if (code === undefined) return 'other';
  if (TOKEN_FAULTS.has(code)) return 'token';
  if (APP_NOT_APPROVED_FAULTS.has(code)) return 'not_approved';
  return 'other';
}
