// Keap's gateway (Apigee) answers auth and quota failures itself, before Keap sees the
// request, with a fault body: {"fault":{"faultstring":"…","detail":{"errorcode":"…"}}}.
// The errorcode says what to do about it.

export type UnauthorizedKind =
  /** The token is expired, invalid or missing: a new one fixes it, and a replay is safe. */
  | 'token'
  /** The app itself is not allowed: no refresh helps; an operator must act. */
  | 'not_approved';

const NOT_APPROVED = new Set(['keymanagement.service.access_token_not_approved', 'keymanagement.service.invalid_client-client_id_not_approved']);

export interface Fault {
  errorcode: string | undefined;
  faultstring: string | undefined;
}

/** Reads an Apigee fault body; anything else gives undefined fields, never an exception. */
export function parseFault(body: Buffer): Fault {
  try {
    const parsed = JSON.parse(body.toString('utf8')) as { fault?: { faultstring?: unknown; detail?: { errorcode?: unknown } } };
    const fault = parsed.fault;
    return {
      errorcode: typeof fault?.detail?.errorcode === 'string' ? fault.detail.errorcode : undefined,
      faultstring: typeof fault?.faultstring === 'string' ? fault.faultstring : undefined,
    };
  } catch {
    return { errorcode: undefined, faultstring: undefined };
  }
}

/**
 * Expired, invalid and malformed-token faults are refreshed; so is a 401 we cannot read,
 * once (the generation check and the single replay keep that from looping).
 */
export function classifyUnauthorized(fault: Fault): UnauthorizedKind {
  return fault.errorcode !== undefined && NOT_APPROVED.has(fault.errorcode) ? 'not_approved' : 'token';
}
