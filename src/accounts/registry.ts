// The accounts this proxy serves, and which one a request is for: by the port it came in on,
// by its path prefix `/accounts/<id>/` (removed before forwarding), by its host name, or the
// account the settings configure (`default`, at `/`). An account's state (grant, queue,
// connections) is made when it is first used and held in an LRU: 10,000 configured accounts
// cost memory only for the active ones. One let go waits for its requests in flight.
import type { IncomingMessage } from 'node:http';
import { LRUCache } from 'lru-cache';
import { DEFAULT_ACCOUNT, type AccountConfig } from '../config/config.js';
import type { Logger } from '../observability/log.js';
import type { Account } from './account.js';

const PREFIX = '/accounts/';

/** Why a request found no account: none named (and no default), or one named that is not configured. */
export type NoAccount = { kind: 'none' } | { kind: 'unknown'; id: string };

export interface RegistryOptions {
  /** Most accounts held at once (ACCOUNTS_ACTIVE_MAX); the default account is always held. */
  maxActive: number;
  logger: Logger;
  /** Makes an account's state from its configuration (not yet started). */
  open: (spec: AccountConfig) => Account;
}

export class AccountRegistry {
  private specs = new Map<string, AccountConfig>();
  private byHost = new Map<string, string>();
  private byPort = new Map<number, string>();
  /** The default account: made at start and never let go. */
  private pinned: Account | undefined;
  private readonly live: LRUCache<string, Account>;
  private readonly starting = new Map<string, Promise<Account>>();
  /** Accounts let go (evicted or removed) with requests still in flight. */
  private readonly draining = new Set<Account>();
  private readonly options: RegistryOptions;

  constructor(specs: readonly AccountConfig[], options: RegistryOptions);
  /** One account built by hand (tests): served at `/`. */
  constructor(accounts: readonly Account[]);
  constructor(specsOrAccounts: readonly AccountConfig[] | readonly Account[], options?: RegistryOptions) {
    this.options = options ?? {
      maxActive: 1,
      logger: undefined as unknown as Logger,
      open: () => {
        throw new Error('accounts built by hand are all given');
      },
    };
    this.live = new LRUCache<string, Account>({
      max: Math.max(1, this.options.maxActive),
      dispose: (account, _id, reason) => {
        if (reason === 'evict' || reason === 'delete') this.letGo(account);
      },
    });
    if (options === undefined) {
      const [only] = specsOrAccounts as readonly Account[];
      if (only === undefined || specsOrAccounts.length !== 1) throw new Error('one account, built by hand');
      this.pinned = only;
      return;
    }
    this.configure(specsOrAccounts as readonly AccountConfig[]);
    const dflt = this.specs.get(DEFAULT_ACCOUNT);
    if (dflt !== undefined) this.pinned = options.open(dflt);
  }

  private configure(specs: readonly AccountConfig[]): void {
    this.specs = new Map(specs.map((s) => [s.id, s]));
    this.byHost = new Map(specs.flatMap((s) => s.hosts.map((h): [string, string] => [h, s.id])));
    this.byPort = new Map(specs.flatMap((s) => (s.port === undefined ? [] : [[s.port, s.id] as [number, string]])));
  }

  /**
   * The account a request is for, made and started if need be; or why there is none. A path
   * prefix `/accounts/<id>` is taken off `req.url` here, so the rest of the pipeline sees the
   * path Keap is to get.
   */
  resolve(req: IncomingMessage): Account | Promise<Account> | NoAccount {
    if (this.byPort.size > 0) {
      const id = this.byPort.get(req.socket.localPort ?? -1);
      if (id !== undefined) return this.get(id) ?? { kind: 'unknown', id };
    }
    const url = req.url ?? '/';
    if (url.startsWith(PREFIX) && this.specs.size > 0) {
      const end = url.indexOf('/', PREFIX.length);
      const stop = end < 0 ? (url.indexOf('?') < 0 ? url.length : url.indexOf('?')) : end;
      const id = decodeURIComponentSafe(url.slice(PREFIX.length, stop));
      const found = id === undefined ? undefined : this.get(id);
      if (found === undefined) return { kind: 'unknown', id: id ?? url.slice(PREFIX.length, stop) };
      const rest = url.slice(stop);
      req.url = rest === '' || rest.startsWith('?') ? `/${rest}` : rest;
      return found;
    }
    if (this.byHost.size > 0) {
      const host = hostName(req.headers.host);
      const id = host === undefined ? undefined : this.byHost.get(host);
      if (id !== undefined) return this.get(id) ?? { kind: 'unknown', id };
    }
    return this.pinned ?? { kind: 'none' };
  }

  /** The account a request's port or host name belongs to, if one does (for the local endpoints). */
  listenerAccount(req: IncomingMessage): string | undefined {
    const byPort = this.byPort.size > 0 ? this.byPort.get(req.socket.localPort ?? -1) : undefined;
    if (byPort !== undefined) return byPort;
    const host = this.byHost.size > 0 ? hostName(req.headers.host) : undefined;
    return host === undefined ? undefined : this.byHost.get(host);
  }

  /** The account of this id, made and started if need be; undefined when none is configured. */
  get(id: string): Account | Promise<Account> | undefined {
    if (this.pinned !== undefined && this.pinned.id === id) return this.pinned;
    const held = this.live.get(id);
    if (held !== undefined) return held;
    const spec = this.specs.get(id);
    if (spec === undefined) return undefined;
    let pending = this.starting.get(id);
    if (pending === undefined) {
      const account = this.options.open(spec);
      pending = account.start().then(
        () => {
          this.starting.delete(id);
          // Removed or replaced by a reload while it started: it serves this request, then goes.
          if (this.specs.get(id) === spec) this.live.set(id, account);
          else this.letGo(account);
          return account;
        },
        (err: unknown) => {
          this.starting.delete(id);
          void account.stop();
          throw err;
        },
      );
      this.starting.set(id, pending);
    }
    return pending;
  }

  /** The account the local endpoints speak for when none is named: the default one. */
  get primary(): Account | undefined {
    return this.pinned;
  }

  /** Accounts whose state is held now (the default one first). */
  all(): readonly Account[] {
    return [...(this.pinned !== undefined ? [this.pinned] : []), ...this.live.values()];
  }

  /** Every configured account's id, in configuration order. */
  ids(): string[] {
    return this.pinned !== undefined && !this.specs.has(this.pinned.id)
      ? [this.pinned.id, ...this.specs.keys()]
      : [...this.specs.keys()];
  }

  config(id: string): AccountConfig | undefined {
    return this.specs.get(id);
  }

  /** The XML-RPC modes the accounts use: the pipeline holds the stages they need. */
  xmlrpcModes(): Set<AccountConfig['xmlrpcMode']> {
    const modes = new Set([...this.specs.values()].map((s) => s.xmlrpcMode));
    if (this.pinned !== undefined) modes.add(this.pinned.xmlrpcMode);
    return modes;
  }

  /** Whether any account is in key mode (its answers are judged for the key). */
  usesKeys(): boolean {
    return (
      [...this.specs.values()].some((s) => s.credentials.mode === 'key') || this.pinned?.credentials.mode === 'key'
    );
  }

  /** Whether any account is paced (the pipeline holds the pacing stage only then). */
  pacing(): boolean {
    return [...this.specs.values()].some((s) => s.pacing.perSecond > 0) || (this.pinned?.pacer.enabled ?? false);
  }

  /** Whether any account has cache rules (the pipeline holds the cache stage only then). */
  caching(): boolean {
    return [...this.specs.values()].some((s) => s.cacheRules !== '') || (this.pinned?.cacheRules.enabled ?? false);
  }

  /** Ports accounts have listeners of their own on. */
  ports(): number[] {
    return [...this.byPort.keys()];
  }

  /**
   * A new configuration (ACCOUNTS_FILE reloaded): added accounts are served from now on;
   * removed or changed ones are let go, each after its requests in flight. The default account
   * (the settings', not the file's) stays as it is.
   */
  reload(specs: readonly AccountConfig[]): { added: string[]; removed: string[]; changed: string[] } {
    const before = this.specs;
    const next = specs.filter((s) => s.id !== DEFAULT_ACCOUNT || this.pinned === undefined);
    if (this.pinned !== undefined) {
      const kept = before.get(this.pinned.id);
      if (kept !== undefined) next.unshift(kept);
    }
    this.configure(next);
    const added = next.filter((s) => !before.has(s.id)).map((s) => s.id);
    const removed = [...before.keys()].filter((id) => !this.specs.has(id));
    const changed = next
      .filter((s) => before.has(s.id) && JSON.stringify(before.get(s.id)) !== JSON.stringify(s))
      .map((s) => s.id);
    for (const id of [...removed, ...changed]) if (id !== this.pinned?.id) this.live.delete(id);
    return { added, removed, changed };
  }

  /** Requests in flight of accounts let go, and those accounts' number. */
  drainingCount(): number {
    return this.draining.size;
  }

  /** A request of `account` ended: an account let go stops once its last one has. */
  released(account: Account): void {
    account.inFlight -= 1;
    if (account.inFlight === 0 && this.draining.delete(account)) void account.stop();
  }

  async stop(): Promise<void> {
    const all = [...this.all(), ...this.draining];
    this.live.clear();
    await Promise.all(all.map((a) => a.stop()));
  }

  private letGo(account: Account): void {
    if (account.inFlight > 0) this.draining.add(account);
    else void account.stop();
  }
}

function hostName(host: string | undefined): string | undefined {
  if (host === undefined) return undefined;
  const lower = host.toLowerCase();
  if (lower.startsWith('[')) return lower.slice(0, lower.indexOf(']') + 1);
  const colon = lower.indexOf(':');
  return colon < 0 ? lower : lower.slice(0, colon);
}

/** An account id as a path segment carries it, or undefined when the segment is not valid percent-encoding. */
export function decodeURIComponentSafe(text: string): string | undefined {
  try {
    return decodeURIComponent(text);
  } catch {
    return undefined;
  }
}
