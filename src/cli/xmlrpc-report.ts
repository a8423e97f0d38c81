// `keap-proxy xmlrpc report`: which XML-RPC methods a deployment still calls, read from the
// request log lines the proxy wrote (each XML-RPC call's line carries its xmlrpcMethod). The
// checklist an operator needs before Keap retires XML-RPC on 31 December 2026.
import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import type { Output } from './token-status.js';
import { TRANSLATED_IN_PART, TRANSLATIONS } from '../keap/translate/methods.js';

/** A log file could not be read; the message names it. */
export class ReportError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ReportError';
  }
}

export interface MethodUse {
  method: string;
  calls: number;
  /** Calls whose answer was Keap's (status 200, no outcome of the proxy's own). */
  relayed: number;
  /** Whether the proxy can answer it from REST v2 (XMLRPC_MODE=translate). */
  translatable: boolean;
  /** When it is translated for some arguments only: which (e.g. DataService on the Contact table). */
  translatedFor?: string;
  firstSeen: string;
  lastSeen: string;
}

export interface Inventory {
  methods: MethodUse[];
  /** Lines read, and of them the ones that were no JSON (a log line cut short, another program's output). */
  lines: number;
  unreadable: number;
}

export class Tally {
  private readonly byMethod = new Map<string, { calls: number; relayed: number; first: number; last: number }>();
  private lines = 0;
  private unreadable = 0;

  add(line: string): void {
    if (line.trim() === '') return;
    this.lines += 1;
    let entry: unknown;
    try {
      entry = JSON.parse(line);
    } catch {
      this.unreadable += 1;
      return;
    }
    if (typeof entry !== 'object' || entry === null) return;
    const e = entry as Record<string, unknown>;
    if (e.event !== 'request' || typeof e.xmlrpcMethod !== 'string') return;
    const time = typeof e.time === 'number' ? e.time : 0;
    let use = this.byMethod.get(e.xmlrpcMethod);
    if (use === undefined) {
      use = { calls: 0, relayed: 0, first: time, last: time };
      this.byMethod.set(e.xmlrpcMethod, use);
    }
    use.calls += 1;
    if (e.outcome === undefined && e.upstreamStatus !== undefined) use.relayed += 1;
    use.first = Math.min(use.first, time);
    use.last = Math.max(use.last, time);
  }

  result(): Inventory {
    const methods = [...this.byMethod.entries()]
      .map(([method, u]) => ({
        method,
        calls: u.calls,
        relayed: u.relayed,
        translatable: TRANSLATIONS.has(method),
        ...(TRANSLATED_IN_PART.has(method) ? { translatedFor: TRANSLATED_IN_PART.get(method) } : {}),
        firstSeen: new Date(u.first).toISOString(),
        lastSeen: new Date(u.last).toISOString(),
      }))
      // Most used first: the order to migrate in.
      .sort((a, b) => b.calls - a.calls || a.method.localeCompare(b.method));
    return { methods, lines: this.lines, unreadable: this.unreadable };
  }
}

export interface ReportOptions {
  /** Log files to read; none: standard input. */
  files: readonly string[];
  stdin: () => Readable;
  out: Output;
  json: boolean;
}

/** Resolves to the exit code: 0. A file that cannot be read rejects (the CLI says which). */
export async function runXmlRpcReport(options: ReportOptions): Promise<number> {
  const tally = new Tally();
  const sources: [string, () => Readable][] =
    options.files.length > 0
      ? options.files.map((f) => [f, () => createReadStream(f)])
      : [['standard input', options.stdin]];
  for (const [name, open] of sources) {
    try {
      for await (const line of createInterface({ input: open(), crlfDelay: Infinity })) tally.add(line);
    } catch (err) {
      throw new ReportError(`${name} cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
    }
  }
  const inventory = tally.result();
  options.out.write(options.json ? JSON.stringify(inventory, null, 2) + '\n' : formatInventory(inventory));
  return 0;
}

export function formatInventory(inv: Inventory): string {
  const calls = inv.methods.reduce((n, m) => n + m.calls, 0);
  const head = `XML-RPC calls in ${inv.lines} log line${inv.lines === 1 ? '' : 's'}: ${inv.methods.length} method${inv.methods.length === 1 ? '' : 's'}, ${calls} call${calls === 1 ? '' : 's'}${inv.unreadable > 0 ? ` (${inv.unreadable} line${inv.unreadable === 1 ? '' : 's'} not JSON, skipped)` : ''}.\n`;
  if (inv.methods.length === 0)
    return `${head}No XML-RPC call in these logs: nothing to migrate (look at logs that cover a full business cycle).\n`;
  const width = Math.max(...inv.methods.map((m) => String(m.calls).length), 5);
  const rows = inv.methods.map(
    (m) =>
      `  ${String(m.calls).padStart(width)}  ${m.firstSeen}  ${m.lastSeen}  ${(!m.translatable ? 'no' : m.translatedFor !== undefined ? 'partly' : 'yes').padEnd(9)}  ${m.method}\n`,
  );
  const translatable = inv.methods.filter((m) => m.translatable).length;
  const partly = inv.methods.filter((m) => m.translatedFor !== undefined);
  const limits = partly.map((m) => `  ${m.method}: translated on ${m.translatedFor} only.\n`).join('');
  return (
    head +
    `  ${'calls'.padStart(width)}  ${'first seen'.padEnd(24)}  ${'last seen'.padEnd(24)}  translate  method\n` +
    rows.join('') +
    `${translatable} of ${inv.methods.length} can be answered by the proxy from REST v2 (XMLRPC_MODE=translate)${partly.length > 0 ? `, ${partly.length} of them in part` : ''}; the rest must move to REST v2.\n` +
    limits +
    'Keap retires XML-RPC on 31 December 2026: each of these methods must move to REST v2 before then (README, "Legacy apps and XML-RPC").\n'
  );
}
