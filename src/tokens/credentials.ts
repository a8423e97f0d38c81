// What the pipeline injects into each request: a bearer token from the TokenBroker
// (OAuth mode) or the account's key (key mode).
import type { Logger } from '../observability/log.js';

export interface KeyRejectionPolicy {
  /** While Keap's gateway rejects the key, a warning at most this often (the count of rejections since on each). */
  warnEveryMs: number;
}

/** Key mode: a key Keap's gateway rejects turns /readyz red (key_rejected) until a call it lets through. */
export const KEY_REJECTION: KeyRejectionPolicy = {
  warnEveryMs: 60_000,
};

export type Credential = { kind: 'bearer'; token: string; generation: number } | { kind: 'key'; key: string };

export interface Readiness {
  ready: boolean;
  /** Machine-readable reason when not ready (also the error code clients get). */
  code?: string;
  message?: string;
  details: Record<string, unknown>;
}

export interface CredentialSource {
  readonly mode: 'oauth' | 'key';
  start(): Promise<void>;
  /** The credential when one is usable right now without waiting (the hot path), else undefined. */
  current(): Credential | undefined;
  /** A credential usable right now, waiting for a refresh if need be; throws NoCredential when there is none. */
  get(): Promise<Credential>;
  /**
   * Keap's gateway rejected `used` (a token fault): drop it and get a new one if that helps.
   * True when a credential other than `used` is usable now, so a replay may use it.
   */
  invalidate(used: Credential, errorcode?: string): Promise<boolean>;
  /** Keap's gateway let `used` through (its answer was not the gateway's 401): for a key, the end of a rejection. */
  accepted(used: Credential): void;
  readiness(): Readiness;
  /** The Keap account requests go to, for metrics and per-tenant queues. */
  tenant(): string;
  stop(): void;
}

/**
 * Key mode: a PAT, Service Account Key or legacy Encrypted Key never expires on our side. Keap
 * may still reject it (revoked, mistyped): while its gateway answers every call with a token
 * fault, /readyz says `key_rejected` and a warning is logged at most once per
 * KEY_REJECTION.warnEveryMs; the next call the gateway lets through turns it green again.
 */
export class StaticKeySource implements CredentialSource {
  readonly mode = 'key' as const;
  private readonly credential: Credential;
  /** Since when, and with which of Apigee's errorcodes, Keap has rejected the key; undefined while it accepts it. */
  private rejection: { since: number; errorcode: string | undefined } | undefined;
  private lastWarnedAt = -Infinity;
  /** Rejections since the last warning. */
  private unwarned = 0;

  constructor(
    key: string,
    private readonly logger: Logger,
    private readonly now: () => number = Date.now,
    private readonly policy: KeyRejectionPolicy = KEY_REJECTION,
  ) {
    this.credential = { kind: 'key', key };
  }

  async start(): Promise<void> {
    this.logger.info({ event: 'credential_ready', mode: 'key' }, 'using the configured API key');
  }

  current(): Credential {
    return this.credential;
  }

  get(): Promise<Credential> {
    return Promise.resolve(this.credential);
  }

  /** A key cannot be refreshed: its 401 goes to the client, and the key is known to be rejected until Keap accepts it again. */
  invalidate(_used: Credential, errorcode?: string): Promise<boolean> {
    const now = this.now();
    this.rejection ??= { since: now, errorcode };
    this.rejection.errorcode = errorcode;
    this.unwarned += 1;
    if (now - this.lastWarnedAt >= this.policy.warnEveryMs) {
      // The errorcode is Apigee's (from a fixed list); never the key, nor the body.
      this.logger.warn(
        {
          event: 'key_rejected',
          errorcode,
          rejections: this.unwarned,
          rejectedSince: new Date(this.rejection.since).toISOString(),
        },
        "Keap's gateway rejects the configured API key: /readyz says key_rejected until a call is accepted; check KEAP_API_KEY (revoked, expired or mistyped)",
      );
      this.lastWarnedAt = now;
      this.unwarned = 0;
    }
    return Promise.resolve(false);
  }

  accepted(): void {
    const rejection = this.rejection;
    if (rejection === undefined) return;
    this.rejection = undefined;
    this.unwarned = 0;
    this.lastWarnedAt = -Infinity;
    this.logger.info(
      { event: 'key_accepted', rejectedSince: new Date(rejection.since).toISOString() },
      "Keap's gateway accepts the API key again: /readyz is green",
    );
  }

  readiness(): Readiness {
    const rejection = this.rejection;
    if (rejection === undefined) return { ready: true, details: { mode: 'key' } };
    return {
      ready: false,
      code: 'key_rejected',
      message:
        "Keap's gateway rejects the configured API key (every call gets its 401); check KEAP_API_KEY. The next call Keap accepts turns this ready again.",
      details: {
        mode: 'key',
        errorcode: rejection.errorcode ?? null,
        rejectedSince: new Date(rejection.since).toISOString(),
      },
    };
  }

  /** A key belongs to one account, which Keap names only in its responses' x-keap-tenant-id. */
  tenant(): string {
    return 'key';
  }

  stop(): void {}
}

/** No credential can be used now; `code` is also the error code clients and /readyz see. */
export class NoCredential extends Error {
  constructor(
    readonly code: 'reauthorization_required' | 'token_unavailable',
    message: string,
    /** When asking again may succeed, in whole seconds. */
    readonly retryAfterSeconds: number,
  ) {
    super(message);
    this.name = 'NoCredential';
  }
}
