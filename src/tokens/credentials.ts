// What the pipeline injects into each request: a bearer token from the TokenBroker
// (OAuth mode) or the account's key (key mode).
import type { Logger } from '../observability/log.js';

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
  invalidate(used: Credential): Promise<boolean>;
  readiness(): Readiness;
  /** The Keap account requests go to, for metrics and per-tenant queues. */
  tenant(): string;
  stop(): void;
}

/** Key mode: a PAT, Service Account Key or legacy Encrypted Key never expires on our side. */
export class StaticKeySource implements CredentialSource {
  readonly mode = 'key' as const;
  private readonly credential: Credential;

  constructor(
    key: string,
    private readonly logger: Logger,
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

  /** A key cannot be refreshed: its 401 goes to the client. */
  invalidate(): Promise<boolean> {
    return Promise.resolve(false);
  }

  readiness(): Readiness {
    return { ready: true, details: { mode: 'key' } };
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
