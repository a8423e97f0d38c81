// Global pacing: one budget for every replica of one Keap client and tenant, kept in Redis.
//
// Why a Lua gate and not bottleneck's Redis clustering: measured with bench/pacing-cluster.ts
// (`npm run build && node dist/bench/pacing-cluster.js`: three limiters on their own
// connections, 20/s and 300/min, a backlog each; Redis 7.0.15, a loaded 2-core VM, 3 runs):
//
//                                          bottleneck cluster        Lua gate (this file)
//   rate achieved, 10 s (allowed 20/s)      20.01/s                   19.57-19.73/s booked
//   most departures in any 1 s              21 (24 under load)        20
//   smallest gap (allowed 50 ms)            19.8-42.5 ms (0.0 loaded) 50.0 ms booked
//   gaps under 49 ms, of 200                29-48                     0
//   most in any rolling 60 s (cap 300)      600                       300 booked
//   where the day ends                      24 h after its start      00:00 UTC
//   keys deleted mid-run                    ~6,000 errors in 4 s,     none, full rate
//                                           half the rate
//
// bottleneck reserves each slot in Redis and leaves it to the caller's timer: a late timer and
// an on-time one put two calls closer than the spike arrest's interval (Keap smooths 25/s to
// one per 40 ms). Its only window is a reservoir refilled on a fixed interval counted from its
// own start: a backlog that drains it just before the refill departs twice the cap within 60 s,
// and its day ends 24 h after the limiter started, not at 00:00 UTC. Keap's reports (others'
// usage, lower limits) and a shared 429 pause would need keys of our own beside it. On Redis 7
// its scripts' errors come back as "ERR SETTINGS_KEY_NOT_FOUND", which it does not recognise,
// so once its keys are gone (a restart without persistence, an eviction) it fails call after
// call. The gate books a departure only when it is due, so lateness makes it slower (1-2 % here,
// with no margin), never bunched; with RATE_LIMIT_MARGIN's late allowance it keeps Keap's own
// interval. It is LocalGate's logic (gate.ts) as one Lua script per call, atomic in Redis.
//
// Keys, per budget (`${prefix}pace:{${key}}:…`, one hash tag so Redis Cluster keeps them on one node):
//   state   hash: slot (next departure), paused (Keap's 429), dayx (day spent until), extCount and
//           extAt (others' calls in Keap's minute window, when reported), minuteLimit, dayLimit
//           (Keap's reported limits), seq; expires 2 days after the last write.
//   minute  sorted set of departures (score = time), trimmed to the rolling minute in each call.
//   day     hash: day (UTC day number), used, resetsAt; expires the day after.
//
// Clock: the script reads Redis TIME, so every replica books on one clock. With the callers'
// clocks, a replica whose clock runs ahead by more than the spacing (40 ms at 25/s) would see a
// slot as due that is not, and departures from two replicas would bunch. Answers carry Redis's
// time with them and are turned into waits on the caller's clock (durations, not instants, cross
// the boundary). The caller's clock can be chosen instead (`clock: 'caller'`) for tests that
// move time, or a deployment of one host. (TIME before a write needs Redis 5 or newer, or 3.2
// with the replicate_commands() the script calls.)
//
// Redis away (a command error or timeout): the gate falls back to a LocalGate keeping each
// limit ÷ `replicas`, logs pacing_fallback once, asks Redis again every `probeMs`, and when it
// answers adds what this replica booked meanwhile to the shared minute and day, logs
// pacing_shared and books there again. A Redis that lost its keys (restart, eviction, an
// operator's DEL) starts the budget afresh; Keap's next quota report raises the day count again.
import { createHash } from 'node:crypto';
import { Redis, type Cluster, type RedisOptions } from 'ioredis';
import type { Logger } from '../observability/log.js';
import type { QuotaReport } from '../keap/keap-quota.js';
import {
  BudgetLog,
  LocalGate,
  configuredBudget,
  logDaySpent,
  pacePerSecond,
  readReport,
  type Booking,
  type DepartureGate,
  type GateMode,
  type PaceLimits,
} from './gate.js';

export interface RedisGateOptions {
  /**
   * An ioredis client (or Cluster: the keys of one budget share a hash tag), or a redis:// URL
   * from which the gate makes its own (with
   * pacingRedisOptions(), closed in stop()). A client of the caller's should fail fast as those
   * options do (no offline queue, a short command timeout), or a down Redis holds bookings up.
   */
  redis: Redis | Cluster | string;
  /** Put before every key (REDIS_PREFIX, e.g. "keap-proxy:"). */
  prefix: string;
  /** Names the budget: replicas with the same key (one Keap client id and tenant) share it. */
  key: string;
  /** How many replicas share the budget: while Redis is away each keeps to limit ÷ replicas. */
  replicas: number;
  /** Whose clock the script books by: Redis's (default: one clock for all replicas) or the caller's. */
  clock?: 'redis' | 'caller';
  /** While Redis is away, how often to ask it again (ms; default 1000). */
  probeMs?: number;
  /** How long a first booking waits for the first connection (ms; default 1000). */
  connectWaitMs?: number;
}

/** Options for a client that fails fast while Redis is away, so a booking falls back at once. */
export function pacingRedisOptions(): RedisOptions {
  return {
    enableOfflineQueue: false,
    commandTimeout: 300,
    connectTimeout: 1000,
    maxRetriesPerRequest: 0,
    retryStrategy: (times: number) => Math.min(times * 100, 1000),
  };
}

// KEYS: 1 state, 2 minute, 3 day. ARGV: 1 op, 2 caller's now ('' = Redis TIME), 3 spacing ms,
// 4 late allowance ms, 5 minute limit, 6 day limit, 7 margin, 8… the op's own.
// Every answer is { kind, value, now } (strings; `now` is the time the script used).
const SCRIPT = `
if redis.replicate_commands ~= nil then redis.replicate_commands() end
local MINUTE, DAY = 60000, 86400000
local stateKey, minuteKey, dayKey = KEYS[1], KEYS[2], KEYS[3]
local op = ARGV[1]
local now = tonumber(ARGV[2])
if now == nil then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end
local spacing, late = tonumber(ARGV[3]), tonumber(ARGV[4])
local cfgMinute, cfgDay, margin = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])

local function fmt(x) return string.format('%.3f', x) end
local function touch() redis.call('PEXPIRE', stateKey, 2 * DAY) end

local s = redis.call('HMGET', stateKey, 'slot', 'paused', 'dayx', 'extCount', 'extAt', 'minuteLimit', 'dayLimit')
local slot, paused, dayx = tonumber(s[1]) or 0, tonumber(s[2]) or 0, tonumber(s[3]) or 0
local extCount, extAt = tonumber(s[4]) or 0, tonumber(s[5]) or 0
-- Keap's reported limits as the caller judged them (paceLimit: they may be above the configured ones).
local minuteLimit = tonumber(s[6]) or cfgMinute
local dayLimit = tonumber(s[7]) or cfgDay

-- The daily quota resets at 00:00 UTC.
local today = math.floor(now / DAY)
local d = redis.call('HMGET', dayKey, 'day', 'used', 'resetsAt')
local used, resetsAt = tonumber(d[2]) or 0, tonumber(d[3]) or (today + 1) * DAY
if tonumber(d[1]) ~= today then
  used, resetsAt = 0, (today + 1) * DAY
  redis.call('HSET', dayKey, 'day', today, 'used', 0, 'resetsAt', resetsAt)
  -- Relative, so that a caller's clock (clock 'caller') behind Redis's does not expire it at once.
  redis.call('PEXPIRE', dayKey, math.floor((today + 2) * DAY - now))
  if dayx > 0 and dayx <= now then
    dayx = 0
    redis.call('HDEL', stateKey, 'dayx')
  end
end

local function countMinute()
  redis.call('ZREMRANGEBYSCORE', minuteKey, '-inf', fmt(now - MINUTE))
  return redis.call('ZCARD', minuteKey)
end
local function minuteCap()
  local ext = 0
  if now - extAt < MINUTE then ext = extCount end
  return math.max(0, math.floor(minuteLimit * margin) - ext)
end
local function dayCap() return math.floor(dayLimit * margin) end

if op == 'book' then
  if now < dayx or used >= dayCap() then
    if dayx < now then
      dayx = resetsAt
      redis.call('HSET', stateKey, 'dayx', fmt(dayx))
      touch()
    end
    return { 'daySpent', fmt(dayx), fmt(now) }
  end
  local at = math.max(slot, paused)
  local count = countMinute()
  local cap = minuteCap()
  if count >= cap then
    -- The window frees when enough departures age out of it.
    local index = math.min(count - 1, count - cap)
    if index >= 0 then
      local oldest = redis.call('ZRANGE', minuteKey, index, index, 'WITHSCORES')
      at = math.max(at, tonumber(oldest[2]) + MINUTE)
    else
      at = math.max(at, extAt + MINUTE)
    end
  end
  if at > now then return { 'wait', fmt(at), fmt(now) } end
  -- Slots follow on from the planned one (less a late allowance within the margin), so timer
  -- lateness does not add up and no two departures come closer than Keap's own interval.
  local seq = redis.call('HINCRBY', stateKey, 'seq', 1)
  redis.call('HSET', stateKey, 'slot', fmt(math.max(slot, now - late) + spacing))
  touch()
  redis.call('ZADD', minuteKey, fmt(now), fmt(now) .. '/' .. seq)
  redis.call('PEXPIRE', minuteKey, MINUTE + 1000)
  redis.call('HINCRBY', dayKey, 'used', 1)
  return { 'go', fmt(now), fmt(now) }
end

if op == 'backOff' then
  local untilAt = now + tonumber(ARGV[8])
  if untilAt > paused then
    redis.call('HSET', stateKey, 'paused', fmt(untilAt))
    touch()
  end
  return { 'ok', fmt(math.max(untilAt, paused)), fmt(now) }
end

if op == 'exhaustDay' then
  local r = tonumber(ARGV[8])
  if r ~= nil and r > now then dayx = r else dayx = resetsAt end
  redis.call('HSET', stateKey, 'dayx', fmt(dayx))
  touch()
  return { 'daySpent', fmt(dayx), fmt(now) }
end

if op == 'observe' then
  local reportedMinute, minuteUsed = tonumber(ARGV[8]), tonumber(ARGV[9])
  local reportedDay, dayUsed, dayResetsAt = tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12])
  if reportedMinute ~= nil then
    redis.call('HSET', stateKey, 'minuteLimit', reportedMinute)
  else
    redis.call('HDEL', stateKey, 'minuteLimit')
  end
  minuteLimit = reportedMinute or cfgMinute
  -- Keap's count of calls in its window includes every replica's: the rest were other apps'.
  if minuteUsed > 0 then
    extCount, extAt = math.max(0, minuteUsed - countMinute()), now
    redis.call('HSET', stateKey, 'extCount', extCount, 'extAt', fmt(extAt))
  end
  if reportedDay ~= nil then
    redis.call('HSET', stateKey, 'dayLimit', reportedDay)
  else
    redis.call('HDEL', stateKey, 'dayLimit')
  end
  dayLimit = reportedDay or cfgDay
  if dayUsed > used then
    used = dayUsed
    redis.call('HSET', dayKey, 'used', used)
  end
  if dayResetsAt ~= nil and dayResetsAt > now then redis.call('HSET', dayKey, 'resetsAt', fmt(dayResetsAt)) end
  touch()
  return { 'budget', minuteCap() .. ' ' .. (dayCap() - used) .. ' ' .. extCount, fmt(now) }
end

if op == 'absorb' then
  -- What one replica booked while Redis was away: today's count, a pause, a spent day, and
  -- how long ago each departure of its last minute left.
  local count, pausedFor, spentFor = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
  if count > 0 then redis.call('HINCRBY', dayKey, 'used', count) end
  if pausedFor > 0 and now + pausedFor > paused then redis.call('HSET', stateKey, 'paused', fmt(now + pausedFor)) end
  if spentFor > 0 and now + spentFor > dayx then redis.call('HSET', stateKey, 'dayx', fmt(now + spentFor)) end
  for i = 11, #ARGV do
    local t = now - tonumber(ARGV[i])
    local seq = redis.call('HINCRBY', stateKey, 'seq', 1)
    redis.call('ZADD', minuteKey, fmt(t), fmt(t) .. '/' .. seq)
  end
  redis.call('PEXPIRE', minuteKey, MINUTE + 1000)
  touch()
  return { 'ok', '0', fmt(now) }
end

return redis.error_reply('unknown pacing op ' .. tostring(op))
`;

const SHA = createHash('sha1').update(SCRIPT).digest('hex');

type Op = 'book' | 'backOff' | 'exhaustDay' | 'observe' | 'absorb';

interface Reply {
  kind: string;
  value: string;
  /** The time the script used (Redis's, or the caller's with clock 'caller'). */
  at: number;
  /** The caller's clock when the answer arrived. */
  received: number;
}

/** The budgets of one Keap client and tenant, shared by every replica through Redis. */
export class RedisGate implements DepartureGate {
  private readonly client: Redis | Cluster;
  private readonly ownsClient: boolean;
  private readonly keys: [string, string, string];
  /** ARGV 3 to 7: spacing, late allowance, minute limit, day limit, margin. */
  private readonly fixedArgs: string[];
  private spacing: number;
  private perSecond: number;
  private readonly callerClock: boolean;
  private readonly probeMs: number;
  private readonly budgetLog: BudgetLog;
  private readonly connected: Promise<void>;
  private readonly onError = (): void => undefined;
  /** While Redis is away: this replica's share of the limits. */
  private fallback: LocalGate | undefined;
  private probe: NodeJS.Timeout | undefined;
  private stopped = false;
  /** Commands sent without waiting for them (observe, backOff, exhaustDay), until answered. */
  private readonly pending = new Set<Promise<void>>();
  // What the answers said, on the caller's clock: the fast paths and Retry-After read these.
  private pausedUntil = 0;
  private lastRetryAt = 0;
  private daySpentUntil = 0;
  /** The reset the spent day names (Redis's clock: 00:00 UTC or Keap's expiry time). */
  private daySpentResetsAt = 0;

  constructor(
    private readonly limits: PaceLimits,
    private readonly logger: Logger,
    private readonly options: RedisGateOptions,
    private readonly now: () => number = Date.now,
  ) {
    if (!(options.replicas >= 1)) throw new RangeError(`replicas must be 1 or more, not ${options.replicas}`);
    this.ownsClient = typeof options.redis === 'string';
    this.client = typeof options.redis === 'string' ? new Redis(options.redis, pacingRedisOptions()) : options.redis;
    this.client.on('error', this.onError);
    const base = `${options.prefix}pace:{${options.key}}:`;
    this.keys = [`${base}state`, `${base}minute`, `${base}day`];
    this.perSecond = limits.perSecond;
    this.spacing = 1000 / (limits.perSecond * limits.margin);
    const late = (this.spacing * (1 - limits.margin)) / 2;
    this.fixedArgs = [
      String(this.spacing),
      String(late),
      String(Math.min(limits.perMinute, limits.tenantPerMinute)),
      String(Math.min(limits.perDay, limits.tenantPerDay)),
      String(limits.margin),
    ];
    this.callerClock = options.clock === 'caller';
    this.probeMs = options.probeMs ?? 1000;
    this.budgetLog = new BudgetLog(logger, configuredBudget(limits));
    this.connected = firstConnection(this.client, options.connectWaitMs ?? 1000);
  }

  async book(now: number): Promise<Booking> {
    await this.connected;
    if (this.fallback !== undefined) return this.fallback.book(now);
    let reply: Reply;
    try {
      reply = await this.run('book', now, []);
    } catch (err) {
      return this.fallBack(err).book(now);
    }
    const at = Number(reply.value);
    switch (reply.kind) {
      case 'go':
        return { kind: 'go', at };
      case 'daySpent':
        this.noteDaySpent(reply);
        return { kind: 'daySpent', resetsAt: at, retryAt: this.daySpentUntil };
      default:
        this.lastRetryAt = this.toCaller(reply, at);
        return { kind: 'wait', retryAt: this.lastRetryAt };
    }
  }

  observe(report: QuotaReport): void {
    if (this.fallback !== undefined) return this.fallback.observe(report);
    const r = readReport(report, this.limits);
    const perSecond = pacePerSecond(this.limits, report);
    if (perSecond !== this.perSecond) {
      this.perSecond = perSecond;
      this.spacing = 1000 / (perSecond * this.limits.margin);
      this.fixedArgs[0] = String(this.spacing);
      this.fixedArgs[1] = String((this.spacing * (1 - this.limits.margin)) / 2);
    }
    const args = [limitArg(r.paceMinuteLimit), String(r.minuteUsed), limitArg(r.paceDayLimit), String(r.dayUsed)];
    args.push(r.dayResetsAt === undefined ? '' : String(r.dayResetsAt));
    this.send(
      'observe',
      args,
      (reply) => {
        const [minute = 0, dayLeft = 0, others = 0] = reply.value.split(' ').map(Number);
        this.budgetLog.report({
          minute,
          dayLeft,
          keapMinuteLimit: r.minuteLimit,
          keapDayLimit: r.dayLimit,
          othersThisMinute: others,
        });
      },
      (local) => local.observe(report),
    );
  }

  backOff(ms: number): void {
    const until = this.now() + ms;
    if (until > this.pausedUntil) this.pausedUntil = until;
    if (this.fallback !== undefined) return this.fallback.backOff(ms);
    this.send('backOff', [String(ms)], undefined, (local) => local.backOff(ms));
  }

  exhaustDay(resetsAt: number | undefined): void {
    if (this.fallback !== undefined) return this.fallback.exhaustDay(resetsAt);
    this.send(
      'exhaustDay',
      [resetsAt === undefined ? '' : String(resetsAt)],
      (reply) => {
        this.noteDaySpent(reply);
        logDaySpent(this.logger, Number(reply.value));
      },
      (local) => local.exhaustDay(resetsAt),
    );
  }

  daySpent(now: number): { resetsAt: number; retryAt: number } | undefined {
    if (this.fallback !== undefined) return this.fallback.daySpent(now);
    if (now >= this.daySpentUntil) return undefined;
    return { resetsAt: this.daySpentResetsAt, retryAt: this.daySpentUntil };
  }

  earliestDeparture(now: number): number {
    if (this.fallback !== undefined) return this.fallback.earliestDeparture(now);
    return Math.max(this.lastRetryAt, this.pausedUntil);
  }

  spacingMs(): number {
    return this.fallback?.spacingMs() ?? this.spacing;
  }

  /**
   * The shared pace does not adapt (yet): every replica's spacing lives in Redis's script, so a
   * spike arrest pauses them all for `backOffMs`, as before. Without Redis, the local share adapts.
   */
  spikeArrested(retryAfterMs: number | undefined, backOffMs: number): void {
    if (this.fallback !== undefined) return this.fallback.spikeArrested(retryAfterMs, backOffMs);
    this.backOff(backOffMs);
  }

  pacePerSecond(now: number): number {
    return this.fallback?.pacePerSecond(now) ?? (this.spacing > 0 ? 1000 / this.spacing : Infinity);
  }

  mode(): GateMode {
    return this.fallback === undefined ? 'shared' : 'local_share';
  }

  /** Resolves when the commands sent without waiting (observe, backOff, exhaustDay) are answered. */
  async idle(): Promise<void> {
    while (this.pending.size > 0) await Promise.all([...this.pending]);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.probe);
    await this.idle();
    this.client.off('error', this.onError);
    if (!this.ownsClient) return;
    if (this.client.status === 'ready') await this.client.quit().catch(() => this.client.disconnect());
    else this.client.disconnect();
  }

  /** Sends without waiting: on failure the gate falls back and the local share takes the call. */
  private send(
    op: Op,
    args: string[],
    onReply: ((reply: Reply) => void) | undefined,
    local: (g: LocalGate) => void,
  ): void {
    const sent = this.connected
      .then(() => {
        if (this.fallback !== undefined) return local(this.fallback);
        return this.run(op, this.now(), args).then(
          (reply) => onReply?.(reply),
          (err: unknown) => local(this.fallBack(err)),
        );
      })
      // Nothing above should throw; if it did, no caller waits for this to hear of it.
      .catch((err: unknown) => this.logger.error({ event: 'pacing_error', op, error: String(err) }, 'pacing: ' + op))
      .finally(() => this.pending.delete(sent));
    this.pending.add(sent);
  }

  private async run(op: Op, now: number, args: string[]): Promise<Reply> {
    const argv = [op, this.callerClock ? String(now) : '', ...this.fixedArgs, ...args];
    let raw: unknown;
    try {
      raw = await this.client.evalsha(SHA, 3, ...this.keys, ...argv);
    } catch (err) {
      if (!(err instanceof Error && err.message.startsWith('NOSCRIPT'))) throw err;
      raw = await this.client.eval(SCRIPT, 3, ...this.keys, ...argv);
    }
    if (!Array.isArray(raw) || raw.length !== 3) throw new Error(`unexpected answer from the pacing script`);
    const [kind, value, at] = raw as [string, string, string];
    return { kind, value, at: Number(at), received: this.now() };
  }

  /** An instant on the script's clock, on the caller's. */
  private toCaller(reply: Reply, t: number): number {
    return this.callerClock ? t : reply.received + (t - reply.at);
  }

  private noteDaySpent(reply: Reply): void {
    const until = Number(reply.value);
    this.daySpentResetsAt = until;
    this.daySpentUntil = this.toCaller(reply, until);
  }

  /** Redis did not answer: from now on this replica keeps to its share, until a probe gets an answer. */
  private fallBack(err: unknown): LocalGate {
    if (this.fallback !== undefined) return this.fallback;
    const local = new LocalGate(this.limits, this.logger, this.now, this.options.replicas);
    local.restrictUntil(this.pausedUntil, this.daySpentUntil);
    this.fallback = local;
    this.logger.warn(
      {
        event: 'pacing_fallback',
        pacingKey: this.options.key,
        replicas: this.options.replicas,
        error: err instanceof Error ? err.message : String(err),
      },
      `Redis does not answer: pacing to this replica's share of Keap's limits (1/${this.options.replicas}) until it does`,
    );
    this.scheduleProbe();
    return local;
  }

  private scheduleProbe(): void {
    if (this.stopped) return;
    this.probe = setTimeout(() => void this.tryShared(), this.probeMs);
    this.probe.unref();
  }

  /** Asks Redis again; when it answers, hands it what this replica booked meanwhile and books there again. */
  private async tryShared(): Promise<void> {
    const local = this.fallback;
    if (local === undefined || this.stopped) return;
    const now = this.now();
    const own = local.booked(now);
    const spent = local.daySpent(now);
    const args = [
      String(own.today),
      String(Math.max(0, this.pausedUntil - now)),
      String(spent === undefined ? 0 : spent.retryAt - now),
      ...own.minuteAges.map(String),
    ];
    try {
      await this.run('absorb', now, args);
    } catch {
      this.scheduleProbe();
      return;
    }
    if (this.stopped) return;
    this.fallback = undefined;
    this.logger.info(
      { event: 'pacing_shared', pacingKey: this.options.key },
      "Redis answers again: pacing to Keap's limits shared by all replicas",
    );
  }
}

function limitArg(n: number): string {
  return Number.isFinite(n) ? String(n) : '';
}

/** Resolves once the client is connected, or its first attempt failed, or after `ms`. */
function firstConnection(client: Redis | Cluster, ms: number): Promise<void> {
  if (client.status === 'ready') return Promise.resolve();
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      client.off('ready', done);
      client.off('error', done);
      client.off('end', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    timer.unref();
    client.once('ready', done);
    client.once('error', done);
    client.once('end', done);
  });
}
