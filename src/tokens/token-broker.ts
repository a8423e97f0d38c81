// Hands every request a valid Keap access token. Keap rotates the refresh token on every
// refresh and kills the old one at once, so two refreshes with one token lose the grant for
// good. Hence: one refresh at a time in this process (single flight) and across processes
// (the store's lock, then a re-read of the store); a 401 refreshes only when the token that
// failed is still the current one (generation check), and at most once per refresh floor
// unless our own clock says the token expired; and every new grant is stored durably
// before any request sees its access token.
import type { Logger } from '../observability/log.js';
import { checkGrantApp, tenantOf, type Grant } from './grant.js';
import type { TokenStore } from './token-store.js';
import { TokenEndpointError, type TokenClient } from './token-client.js';
import { NoCredential, type Credential, type CredentialSource, type Readiness } from './credentials.js';

export interface TokenBrokerOptions {
  client: TokenClient;
  store: TokenStore;
  logger: Logger;
  /** Used only while the store holds nothing: the store wins. */
  seedRefreshToken: string | undefined;
  /** The Keap app grants must be for (KEAP_APP); a grant for another is refused, never stored. */
  app?: string | undefined;
  now?: () => number;
  /** While no usable grant is held, the store is re-read this often: `keap-proxy auth` or another replica may put one there. */
  storePollMs?: number;
  /** Refresh at least this often whatever the access token's lifetime, so the refresh token (45 days) never lapses. */
  maxRefreshIntervalMs?: number;
  /** The least time between two refreshes driven by Keap's 401s (REFRESH_FLOOR_MS unless a test says otherwise). */
  refreshFloorMs?: number;
  /** Told how each refresh ended (metrics). */
  onRefresh?: (outcome: 'success' | 'failure' | 'invalid_grant' | 'reloaded') => void;
}

type State =
  | { kind: 'starting' }
  | { kind: 'ready' }
  /** The token endpoint or the store failed; we keep serving while the access token lasts and retry with backoff. */
  | { kind: 'degraded'; reason: string }
  /** Nothing usable, and a refresh cannot fix it: a person must authorize again. */
  | { kind: 'reauthorization_required'; reason: string };

const SECOND = 1000;
const MINUTE = 60 * SECOND;
const DAY = 24 * 60 * MINUTE;
/** Keap's refresh tokens live 45 days; its staff advise refreshing any older than about 30. */
const REFRESH_TOKEN_WARN_AGE = 30 * DAY;

/**
 * A 401 for a token our own clock still trusts refreshes at most this often. Each refresh
 * rotates the refresh token; an upstream that rejects every token (or a bug that makes it
 * look so) would otherwise have us rotate on every request and replay every write.
 */
export const REFRESH_FLOOR_MS = 10 * SECOND;

/** Refresh this long before expiry: the smaller of 5 minutes and 10% of the token's lifetime. */
export function refreshMargin(grant: Pick<Grant, 'issuedAt' | 'accessExpiresAt'>): number {
  return Math.min(5 * MINUTE, 0.1 * (grant.accessExpiresAt - grant.issuedAt));
}

export class TokenBroker implements CredentialSource {
  readonly mode = 'oauth' as const;
  private grant: Grant | undefined;
  /** A grant Keap issued that the store refused: it holds the only live refresh token, so it is kept and saved again. */
  private unsaved: Grant | undefined;
  private credential: (Credential & { kind: 'bearer' }) | undefined;
  private generation = 0;
  private state: State = { kind: 'starting' };
  private inFlight: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private pollTimer: NodeJS.Timeout | undefined;
  private failures = 0;
  /** No token call before this time (backoff after a failure). */
  private nextAttemptAt = 0;
  private lastRefreshAt: number | undefined;
  /** When a 401 last made us drop a token our clock still trusted (the refresh floor counts from here). */
  private lastRejectedAt: number | undefined;
  private stopped = false;
  private readonly now: () => number;
  private readonly storePollMs: number;
  private readonly maxRefreshIntervalMs: number;
  private readonly refreshFloorMs: number;

  constructor(private readonly options: TokenBrokerOptions) {
    this.now = options.now ?? Date.now;
    this.storePollMs = options.storePollMs ?? 5 * SECOND;
    this.maxRefreshIntervalMs = options.maxRefreshIntervalMs ?? 7 * DAY;
    this.refreshFloorMs = options.refreshFloorMs ?? REFRESH_FLOOR_MS;
  }

  async start(): Promise<void> {
    const { store, logger } = this.options;
    const stored = await store.load();
    // A store that cannot be written would lose the grant at the first refresh (Keap retires
    // the old refresh token): refused now, like an unreadable one, not retried forever.
    await store.checkWritable();
    if (stored !== undefined) {
      this.grant = stored;
      this.generation += 1;
      logger.info(
        { event: 'grant_loaded', store: store.location, tenant: tenantOf(stored) },
        'grant loaded from the token store',
      );
    } else if (this.options.seedRefreshToken !== undefined) {
      logger.info(
        { event: 'grant_seeded', store: store.location },
        'token store is empty: exchanging the seed refresh token',
      );
      const now = this.now();
      // A seed is a refresh token with no access token yet.
      this.grant = {
        accessToken: '',
        refreshToken: this.options.seedRefreshToken,
        tokenType: 'bearer',
        scope: '',
        accessExpiresAt: 0,
        issuedAt: now,
        refreshIssuedAt: now,
      };
    } else {
      this.needReauthorization('no grant in the token store and no KEAP_REFRESH_TOKEN seed');
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
    if (this.credential?.token !== grant.accessToken)
      this.credential = { kind: 'bearer', token: grant.accessToken, generation: this.generation };
    return this.credential;
  }

  async get(): Promise<Credential> {
    const now = this.current();
    if (now !== undefined) return now;
    if (this.state.kind !== 'reauthorization_required' && this.now() >= this.nextAttemptAt)
      await this.refresh().catch(() => undefined);
    const fresh = this.current();
    if (fresh !== undefined) return fresh;
    throw this.unavailable();
  }

  /**
   * Keap's gateway rejected `used` (an Apigee token fault). Only if that is still the current
   * token is it dropped and a refresh made: a storm of 401s for one token makes one refresh,
   * and a 401 for a token already replaced makes none (the current one may be replayed).
   * A token our clock still trusts is dropped at most once per refresh floor; inside it the
   * token is kept and false returned, so the client gets Keap's 401 and nothing rotates.
   * Returns true when a credential other than `used` is usable now.
   */
  async invalidate(used: Credential): Promise<boolean> {
    const grant = this.grant;
    if (used.kind !== 'bearer' || grant === undefined) return false;
    const isCurrent = used.generation === this.generation;
    // A token already dropped (a refresh for it runs or failed) or expired by our own clock needs no floor.
    if (isCurrent && grant.accessToken === used.token && this.usable(grant)) {
      const now = this.now();
      const since = this.lastRejectedAt === undefined ? Infinity : now - this.lastRejectedAt;
      if (since < this.refreshFloorMs) {
        this.options.logger.warn(
          {
            event: 'refresh_floor',
            generation: used.generation,
            floorMs: this.refreshFloorMs,
            retryInMs: Math.ceil(this.refreshFloorMs - since),
          },
          'Keap rejected an access token that has not expired, again within the refresh floor: not refreshing; the client gets the 401',
        );
        return false;
      }
      this.lastRejectedAt = now;
      this.grant = { ...grant, accessExpiresAt: 0 };
      this.credential = undefined;
      this.options.logger.info(
        { event: 'token_rejected', generation: used.generation },
        'Keap rejected the access token: refreshing',
      );
    }
    if (isCurrent && this.now() >= this.nextAttemptAt) await this.refresh().catch(() => undefined);
    const next = this.current();
    return next?.kind === 'bearer' && next.token !== used.token;
  }

  /** A token the gateway let through needs nothing: its expiry and Keap's 401s say when it is done. */
  accepted(): void {}

  readiness(): Readiness {
    const grant = this.grant;
    const now = this.now();
    const details: Record<string, unknown> = {
      mode: 'oauth',
      state: this.state.kind,
      // Only times that were set: a token dropped after Keap rejected it (its expiry zeroed), a
      // seed with no access token yet or an empty grant would show an age of decades.
      accessTokenExpiresInSeconds:
        grant !== undefined && grant.accessToken !== '' && grant.accessExpiresAt > 0
          ? Math.round((grant.accessExpiresAt - now) / SECOND)
          : null,
      refreshTokenAgeSeconds:
        grant !== undefined && grant.refreshToken !== '' && grant.refreshIssuedAt > 0
          ? Math.round((now - grant.refreshIssuedAt) / SECOND)
          : null,
      lastRefreshAt: this.lastRefreshAt !== undefined ? new Date(this.lastRefreshAt).toISOString() : null,
      refreshFailures: this.failures,
      tenant: grant !== undefined ? (tenantOf(grant) ?? null) : null,
    };
    if (grant !== undefined && this.usable(grant)) return { ready: true, details };
    const err = this.unavailable();
    return { ready: false, code: err.code, message: err.message, details };
  }

  tenant(): string {
    return (this.grant !== undefined ? tenantOf(this.grant) : undefined) ?? 'unknown';
  }

  /** A grant obtained by authorization (callback or `keap-proxy auth`): stored, then used. */
  async adoptGrant(grant: Grant): Promise<void> {
    checkGrantApp(grant, this.options.app);
    await this.options.store.withLock(() => this.options.store.save(grant));
    this.useGrant(grant);
    this.options.logger.info({ event: 'grant_adopted', tenant: tenantOf(grant) }, 'new grant stored and in use');
  }

  /**
   * The store came back without the grant, or with an older one (a Redis restarted with no
   * persistence): the grant held here is written back, so the next refresh, by any replica,
   * uses the live refresh token. Never over a newer grant. True when it wrote.
   */
  async writeBackHeldGrant(): Promise<boolean> {
    const { store, logger } = this.options;
    const held = this.grant;
    if (held === undefined || held.accessToken === '') return false;
    const wrote = await store.withLock(async () => {
      const stored = await store.load();
      // Only over a grant that is plainly older: within the clocks' disagreement the store's wins.
      if (stored !== undefined && (stored.refreshToken === held.refreshToken || supersedes(stored, held))) return false;
      // Ours may have been rotated while we waited for the lock: only this one's grant is written.
      if (this.grant !== held) return false;
      await store.save(held);
      return true;
    });
    if (wrote)
      logger.warn(
        { event: 'grant_written_back', store: store.location, tenant: tenantOf(held) },
        'the token store had lost the grant (or held an older one): the grant in use here was written back',
      );
    return wrote;
  }

  /** One refresh for every caller that asks while it runs. */
  refresh(): Promise<void> {
    this.inFlight ??= this.refreshOnce().finally(() => {
      this.inFlight = undefined;
      this.schedule();
    });
    return this.inFlight;
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    clearInterval(this.pollTimer);
  }

  private async refreshOnce(): Promise<void> {
    const { store, logger } = this.options;
    try {
      await store.withLock(async () => {
        if (this.unsaved !== undefined) {
          await this.saveAndUse(this.unsaved, 'grant_saved');
          return;
        }
        // Another process may have refreshed while we waited for the lock: its grant wins.
        if (await this.adoptNewerStoredGrant()) return;
        await this.refreshWithKeap();
      });
    } catch (err) {
      this.onRefreshFailure(err);
      throw err;
    }
    logger.debug({ event: 'refresh_done', generation: this.generation }, 'refresh finished');
  }

  private async refreshWithKeap(): Promise<void> {
    const grant = this.grant;
    if (grant === undefined) return;
    let next: Grant;
    try {
      next = await this.options.client.refresh(grant.refreshToken);
    } catch (err) {
      // A dead refresh token may only mean someone rotated it behind our back: look before giving up.
      if (err instanceof TokenEndpointError && err.failure === 'invalid_grant' && (await this.adoptNewerStoredGrant()))
        return;
      throw err;
    }
    this.unsaved = next;
    await this.saveAndUse(next, 'token_refreshed');
  }

  private async saveAndUse(grant: Grant, event: string): Promise<void> {
    // Keap has already killed the old refresh token: the new grant must be durable before
    // anything uses it, or a crash now would lose the account.
    await this.options.store.save(grant);
    this.unsaved = undefined;
    this.lastRefreshAt = this.now();
    this.useGrant(grant);
    this.options.onRefresh?.('success');
    this.options.logger.info(
      { event, expiresInSeconds: Math.round((grant.accessExpiresAt - this.now()) / SECOND), tenant: tenantOf(grant) },
      'access token refreshed and stored',
    );
  }

  /** Uses the stored grant if it is newer than ours (another process refreshed, or someone authorized). */
  private async adoptNewerStoredGrant(): Promise<boolean> {
    const stored = await this.options.store.load().catch(() => undefined);
    const ours = this.grant;
    if (stored === undefined || (ours !== undefined && !supersedes(stored, ours))) return false;
    this.useGrant(stored);
    this.options.onRefresh?.('reloaded');
    this.options.logger.info(
      { event: 'grant_reloaded', tenant: tenantOf(stored) },
      'a newer grant was found in the token store',
    );
    if (this.usable(stored)) return true;
    await this.refreshWithKeap();
    return true;
  }

  private useGrant(grant: Grant): void {
    this.grant = grant;
    this.credential = undefined;
    this.generation += 1;
    this.failures = 0;
    this.nextAttemptAt = 0;
    this.state = { kind: 'ready' };
    clearInterval(this.pollTimer);
    this.pollTimer = undefined;
  }

  private onRefreshFailure(err: unknown): void {
    const { logger } = this.options;
    this.options.onRefresh?.(
      err instanceof TokenEndpointError && err.failure !== 'unavailable' ? 'invalid_grant' : 'failure',
    );
    if (err instanceof TokenEndpointError && err.failure !== 'unavailable') {
      logger.error({ event: 'token_refresh_failed', failure: err.failure, status: err.status }, err.message);
      this.needReauthorization(
        err.failure === 'invalid_client'
          ? 'Keap rejected the client credentials (check KEAP_CLIENT_ID and KEAP_CLIENT_SECRET)'
          : 'Keap no longer accepts the refresh token (invalid_grant)',
      );
      return;
    }
    this.failures += 1;
    // Exponential backoff with jitter (1 s, 2 s, 4 s ... 1 min): an outage is not hammered.
    const base = Math.min(MINUTE, SECOND * 2 ** Math.min(this.failures - 1, 6));
    this.nextAttemptAt = this.now() + base / 2 + Math.random() * (base / 2);
    const reason =
      this.unsaved !== undefined
        ? 'the token store cannot be written; the new grant is kept in memory and saved again'
        : err instanceof Error
          ? err.message
          : String(err);
    this.state = { kind: 'degraded', reason };
    // A redirect is named by its host, so an operator sees where the token endpoint tried to send the credentials.
    const redirectHost = err instanceof TokenEndpointError ? err.redirectHost : undefined;
    logger.warn(
      {
        event: 'token_refresh_failed',
        failure: 'unavailable',
        attempt: this.failures,
        retryInMs: Math.round(this.nextAttemptAt - this.now()),
        ...(redirectHost !== undefined && { redirectHost }),
      },
      reason,
    );
  }

  private needReauthorization(reason: string): void {
    this.state = { kind: 'reauthorization_required', reason };
    this.options.logger.error(
      { event: 'reauthorization_required', store: this.options.store.location },
      `${reason}: authorize again with \`keap-proxy auth\` or /oauth/start; the proxy resumes by itself once a new grant is stored`,
    );
    this.watchStore();
  }

  /** Recovery without a restart: a new grant stored by `keap-proxy auth` (or another replica) is picked up. */
  private watchStore(): void {
    if (this.pollTimer !== undefined || this.stopped) return;
    this.pollTimer = setInterval(() => {
      void this.options.store
        .withLock(() => this.adoptNewerStoredGrant())
        .then((adopted) => {
          if (adopted) this.schedule();
        })
        .catch(() => undefined);
    }, this.storePollMs);
    this.pollTimer.unref();
  }

  /** True while the access token is good for at least a little longer (a margin for the trip to Keap). */
  private usable(grant: Grant): boolean {
    const skew = Math.min(SECOND, refreshMargin(grant) / 2);
    return grant.accessToken !== '' && this.now() < grant.accessExpiresAt - skew;
  }

  /** The next proactive refresh: ahead of expiry, at least weekly, or a backoff retry after a failure. */
  private schedule(): void {
    clearTimeout(this.timer);
    const grant = this.grant;
    if (grant === undefined || this.stopped || this.state.kind === 'reauthorization_required') return;
    const now = this.now();
    const age = now - grant.refreshIssuedAt;
    if (age > REFRESH_TOKEN_WARN_AGE) {
      this.options.logger.warn(
        { event: 'refresh_token_aging', refreshTokenAgeDays: Math.floor(age / DAY) },
        'the refresh token is over 30 days old and Keap lets it live 45: check why refreshes fail',
      );
    }
    const due =
      this.failures > 0
        ? this.nextAttemptAt
        : Math.min(grant.accessExpiresAt - refreshMargin(grant), grant.refreshIssuedAt + this.maxRefreshIntervalMs);
    this.timer = setTimeout(
      () => {
        this.refresh().catch(() => undefined);
      },
      Math.min(Math.max(0, due - now), 2 ** 31 - 1),
    );
    this.timer.unref();
  }

  private unavailable(): NoCredential {
    if (this.state.kind === 'reauthorization_required') {
      return new NoCredential(
        'reauthorization_required',
        `Keap authorization is needed: ${this.state.reason}. An operator must run \`keap-proxy auth\` (or open /oauth/start); the proxy resumes by itself once a new grant is stored.`,
        60,
      );
    }
    const wait = Math.max(1, Math.ceil((this.nextAttemptAt - this.now()) / SECOND));
    const why = this.state.kind === 'degraded' ? this.state.reason : 'no access token yet';
    return new NoCredential(
      'token_unavailable',
      `No valid Keap access token right now (${why}). Retry after the indicated time.`,
      Math.min(wait, 60),
    );
  }
}

/**
 * Clocks of replicas on different machines disagree by seconds, sometimes minutes; a grant is
 * dated by the clock of the replica that got it. Only a gap larger than this says which of
 * two grants is older: one refresh apart is at least the access token's refresh margin.
 */
const CLOCK_SKEW_ALLOWANCE_MS = 10 * 60_000;

/**
 * Whether `candidate` should replace `current`. A different grant in the store was saved by
 * whoever last held the lock, so it wins, unless `current` is plainly newer (a store that
 * came back from an older state). A seed (no access token yet) is dated when its process
 * started, not when Keap issued it: any stored grant supersedes it.
 */
export function supersedes(candidate: Grant, current: Grant): boolean {
  if (candidate.refreshToken === current.refreshToken) return false;
  if (current.accessToken === '') return true;
  return current.refreshIssuedAt <= candidate.refreshIssuedAt + CLOCK_SKEW_ALLOWANCE_MS;
}
