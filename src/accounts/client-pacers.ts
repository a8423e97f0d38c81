// Accounts that use the same OAuth client share what Keap meters per client (its spike limit,
// per-minute throttle and daily quota): their pacers are fair shares of one SharedClient
// (pacing/fair-share.ts), weighted per account, each still under its own tenant limits. An
// account alone on its client, or in key mode, keeps a pacer of its own, as with one account.
import { createHash } from 'node:crypto';
import type { AccountConfig, Config } from '../config/config.js';
import type { Logger } from '../observability/log.js';
import { SharedClient, clientLimits } from '../pacing/fair-share.js';
import type { Pacer } from '../pacing/pacer.js';
import { RedisGate } from '../pacing/redis-gate.js';
import { createAccountPacer } from './open-account.js';

export class ClientPacers {
  private readonly clients = new Map<string, SharedClient>();
  /** Accounts per OAuth client id, in the configuration as it stands. */
  private sharing = new Map<string, number>();
  /** A fresh name per share: an account made again while its last instance drains takes a second one. */
  private made = 0;

  constructor(
    private readonly config: Config,
    private readonly logger: Logger,
    private readonly now?: () => number,
  ) {
    this.configure(config.accounts);
  }

  /** Which clients are shared: called again on a reload. */
  configure(accounts: readonly AccountConfig[]): void {
    this.sharing = new Map();
    for (const a of accounts)
      if (a.credentials.mode === 'oauth' && a.pacing.perSecond > 0)
        this.sharing.set(a.credentials.clientId, (this.sharing.get(a.credentials.clientId) ?? 0) + 1);
  }

  /** The pacer of an account being made: a fair share of its client's budget when the client is shared. */
  pacerFor(spec: AccountConfig): Pacer {
    const c = spec.credentials;
    if (c.mode !== 'oauth' || (this.sharing.get(c.clientId) ?? 0) < 2)
      return createAccountPacer(spec, this.config, this.logger);
    let client = this.clients.get(c.clientId);
    if (client === undefined) {
      // The client's limits are its first account's (they inherit the same settings unless set apart).
      const limits = spec.pacing;
      const redis = this.config.redis.url;
      const gate =
        redis === undefined
          ? undefined
          : new RedisGate(clientLimits(limits), this.logger, {
              redis,
              prefix: this.config.redis.prefix,
              key: createHash('sha256').update(`client:${c.clientId}`).digest('hex').slice(0, 24),
              replicas: this.config.replicas,
            });
      client = new SharedClient(limits, this.logger, this.now, gate);
      this.clients.set(c.clientId, client);
    }
    this.made += 1;
    return client.pacerFor(`${spec.id}#${this.made}`, {
      weight: spec.weight,
      tenant: {
        perMinute: spec.pacing.tenantPerMinute,
        perDay: spec.pacing.tenantPerDay,
        explicit: spec.pacing.explicit,
      },
      queueLimit: spec.pacing.queueLimit,
    });
  }

  async stop(): Promise<void> {
    await Promise.all([...this.clients.values()].map((c) => c.stop()));
    this.clients.clear();
  }
}
