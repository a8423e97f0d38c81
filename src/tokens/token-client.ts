// Keap's token endpoint, in the shapes Keap documents: the code exchange carries the
// client credentials in the form body; a refresh sends them as HTTP Basic.
import type { Grant } from './grant.js';

export type TokenFailure =
  /** The refresh token (or code) is dead: only a new authorization helps. */
  | 'invalid_grant'
  /** Keap refused the client itself (wrong id or secret). */
  | 'invalid_client'
  /** Timeout, network error, 5xx or an answer we cannot read: try again later. */
  | 'unavailable';

export class TokenEndpointError extends Error {
  constructor(
    readonly failure: TokenFailure,
    message: string,
    readonly status?: number,
    /** The host a 3xx pointed at (host and port only: a Location's path and query are not ours to log). */
    readonly redirectHost?: string,
  ) {
    super(message);
    this.name = 'TokenEndpointError';
  }
}

export interface TokenClientOptions {
  tokenUrl: URL;
  clientId: string;
  clientSecret: string;
  timeoutMs?: number;
  now?: () => number;
}

export class TokenClient {
  constructor(private readonly options: TokenClientOptions) {}

  refresh(refreshToken: string): Promise<Grant> {
    const basic = Buffer.from(`${this.options.clientId}:${this.options.clientSecret}`).toString('base64');
    return this.post(new URLSearchParams({ grant_type: 'refresh_token', refresh_token: refreshToken }), {
      authorization: `Basic ${basic}`,
    });
  }

  exchangeCode(code: string, redirectUri: string): Promise<Grant> {
    return this.post(
      new URLSearchParams({
        client_id: this.options.clientId,
        client_secret: this.options.clientSecret,
        code,
        grant_type: 'authorization_code',
        redirect_uri: redirectUri,
      }),
      {},
    );
  }

  private async post(form: URLSearchParams, headers: Record<string, string>): Promise<Grant> {
    const now = this.options.now ?? Date.now;
    let response: Response;
    let text: string;
    try {
      response = await fetch(this.options.tokenUrl, {
        method: 'POST',
        headers: { ...headers, 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
        body: form.toString(),
        signal: AbortSignal.timeout(this.options.timeoutMs ?? 15_000),
        // Following a redirect would re-send the refresh token, or on a code exchange the
        // client secret, to whatever host the Location names.
        redirect: 'manual',
      });
      if (isRedirect(response.status)) {
        await response.body?.cancel();
        text = '';
      } else {
        text = await response.text();
      }
    } catch (err) {
      const reason = (err as Error).name === 'TimeoutError' ? 'timed out' : 'could not be reached';
      throw new TokenEndpointError('unavailable', `token endpoint ${reason}`);
    }
    if (isRedirect(response.status)) throw redirectRefused(response, this.options.tokenUrl);
    const body = parseJson(text);
    if (response.ok) {
      const grant = toGrant(body, now());
      if (grant === undefined)
        throw new TokenEndpointError('unavailable', 'token endpoint answered without a usable token', response.status);
      return grant;
    }
    const error = typeof body?.error === 'string' ? body.error : undefined;
    const description = typeof body?.error_description === 'string' ? body.error_description : '';
    if (response.status >= 500 || response.status === 429) {
      throw new TokenEndpointError('unavailable', `token endpoint answered ${response.status}`, response.status);
    }
    // Keap answers a dead refresh token with invalid_grant, and has been seen answering
    // invalid_request "Invalid Refresh Token"; bad client credentials also come as 401.
    if (/username and password/i.test(description) || error === 'invalid_client') {
      throw new TokenEndpointError(
        'invalid_client',
        `token endpoint rejected the client credentials (${error ?? response.status}): check KEAP_CLIENT_ID and KEAP_CLIENT_SECRET`,
        response.status,
      );
    }
    if (error === 'invalid_grant' || /refresh token|authorization code/i.test(description)) {
      throw new TokenEndpointError(
        'invalid_grant',
        `token endpoint answered ${error ?? response.status}: the grant is no longer valid`,
        response.status,
      );
    }
    throw new TokenEndpointError(
      'unavailable',
      `token endpoint answered ${response.status} ${error ?? ''}`.trim(),
      response.status,
    );
  }
}

function isRedirect(status: number): boolean {
  return status >= 300 && status < 400;
}

/**
 * Keap's token endpoint does not redirect: a 3xx means KEAP_TOKEN_URL is wrong or something
 * between us and Keap is hostile. Only the Location's host is named, as its query may carry
 * anything (and is attacker-chosen).
 */
function redirectRefused(response: Response, tokenUrl: URL): TokenEndpointError {
  const location = response.headers.get('location');
  let host: string | undefined;
  try {
    host = location === null ? undefined : new URL(location, tokenUrl).host.slice(0, 260) || undefined;
  } catch {
    host = undefined;
  }
  const where =
    host !== undefined
      ? `a redirect to ${host}`
      : location === null
        ? 'a redirect without a Location'
        : 'a redirect to an unreadable Location';
  return new TokenEndpointError(
    'unavailable',
    `token endpoint answered ${response.status}, ${where}; it was not followed (check KEAP_TOKEN_URL)`,
    response.status,
    host,
  );
}

function parseJson(text: string): Record<string, unknown> | undefined {
  try {
    const v: unknown = JSON.parse(text);
    return typeof v === 'object' && v !== null ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

function toGrant(body: Record<string, unknown> | undefined, now: number): Grant | undefined {
  if (body === undefined) return undefined;
  const { access_token, refresh_token, expires_in, token_type, scope } = body;
  if (
    typeof access_token !== 'string' ||
    access_token === '' ||
    typeof refresh_token !== 'string' ||
    refresh_token === ''
  )
    return undefined;
  const lifetime = Number(expires_in);
  if (!Number.isFinite(lifetime) || lifetime <= 0) return undefined;
  return {
    accessToken: access_token,
    refreshToken: refresh_token,
    tokenType: typeof token_type === 'string' ? token_type : 'bearer',
    scope: typeof scope === 'string' ? scope : '',
    accessExpiresAt: now + lifetime * 1000,
    issuedAt: now,
    refreshIssuedAt: now,
  };
}
