// Turns raw samples into the figures the benchmark is judged by: medians per scenario,
// throughput ratios against the baselines, the pacing run against the allowed rate, and a
// verdict. Pure functions, no I/O.
import type { LoadSample, SteadyRate } from './load.js';
import type { UploadsSample } from './uploads-client.js';

/** One timed measurement, with the CPU each side used over it (1.0 = one core busy all along). */
export interface Measurement {
  sample: LoadSample;
  /** This process: the servers (simulator, proxy) and their helper threads (GC, log writes). */
  serverCpu: number;
  /** Share of the time this process's event loop was busy: near 1.0 means the servers were the bottleneck. */
  serverLoopBusy: number;
  /** The load generator's process. */
  clientCpu: number;
}

export interface ScenarioResult {
  name: string;
  label: string;
  /** One per round, in round order. */
  rounds: Measurement[];
  /** Warm-up samples: not timed, but their non-2xx answers count against the run. */
  warmups: LoadSample[];
}

export interface RoundFigures {
  requestsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  serverCpu: number;
  serverLoopBusy: number;
  clientCpu: number;
  /** Server CPU time per request, the cost figure that does not depend on who saturated first. */
  serverCpuUsPerRequest: number;
}

export interface ScenarioSummary {
  name: string;
  label: string;
  median: RoundFigures;
  rounds: RoundFigures[];
  /** Summed over every round, warm-ups included. */
  errors: number;
  timeouts: number;
  non2xx: number;
  statusCodes: Record<string, number>;
}

/** A throughput ratio between two scenarios, optionally with a target it must reach. */
export interface Comparison {
  label: string;
  numerator: string;
  denominator: string;
  /** Minimum acceptable ratio; without one the ratio is reported only. */
  target?: number;
}

export interface ComparisonResult extends Comparison {
  /**
   * Median of the per-round ratios: what the verdict is based on. The two scenarios of a
   * round run seconds apart, so a ratio within a round is immune to the machine's speed
   * drifting between rounds (a shared VM's does, by a third), which a ratio of the two
   * medians is not.
   */
  ratio: number;
  /** The ratio within each round. */
  perRound: number[];
  met: boolean | undefined;
}

export function median(values: number[]): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((x, y) => x - y);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

export function summarize(r: ScenarioResult): ScenarioSummary {
  const all = [...r.rounds.map((m) => m.sample), ...r.warmups];
  const statusCodes: Record<string, number> = {};
  for (const s of all)
    for (const [code, n] of Object.entries(s.statusCodes)) statusCodes[code] = (statusCodes[code] ?? 0) + n;
  const rounds = r.rounds.map(figures);
  const med = (pick: (f: RoundFigures) => number): number => median(rounds.map(pick));
  // Each figure's median is taken on its own (the p99 median need not come from the rps-median round).
  return {
    name: r.name,
    label: r.label,
    median: {
      requestsPerSecond: med((f) => f.requestsPerSecond),
      p50Ms: med((f) => f.p50Ms),
      p99Ms: med((f) => f.p99Ms),
      serverCpu: med((f) => f.serverCpu),
      serverLoopBusy: med((f) => f.serverLoopBusy),
      clientCpu: med((f) => f.clientCpu),
      serverCpuUsPerRequest: med((f) => f.serverCpuUsPerRequest),
    },
    rounds,
    errors: sum(all.map((s) => s.errors)),
    timeouts: sum(all.map((s) => s.timeouts)),
    non2xx: sum(all.map((s) => s.non2xx)),
    statusCodes,
  };
}

function figures(m: Measurement): RoundFigures {
  const rps = m.sample.requestsPerSecond;
  return {
    requestsPerSecond: rps,
    p50Ms: m.sample.p50Ms,
    p99Ms: m.sample.p99Ms,
    serverCpu: m.serverCpu,
    serverLoopBusy: m.serverLoopBusy,
    clientCpu: m.clientCpu,
    serverCpuUsPerRequest: rps > 0 ? (m.serverCpu * 1e6) / rps : NaN,
  };
}

export function compare(summaries: ScenarioSummary[], comparisons: Comparison[]): ComparisonResult[] {
  const byName = new Map(summaries.map((s) => [s.name, s]));
  return comparisons.flatMap((c) => {
    const num = byName.get(c.numerator);
    const den = byName.get(c.denominator);
    if (num === undefined || den === undefined) return [];
    const perRound = num.rounds.map((r, i) => r.requestsPerSecond / (den.rounds[i]?.requestsPerSecond ?? NaN));
    const ratio = median(perRound);
    return [{ ...c, ratio, perRound, met: c.target === undefined ? undefined : ratio >= c.target }];
  });
}

/** Scenarios that saw anything but 2xx answers: the figures of those are not to be trusted. */
export function failures(summaries: ScenarioSummary[]): string[] {
  return summaries
    .filter((s) => s.errors + s.timeouts + s.non2xx > 0)
    .map(
      (s) =>
        `${s.name}: ${s.errors} errors, ${s.timeouts} timeouts, ${s.non2xx} non-2xx (status counts ${JSON.stringify(s.statusCodes)})`,
    );
}

export function formatTable(summaries: ScenarioSummary[], comparisons: ComparisonResult[]): string {
  const columns: { title: string; numeric: boolean; cell: (s: ScenarioSummary) => string }[] = [
    { title: 'scenario', numeric: false, cell: (s) => s.name },
    { title: 'req/s', numeric: true, cell: (s) => fmt(s.median.requestsPerSecond, 0) },
    { title: 'p50 ms', numeric: true, cell: (s) => fmt(s.median.p50Ms, 1) },
    { title: 'p99 ms', numeric: true, cell: (s) => fmt(s.median.p99Ms, 1) },
    { title: 'server loop', numeric: true, cell: (s) => `${fmt(s.median.serverLoopBusy * 100, 0)}%` },
    { title: 'server CPU', numeric: true, cell: (s) => `${fmt(s.median.serverCpu * 100, 0)}%` },
    { title: 'client CPU', numeric: true, cell: (s) => `${fmt(s.median.clientCpu * 100, 0)}%` },
    { title: 'server µs/req', numeric: true, cell: (s) => fmt(s.median.serverCpuUsPerRequest, 0) },
    { title: 'errors', numeric: true, cell: (s) => String(s.errors + s.timeouts) },
    { title: 'non-2xx', numeric: true, cell: (s) => String(s.non2xx) },
    {
      title: 'req/s per round',
      numeric: false,
      cell: (s) => s.rounds.map((r) => fmt(r.requestsPerSecond, 0)).join(' / '),
    },
  ];
  const rows = summaries.map((s) => columns.map((c) => c.cell(s)));
  const widths = columns.map((c, i) => Math.max(c.title.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => (columns[i]!.numeric ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  const out = [line(columns.map((c) => c.title)), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line), ''];
  for (const s of summaries) out.push(`${s.name.padEnd(widths[0]!)}  ${s.label}`);
  out.push(
    '(medians over rounds, ratios: median of the per-round ratios; latency resolution 1 ms; server loop = event-loop busy share of the server process;',
    ' server CPU = that process incl. GC and log-writing threads, 100% = one core; µs/req = server CPU per request)',
    '',
  );
  const labelWidth = Math.max(...comparisons.map((c) => c.label.length));
  for (const c of comparisons) {
    const verdict =
      c.met === undefined ? '' : c.met ? `  PASS (target >= ${c.target}x)` : `  FAIL (target >= ${c.target}x)`;
    const rounds = c.perRound.map((r) => fmt(r, 2)).join(' / ');
    out.push(`${c.label.padEnd(labelWidth)}  ${fmt(c.ratio, 3)}x  (per round ${rounds})${verdict}`);
  }
  return out.join('\n');
}

function fmt(n: number, digits: number): string {
  return Number.isFinite(n) ? n.toFixed(digits) : 'n/a';
}

function sum(values: number[]): number {
  return values.reduce((a, b) => a + b, 0);
}

/** The pacing run as measured: one burst through keap-proxy against a simulator enforcing `limitPerSecond`. */
export interface PacingResult {
  /** The spike limit the simulator enforces with 429s, and keap-proxy's RATE_LIMIT_PER_SECOND. */
  limitPerSecond: number;
  margin: number;
  /** limitPerSecond x margin: what keap-proxy allows itself. */
  allowedPerSecond: number;
  connections: number;
  seconds: number;
  /** The client's view: autocannon's figures over the whole burst. */
  sample: LoadSample;
  /** 2xx answers per second once steady: the achieved rate. */
  steady: SteadyRate;
  /** What the simulator (Keap) saw during the run. */
  upstream: { calls: number; throttled: number };
  /** Resident set size of the process keap-proxy runs in, in bytes. */
  rss: { before: number; after: number; peak: number };
}

/** Bounds for achieved / allowed: near the allowed rate, and not above it (that would eat the margin). */
export interface PacingTarget {
  min: number;
  max: number;
}

export interface PacingSummary extends PacingResult {
  ratio: number;
  target: PacingTarget;
  met: boolean;
}

export function summarizePacing(r: PacingResult, target: PacingTarget): PacingSummary {
  const ratio = r.steady.requestsPerSecond / r.allowedPerSecond;
  return { ...r, ratio, target, met: ratio >= target.min && ratio <= target.max };
}

/** The client got something other than 2xx: the achieved rate would count refusals, not pacing. */
export function pacingClientFailures(p: PacingSummary): string[] {
  const s = p.sample;
  if (s.errors + s.timeouts + s.non2xx === 0) return [];
  return [
    `pacing: ${s.errors} errors, ${s.timeouts} timeouts, ${s.non2xx} non-2xx at the client (status counts ${JSON.stringify(s.statusCodes)})`,
  ];
}

/** Keap had to say 429: what the pacing is for did not hold (keap-proxy hides them from clients, so only the simulator knows). */
export function pacingUpstreamFailures(p: PacingSummary): string[] {
  return p.upstream.throttled === 0
    ? []
    : [
        `pacing: the simulator answered ${p.upstream.throttled} of ${p.upstream.calls} calls with 429 (spike limit ${p.limitPerSecond}/s)`,
      ];
}

export function formatPacing(p: PacingSummary): string {
  const mb = (bytes: number): string => `${fmt(bytes / 2 ** 20, 1)} MiB`;
  const verdict = p.met ? 'PASS' : 'FAIL';
  const rows: [string, string][] = [
    [
      'achieved',
      `${fmt(p.steady.requestsPerSecond, 2)} req/s  (2xx answers from ${p.steady.afterSeconds} s on: ${p.steady.responses} over ${fmt(p.steady.seconds, 2)} s)`,
    ],
    [
      'allowed',
      `${fmt(p.allowedPerSecond, 2)} req/s  (RATE_LIMIT_PER_SECOND ${p.limitPerSecond} x RATE_LIMIT_MARGIN ${p.margin})`,
    ],
    ['achieved / allowed', `${fmt(p.ratio, 3)}x  ${verdict} (target ${p.target.min}x to ${p.target.max}x)`],
    ['upstream 429s', `${p.upstream.throttled}  (of ${p.upstream.calls} calls the simulator saw)`],
    [
      'non-2xx at client',
      `${p.sample.non2xx}  (errors ${p.sample.errors}, timeouts ${p.sample.timeouts}; ${p.sample.completed} answers)`,
    ],
    ['latency', `p50 ${fmt(p.sample.p50Ms, 0)} ms, p99 ${fmt(p.sample.p99Ms, 0)} ms`],
    ['proxy RSS', `${mb(p.rss.before)} before, ${mb(p.rss.after)} after the burst (peak ${mb(p.rss.peak)})`],
  ];
  const width = Math.max(...rows.map(([k]) => k.length));
  return [
    `pacing: a burst of ${p.connections} connections for ${p.seconds} s through keap-proxy (RATE_LIMIT_PER_SECOND ${p.limitPerSecond}) to a simulator answering 429 above ${p.limitPerSecond} calls/s`,
    ...rows.map(([k, v]) => `  ${k.padEnd(width)}  ${v}`),
    '(latency over the whole burst, queueing included; RSS of the bench process, which hosts keap-proxy: the simulator and load generator are child processes)',
  ].join('\n');
}

/** One server's share of the uploads scenario: a burst of concurrent uploads to a slow upstream. */
export interface UploadsRun {
  server: 'bare-forwarder' | 'keap-proxy';
  label: string;
  /** Which burst through the same server process (1 = the first after its start and one small upload). */
  burst: number;
  /**
   * The server process's resident set, in bytes: idle before the burst (after one small
   * upload, or after the last burst and its settle), the highest of its samples during it,
   * and after the last answer plus a settle.
   * `kernelPeak` is the kernel's high-water mark (VmHWM, reset before the burst) where Linux
   * gives one: it sees between samples.
   */
  rss: { before: number; peak: number; after: number; kernelPeak: number | undefined };
  sample: UploadsSample;
  /** What the slow upstream saw: bodies read whole, their bytes, and bodies cut short. */
  upstream: { requests: number; bytes: number; aborted: number };
  /** keap-proxy only: keap_proxy_body_buffer_bytes from /metrics once the burst is over. */
  bodyBuffer?: { limit: number; inUseAfter: number };
  /** keap-proxy only: its answers during the burst by status, as it counted them (keap_proxy_requests_total). */
  answeredByServer?: Record<string, number>;
}

export interface UploadsSummary {
  connections: number;
  /** Body size of each upload. */
  bytes: number;
  /** How long the upstream holds each answer once the body is in. */
  holdMs: number;
  /** Wait between the last answer and the `after` RSS reading. */
  settleMs: number;
  sampleMs: number;
  /** keap-proxy's REPLAY_BODY_BYTES in this run (bodies up to it are buffered). */
  replayBodyBytes: number;
  /** Bursts through each server process, one after the other. */
  bursts: number;
  runs: UploadsRun[];
}

const BUDGET_REFUSAL = 'body_budget_exhausted';
/** What the client sees when the server closes the connection under a body still being sent. */
const CLOSED_UNDER_UPLOAD = ['EPIPE', 'ECONNRESET'];

/**
 * Refusals the client never read: keap-proxy answers 503 with Connection: close at once and
 * closes while the body is still coming, so the client can get EPIPE or ECONNRESET before it
 * reads the answer. Counted as such only when keap-proxy's own count of 503s accounts for them
 * (503s sent = 503s read + connections closed under the upload); otherwise undefined.
 */
export function lostRefusals(r: UploadsRun): number | undefined {
  if (r.server !== 'keap-proxy' || r.answeredByServer === undefined) return undefined;
  const closed = sum(CLOSED_UNDER_UPLOAD.map((code) => r.sample.failures[code] ?? 0));
  const sent = r.answeredByServer['503'] ?? 0;
  const read = r.sample.statusCodes['503'] ?? 0;
  return closed > 0 && sent === read + closed ? closed : undefined;
}

/**
 * Uploads whose outcome says the run is not what it claims: anything but 200 through the bare
 * forwarder; anything but 200 or 503 body_budget_exhausted (read, or lost as lostRefusals says)
 * through keap-proxy; no answer otherwise; a budget not given back.
 */
export function uploadsFailures(u: UploadsSummary): string[] {
  const out: string[] = [];
  for (const r of u.runs) {
    const name = u.bursts > 1 ? `${r.server} burst ${r.burst}` : r.server;
    const ok = r.sample.statusCodes['200'] ?? 0;
    const refused = r.server === 'keap-proxy' ? (r.sample.errorCodes[BUDGET_REFUSAL] ?? 0) : 0;
    const allUnanswered = sum(Object.values(r.sample.failures));
    const lost = lostRefusals(r) ?? 0;
    const unanswered = allUnanswered - lost;
    const other = u.connections - ok - refused - allUnanswered;
    if (unanswered > 0)
      out.push(
        `uploads ${name}: ${unanswered} uploads got no answer (${JSON.stringify(r.sample.failures)}${r.answeredByServer !== undefined ? `; keap-proxy counted its answers ${JSON.stringify(r.answeredByServer)}` : ''})`,
      );
    if (other > 0)
      out.push(
        `uploads ${name}: ${other} answers other than 200${r.server === 'keap-proxy' ? ` or 503 ${BUDGET_REFUSAL}` : ''} (status counts ${JSON.stringify(r.sample.statusCodes)}, error codes ${JSON.stringify(r.sample.errorCodes)})`,
      );
    if (r.bodyBuffer !== undefined && r.bodyBuffer.inUseAfter !== 0)
      out.push(`uploads ${name}: ${r.bodyBuffer.inUseAfter} bytes of the body budget still in use after the burst`);
  }
  return out;
}

function answerTimes(s: UploadsSample, status: string): string {
  const t = s.answerMs[status];
  return t === undefined ? '-' : `${fmt(t.min, 0)} / ${fmt(t.p50, 0)} / ${fmt(t.max, 0)} ms`;
}

export function formatUploads(u: UploadsSummary): string {
  const mb = (bytes: number | undefined): string => (bytes === undefined ? 'n/a' : `${fmt(bytes / 2 ** 20, 1)} MiB`);
  const runs = u.runs;
  const keap = runs.find((r) => r.server === 'keap-proxy');
  const rows: [string, (r: UploadsRun) => string][] = [
    ['RSS before', (r) => mb(r.rss.before)],
    [`RSS peak (sampled every ${u.sampleMs} ms)`, (r) => mb(r.rss.peak)],
    ['RSS peak (kernel VmHWM)', (r) => mb(r.rss.kernelPeak)],
    ['peak - before', (r) => mb(r.rss.peak - r.rss.before)],
    [`RSS after (+${fmt(u.settleMs / 1000, 0)} s idle)`, (r) => mb(r.rss.after)],
    ['200', (r) => String(r.sample.statusCodes['200'] ?? 0)],
    [`503 ${BUDGET_REFUSAL}`, (r) => String(r.sample.errorCodes[BUDGET_REFUSAL] ?? 0)],
    [
      'other answers',
      (r) =>
        String(
          u.connections -
            (r.sample.statusCodes['200'] ?? 0) -
            (r.sample.errorCodes[BUDGET_REFUSAL] ?? 0) -
            sum(Object.values(r.sample.failures)),
        ),
    ],
    [
      'no answer (connection error)',
      (r) =>
        Object.keys(r.sample.failures).length === 0
          ? '0'
          : Object.entries(r.sample.failures)
              .map(([code, n]) => `${n} ${code}`)
              .join(', '),
    ],
    [
      'answers sent, per keap-proxy',
      (r) =>
        r.answeredByServer === undefined
          ? '-'
          : Object.entries(r.answeredByServer)
              .map(([status, n]) => `${n}x ${status}`)
              .join(', '),
    ],
    ['200 answered in (min / p50 / max)', (r) => answerTimes(r.sample, '200')],
    ['503 answered in (min / p50 / max)', (r) => answerTimes(r.sample, '503')],
    ['bodies upstream (whole / cut short)', (r) => `${r.upstream.requests} / ${r.upstream.aborted}`],
  ];
  const head = ['', ...runs.map((r) => (u.bursts > 1 ? `${r.server} #${r.burst}` : r.server))];
  const table = [head, ...rows.map(([k, cell]) => [k, ...runs.map(cell)])];
  const widths = head.map((_, i) => Math.max(...table.map((row) => (row[i] ?? '').length)));
  const line = (row: string[]): string =>
    row
      .map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!)))
      .join('  ')
      .trimEnd();
  const out = [
    `uploads: ${u.connections} concurrent POSTs of ${mb(u.bytes)} (Content-Length) to an upstream that reads each body whole, then holds its 200 for ${fmt(u.holdMs / 1000, 1)} s` +
      (u.bursts > 1 ? `; ${u.bursts} bursts (#1, #2, ...) through each server process, one after the other` : ''),
    ...table.map((row) => `  ${line(row)}`),
    '  (answer times from the moment all uploads start to the end of each answer, as the client saw them)',
  ];
  if (keap?.bodyBuffer !== undefined) {
    out.push(
      `  keap-proxy: REPLAY_BODY_BYTES ${mb(u.replayBodyBytes)}, BODY_BUFFER_BUDGET_BYTES ${mb(keap.bodyBuffer.limit)} (room for ${Math.floor(keap.bodyBuffer.limit / Math.min(u.bytes, u.replayBodyBytes + 1))} such bodies at once), ` +
        `${keap.bodyBuffer.inUseAfter} bytes of it in use after the burst`,
    );
  }
  for (const r of runs) {
    const lost = lostRefusals(r);
    if (lost !== undefined) {
      out.push(
        `  keap-proxy${u.bursts > 1 ? ` #${r.burst}` : ''}: ${lost} of its 503s never reached the client: it answers before reading the body, with Connection: close, and closes ` +
          'while the body is still being sent, and the client got a broken connection (EPIPE/ECONNRESET) before it read the answer',
      );
    }
  }
  out.push(
    '(RSS of the server process alone, read in it with process.memoryUsage.rss(); the client and the upstream are processes of their own)',
  );
  return out.join('\n');
}
