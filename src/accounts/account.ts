// Everything that belongs to one Keap account, reached through one object: a stage at the
// start of the pipeline (pipeline/stages.ts, resolveAccount) puts it on the exchange, and
// every later stage and response handler takes the account's parts from there.
import { CacheRules } from '../cache/cache-rules.js';
import type { AccountConfig } from '../config/config.js';
import { ContactModel } from '../keap/translate/contact-model.js';
import type { Logger } from '../observability/log.js';
import type { Pacer } from '../pacing/pacer.js';
import type { CredentialSource } from '../tokens/credentials.js';
import type { TokenBroker } from '../tokens/token-broker.js';
import type { TokenClient } from '../tokens/token-client.js';
import { XmlRpcEndpoint } from './xmlrpc-endpoint.js';

export interface AccountParts {
  /** What the account was configured with; undefined for accounts tests build by hand. */
  config?: AccountConfig;
  /** OAuth mode: the broker and client behind /oauth/start and `auth` for this account. */
  broker?: TokenBroker | undefined;
  tokenClient?: TokenClient | undefined;
  /** Redis token store: whether it is connected now (for /readyz). */
  storeConnected?: (() => boolean | undefined) | undefined;
  /** Closes what its token store opened. */
  closeStore?: (() => Promise<void>) | undefined;
  /** Its logger: with `{account: id}` bound for every account but the default one. */
  logger?: Logger | undefined;
  /** Its CACHE_RULES, compiled; none: nothing of its GETs is cached. */
  cacheRules?: CacheRules | undefined;
}

export class Account {
  /** The account's custom contact fields, for translated XML-RPC calls that name one. */
  readonly contactModel = new ContactModel();
  /** What was seen of Keap's XML-RPC endpoint for this account (XMLRPC_MODE=fallback). */
  readonly xmlrpcEndpoint = new XmlRpcEndpoint();
  /** What of its GETs is cached (its own CACHE_RULES), in the cache every account shares. */
  readonly cacheRules: CacheRules;
  /** Requests of this account now in the pipeline: an account let go waits for them. */
  inFlight = 0;
  private stopped: Promise<void> | undefined;

  constructor(
    /** The registry's name for the account ("default" for the one the settings configure). */
    readonly id: string,
    /** Bearer tokens from a broker, or a static key. */
    readonly credentials: CredentialSource,
    /** This account's share of Keap's quotas. */
    readonly pacer: Pacer,
    readonly parts: AccountParts = {},
  ) {
    this.cacheRules = parts.cacheRules ?? CacheRules.none;
  }

  /** Names the account in logs and metrics: the Keap tenant behind its credential once known. */
  label(): string {
    return this.credentials.tenant();
  }

  /**
   * Cached answers are kept apart per Keap tenant: a grant replaced by one for another Keap
   * account must not be served the first one's answers. With several accounts the id comes
   * first: two accounts never share an answer.
   */
  cacheNamespace(): string {
    return this.id === 'default' ? this.credentials.tenant() : `${this.id}|${this.credentials.tenant()}`;
  }

  /** How XML-RPC calls to this account are served. */
  get xmlrpcMode(): AccountConfig['xmlrpcMode'] {
    return this.parts.config?.xmlrpcMode ?? 'passthrough';
  }

  start(): Promise<void> {
    return this.credentials.start();
  }

  /** Stops its timers, queue and store connections; once, however often it is asked. */
  stop(): Promise<void> {
    this.stopped ??= (async () => {
      this.credentials.stop();
      await this.pacer.stop();
      await this.parts.closeStore?.();
    })();
    return this.stopped;
  }
}
