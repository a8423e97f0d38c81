// Keap's authorization-code flow, shared by `keap-proxy auth` and the proxy's /oauth/*
// endpoints: the `state` values we hand out, the authorize URL, and turning a callback
// into a stored grant. Where the grant goes (the store, or the running broker) is the
// caller's choice, passed in as `keep`.
import { randomBytes } from 'node:crypto';
import { GrantForAnotherApp, type Grant } from '../tokens/grant.js';
import { HttpError } from '../http/http-error.js';
import { TokenEndpointError, type TokenClient } from '../tokens/token-client.js';

export const STATE_TTL_MS = 10 * 60_000;
export const MAX_OUTSTANDING_STATES = 100;

/** 32 random bytes: unguessable, and the only thing that protects an unauthenticated callback. */
export function newState(): string {
  return randomBytes(32).toString('base64url');
}

export interface StateTableOptions {
  ttlMs?: number;
  max?: number;
  now?: () => number;
}

/**
 * One-use `state` values with an expiry; a bounded number outstanding, so no caller can grow it
 * without limit. Each state is issued for an owner (the account whose flow handed it out; ''
 * when there is one flow only) and completes that owner's flow alone.
 */
export class StateTable {
  // A Map iterates in insertion order, which is also expiry order: the oldest comes first.
  private readonly states = new Map<string, { expiresAt: number; owner: string }>();
  private readonly ttlMs: number;
  private readonly max: number;
  private readonly now: () => number;

  constructor(options: StateTableOptions = {}) {
    this.ttlMs = options.ttlMs ?? STATE_TTL_MS;
    this.max = options.max ?? MAX_OUTSTANDING_STATES;
    this.now = options.now ?? Date.now;
  }

  issue(owner = ''): string {
    const now = this.now();
    this.purge(now);
    // Full: the oldest flow loses its state rather than every new one being refused, so a
    // client that keeps starting flows cannot lock the operator out.
    while (this.states.size >= this.max) {
      const oldest = this.states.keys().next().value;
      if (oldest === undefined) break;
      this.states.delete(oldest);
    }
    const state = newState();
    this.states.set(state, { expiresAt: now + this.ttlMs, owner });
    return state;
  }

  /**
   * True once for a state we issued for `owner` and that has not expired; false ever after. A
   * state of another owner is refused and left as it is: it cannot complete this owner's flow,
   * nor cancel its own.
   */
  consume(state: string, owner = ''): boolean {
    const entry = this.states.get(state);
    if (entry === undefined || entry.owner !== owner) return false;
    this.states.delete(state);
    return this.now() < entry.expiresAt;
  }

  /** Whose flow a live state belongs to; undefined for a state not issued, used or expired. Consumes nothing. */
  ownerOf(state: string): string | undefined {
    const entry = this.states.get(state);
    return entry !== undefined && this.now() < entry.expiresAt ? entry.owner : undefined;
  }

  get size(): number {
    return this.states.size;
  }

  private purge(now: number): void {
    for (const [state, { expiresAt }] of this.states) {
      if (expiresAt > now) break;
      this.states.delete(state);
    }
  }
}

export function buildAuthorizeUrl(authorizeUrl: URL, clientId: string, redirectUri: string, state: string): URL {
  const url = new URL(authorizeUrl.href);
  // Keap accepts only response_type=code and scope=full.
  url.searchParams.set('client_id', clientId);
  url.searchParams.set('redirect_uri', redirectUri);
  url.searchParams.set('response_type', 'code');
  url.searchParams.set('scope', 'full');
  url.searchParams.set('state', state);
  return url;
}

export interface OAuthFlowOptions {
  authorizeUrl: URL;
  clientId: string;
  redirectUri: string;
  client: Pick<TokenClient, 'exchangeCode'>;
  /** Makes the new grant durable (and, in the proxy, current). Resolves once it is. */
  keep: (grant: Grant) => Promise<void>;
  /** Shared by several flows (one per account), each issuing and taking its own states under `owner`. */
  states?: StateTable;
  /** The account this flow is for, as its states name it; default ''. */
  owner?: string;
  /** Told to whoever must start again, e.g. "open /oauth/start again". */
  restartHint: string;
}

export class OAuthFlow {
  readonly redirectUri: string;
  private readonly states: StateTable;

  constructor(private readonly options: OAuthFlowOptions) {
    this.redirectUri = options.redirectUri;
    this.states = options.states ?? new StateTable();
  }

  /** A fresh one-use state and the authorize URL that carries it. */
  begin(): { url: URL; state: string } {
    const state = this.states.issue(this.options.owner);
    return {
      url: buildAuthorizeUrl(this.options.authorizeUrl, this.options.clientId, this.options.redirectUri, state),
      state,
    };
  }

  /**
   * Handles Keap's redirect back to us (`?code&state`, or `?error&state`). Throws HttpError:
   * `invalid_state` (not a state we issued, already used or expired), `authorization_denied`,
   * `invalid_request`, or whatever `exchange` throws.
   */
  async complete(query: URLSearchParams): Promise<Grant> {
    const state = query.get('state');
    const error = query.get('error');
    // A wrong state is refused before anything else, Keap errors included, so a forged
    // callback can neither plant a code nor cancel a flow in progress.
    if (state !== null || error === null) {
      if (state === null || !this.states.consume(state, this.options.owner)) {
        throw new HttpError(
          400,
          'invalid_state',
          `The state parameter is unknown, already used or expired (states last ${STATE_TTL_MS / 60_000} minutes and work once); ${this.options.restartHint}.`,
        );
      }
    }
    if (error !== null) {
      const description = query.get('error_description');
      throw new HttpError(
        400,
        'authorization_denied',
        `Keap did not authorize: ${printable(error)}${description !== null ? ` (${printable(description)})` : ''}; ${this.options.restartHint}.`,
      );
    }
    const code = query.get('code');
    if (code === null || code === '')
      throw new HttpError(400, 'invalid_request', `The callback carries no code; ${this.options.restartHint}.`);
    return this.exchange(code);
  }

  /** Code → grant → kept. The state, if any, must already have been checked. */
  async exchange(code: string): Promise<Grant> {
    let grant: Grant;
    try {
      grant = await this.options.client.exchangeCode(code, this.options.redirectUri);
    } catch (err) {
      throw exchangeFailure(err, this.options.restartHint);
    }
    try {
      await this.options.keep(grant);
    } catch (err) {
      // Refused before it was stored: the store still holds what it held.
      if (err instanceof GrantForAnotherApp)
        throw new HttpError(409, 'grant_for_another_app', `Refused: ${err.message} (nothing was stored).`);
      throw new HttpError(
        500,
        'store_failed',
        `Keap issued a grant but it could not be stored (${err instanceof Error ? err.message : String(err)}); fix the token store, then ${this.options.restartHint}.`,
      );
    }
    return grant;
  }
}

function exchangeFailure(err: unknown, restartHint: string): HttpError {
  if (!(err instanceof TokenEndpointError)) throw err;
  switch (err.failure) {
    case 'invalid_grant':
      return new HttpError(
        400,
        'code_rejected',
        `Keap refused the authorization code (expired, already used, or issued for another redirect URI than KEAP_REDIRECT_URI); ${restartHint}.`,
      );
    case 'invalid_client':
      return new HttpError(
        502,
        'client_rejected',
        'Keap refused the client credentials: check KEAP_CLIENT_ID and KEAP_CLIENT_SECRET.',
      );
    default:
      return new HttpError(
        502,
        'token_endpoint_unavailable',
        `Keap's token endpoint failed (${err.message}); ${restartHint}.`,
      );
  }
}

/** Callback parameters come from whoever sent the request: cut to a short, plain line. */
function printable(s: string): string {
  return s.replace(/[^\x20-\x7e]/g, '?').slice(0, 200);
}
