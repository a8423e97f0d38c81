// Hands every request a valid Keap access token. Keap rotates the refresh token on every
// refresh and kills the old one at once, so two refreshes in flight lose the grant for
// good: all callers share one refresh (single flight), and each new grant is stored
// durably before any request sees its access token.
import type { Logger } from './log.js';
import type { Grant } from './grant.js';
import { tenantOf } from './grant.js';
import type { TokenStore } from './token-store.js';
import { TokenEndpointError, type TokenClient } from './token-client.js';
import { noCredential, type Credential, type CredentialSource, type Readiness } from './credentials.js';

export interface TokenBrokerOptions {
  client: TokenClient;
  store: TokenStore;
  logger: Logger;
  /** Used only while the store holds nothing: the store wins. */
  seedRefreshToken: string | undefined;
  now?: () => number;
}

type State =
  | { kind: 'starting' }
  | { kind: 'ready' }
  /** The token endpoint failed; we keep serving while the access token lasts and retry. */
  | { kind: 'degraded'; since: number; reason: string }
  /** Nothing usable, and a refresh cannot fix it: a person must authorize again. */
  | { kind: 'reauthorization_required'; reason: string };

const MINUTE = 60_000;

/** Refresh this long before expiry: the smaller of 5 minutes and 10% of the token's lifetime. */
export function refreshMargin(grant: Pick<Grant, 'issuedAt' | 'accessExpiresAt'>): number {
  return Math.min(5 * MINUTE, 0.1 * (grant.accessExpiresAt - grant.issuedAt));
}

export class TokenBroker implements CredentialSource {
  readonly mode = 'oauth' as const;
  private grant: Grant | undefined;
  private credential: (Credential & { kind: 'bearer' }) | undefined;
  private generation = 0;
  private state: State = { kind: 'starting' };
  private inFlight: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private failures = 0;
  private readonly now: () => number;

  constructor(private readonly options: TokenBrokerOptions) {
    this.now = options.now ?? Date.now;
  }

  async start(): Promise<void> {
    const stored = await this.options.store.load();
    if (stored !== undefined) {
      this.grant = stored;
      this.generation += 1;
      this.options.logger.info({ event: 'grant_loaded', store: this.options.store.location, tenant: tenantOf(stored) }, 'grant loaded from the token store');
    } else if (this.options.seedRefreshToken !== undefined) {
      this.options.logger.info({ event: 'grant_seeded', store: this.options.store.location }, 'token store is empty: exchanging the seed refresh token');
      // A seed is a refresh token with no access token yet.
      const now = this.now();
      this.grant = { accessToken: '', refreshToken: this.options.seedRefreshToken, tokenType: 'bearer', scope: '', accessExpiresAt: 0, issuedAt: now, refreshIssuedAt: now };
    } else {
      this.state = { kind: 'reauthorization_required', reason: 'no grant stored and no KEAP_REFRESH_TOKEN seed' };
      this.options.logger.warn({ event: 'grant_missing', store: this.options.store.location }, 'no grant: authorize with `keap-proxy auth` or set KEAP_REFRESH_TOKEN');
      return;
    }
    if (this.usable(this.grant)) {
      this.state = { kind: 'ready' };
      this.schedule();
    } else {
      await this.refresh().catch(() => undefined);
    }
  }

  current(): Credential | undefined {
    const grant = this.grant;
    if (grant === undefined || !this.usable(grant)) return undefined;
    // One object per grant, not per request.
    if (this.credential?.token !== grant.accessToken) this.credential = { kind: 'bearer', token: grant.accessToken, generation: this.generation };
    return this.credential;
  }

  async get(): Promise<Credential> {
    const now = this.current();
    if (now !== undefined) return now;
    if (this.needsReauthorization()) throw this.reauthorizationError();
    await this.refresh().catch(() => undefined);
    const fresh = this.current();
    if (fresh !== undefined) return fresh;
    if (this.needsReauthorization()) throw this.reauthorizationError();
    throw noCredential('token_unavailable', 'No valid Keap access token right now: the token endpoint is failing. Retry after the indicated time.', this.retryAfterSeconds());
  }

  readiness(): Readiness {
    const grant = this.grant;
    const now = this.now();
    const details: Record<string, unknown> = {
      mode: 'oauth',
      state: this.state.kind,
      accessTokenExpiresInSeconds: grant !== undefined && grant.accessToken !== '' ? Math.round((grant.accessExpiresAt - now) / 1000) : null,
      refreshTokenAgeSeconds: grant !== undefined ? Math.round((now - grant.refreshIssuedAt) / 1000) : null,
      tenant: grant !== undefined ? (tenantOf(grant) ?? null) : null,
    };
    if (grant !== undefined && this.usable(grant)) return { ready: true, details };
    if (this.state.kind === 'reauthorization_required') {
      return { ready: false, code: 'reauthorization_required', message: `${this.state.reason}; authorize again with \`keap-proxy auth\``, details };
    }
    return { ready: false, code: 'token_unavailable', message: this.state.kind === 'degraded' ? this.state.reason : 'no access token yet', details };
  }

  /** A grant obtained by authorization (callback or `keap-proxy auth`): stored, then used. */
  async adoptGrant(grant: Grant): Promise<void> {
    await this.options.store.withLock(() => this.options.store.save(grant));
    this.useGrant(grant);
    this.options.logger.info({ event: 'grant_adopted', tenant: tenantOf(grant) }, 'new grant stored and in use');
  }

  private useGrant(grant: Grant): void {
    this.grant = grant;
    this.generation += 1;
    this.failures = 0;
    this.state = { kind: 'ready' };
    this.schedule();
  }

  /** One refresh for every caller that asks while it runs. */
  refresh(): Promise<void> {
    this.inFlight ??= this.refreshOnce().finally(() => {
      this.inFlight = undefined;
    });
    return this.inFlight;
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  private async refreshOnce(): Promise<void> {
    const current = this.grant;
    if (current === undefined) return;
    const { logger, client, store } = this.options;
    try {
      const next = await client.refresh(current.refreshToken);
      // Keap has already killed the old refresh token: the new grant must be durable
      // before anything uses it, or a crash now would lose the account.
      await store.save(next);
      this.grant = next;
      this.generation += 1;
      this.failures = 0;
      this.state = { kind: 'ready' };
      logger.info({ event: 'token_refreshed', expiresInSeconds: Math.round((next.accessExpiresAt - this.now()) / 1000), tenant: tenantOf(next) }, 'access token refreshed');
    } catch (err) {
      this.failures += 1;
      if (err instanceof TokenEndpointError && (err.failure === 'invalid_grant' || err.failure === 'invalid_client')) {
        this.state = { kind: 'reauthorization_required', reason: err.message };
        logger.error({ event: 'token_refresh_failed', failure: err.failure, status: err.status }, err.message);
      } else {
        const reason = err instanceof Error ? err.message : String(err);
        this.state = { kind: 'degraded', since: this.now(), reason };
        logger.warn({ event: 'token_refresh_failed', failure: 'unavailable', attempt: this.failures }, reason);
      }
      throw err;
    } finally {
      this.schedule();
    }
  }

  private needsReauthorization(): boolean {
    return this.state.kind === 'reauthorization_required';
  }

  private usable(grant: Grant): boolean {
    return grant.accessToken !== '' && this.now() < grant.accessExpiresAt - 1000;
  }

  /** Next proactive refresh: ahead of expiry, or a backoff retry after a failure. */
  private schedule(): void {
    clearTimeout(this.timer);
    const grant = this.grant;
    if (grant === undefined || this.state.kind === 'reauthorization_required') return;
    const now = this.now();
    let delay: number;
    if (this.failures > 0) {
      const base = Math.min(MINUTE, 1000 * 2 ** Math.min(this.failures - 1, 6));
      delay = base / 2 + Math.random() * (base / 2);
    } else {
      delay = Math.max(0, grant.accessExpiresAt - refreshMargin(grant) - now);
    }
    this.timer = setTimeout(() => {
      this.refresh().catch(() => undefined);
    }, Math.min(delay, 2 ** 31 - 1));
    this.timer.unref();
  }

  private retryAfterSeconds(): number {
    return Math.max(1, Math.min(60, 2 ** Math.min(this.failures, 6)));
  }

  private reauthorizationError() {
    const reason = this.state.kind === 'reauthorization_required' ? this.state.reason : 'the grant is no longer valid';
    return noCredential('reauthorization_required', `Keap authorization is needed: ${reason}. An operator must run \`keap-proxy auth\` (or store a new grant); the proxy resumes by itself once a new grant is stored.`, 60);
  }
}
