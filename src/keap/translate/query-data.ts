// DataService.query's queryData, applied to rows the translation has read from REST v2, as
// Keap's XML-RPC applied it (keap-xmlrpc-to-rest-v2.md §5.1): exact match without regard to
// case, `%` as SQL LIKE's wildcard anywhere, `~null~` for an empty value, `~<>~`, `~>~`,
// `~>=~`, `~<~`, `~<=~` comparisons (numbers as numbers, dates as 'YYYY-MM-DD HH:MM:SS'), an
// array as IN, several keys ANDed. Also the ordering (orderBy, descending unless `ascending`)
// and the paging (limit at most 1000, 0-based page) of its answer.
import type { XmlRpcValue } from '../xmlrpc-codec.js';
import { invalidParameter } from './args.js';

/** A queryData comparison, `~>=~ 2017-01-01` (F-OPS): the operator, then its operand. */
export const QUERY_OPERATOR = /^~(<>|>=|<=|>|<)~\s*(.*)$/s;

/** One answer row: field name to value, empty fields absent. */
export type Row = Map<string, XmlRpcValue>;

/** A value as queryData compares it: text, with dates as 'YYYY-MM-DD HH:MM:SS'. */
export function cmpText(v: XmlRpcValue | undefined): string {
  if (v === undefined) return '';
  switch (v.type) {
    case 'string':
      return v.value;
    case 'int':
    case 'double':
      return String(v.value);
    case 'boolean':
      return v.value ? '1' : '0';
    case 'dateTime': {
      const m = /^(\d{4})(\d\d)(\d\d)T(.*)$/.exec(v.value);
      return m ? `${m[1]}-${m[2]}-${m[3]} ${m[4]}` : v.value;
    }
    default:
      return '';
  }
}

/** Numbers as numbers when both are; otherwise text without regard to case. */
export function compareValues(a: string, b: string): number {
  const x = Number(a);
  const y = Number(b);
  if (a !== '' && b !== '' && Number.isFinite(x) && Number.isFinite(y)) return x - y;
  const p = a.toLowerCase();
  const q = b.toLowerCase();
  return p < q ? -1 : p > q ? 1 : 0;
}

function likeToRegExp(pattern: string): RegExp {
  const body = pattern
    .split('%')
    .map((p) => p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))
    .join('.*');
  return new RegExp(`^${body}$`, 'is');
}

/** Whether a row's value meets one queryData condition. */
export function matches(rowValue: XmlRpcValue | undefined, cond: XmlRpcValue): boolean {
  const actual = cmpText(rowValue);
  if (cond.type === 'array') return actual !== '' && cond.value.some((c) => compareValues(actual, cmpText(c)) === 0);
  if (cond.type === 'int') return actual !== '' && compareValues(actual, String(cond.value)) === 0;
  if (cond.type === 'struct' || cond.type === 'base64' || cond.type === 'nil')
    throw invalidParameter(`A queryData value cannot be a ${cond.type}`);
  const q = cmpText(cond);
  if (q === '~null~') return actual === '';
  const op = QUERY_OPERATOR.exec(q);
  if (op) {
    const d = compareValues(actual, op[2] as string);
    if (op[1] === '<>') return d !== 0;
    if (actual === '') return false;
    return op[1] === '>' ? d > 0 : op[1] === '>=' ? d >= 0 : op[1] === '<' ? d < 0 : d <= 0;
  }
  if (q.includes('%')) return likeToRegExp(q).test(actual);
  return actual.toLowerCase() === q.toLowerCase();
}

export function matchesAll(row: Row, queryData: ReadonlyMap<string, XmlRpcValue>): boolean {
  for (const [field, cond] of queryData) if (!matches(row.get(field), cond)) return false;
  return true;
}

/** Rows sorted on `orderBy` (stable: ties keep their order), descending unless `ascending`, as Keap documents. */
export function ordered(rows: Row[], orderBy: string | undefined, ascending: boolean | undefined): Row[] {
  if (orderBy === undefined) return rows;
  const sign = ascending === true ? 1 : -1;
  return [...rows].sort((a, b) => compareValues(cmpText(a.get(orderBy)), cmpText(b.get(orderBy))) * sign);
}

/** Rows per page: `limit`, at most 1000 (Keap's cap). */
export const pageSize = (limit: number): number => Math.min(1000, Math.max(0, limit));

/** The `page`-th (0-based) page of `limit` rows. */
export function pageOf<T>(rows: T[], limit: number, page: number): T[] {
  const size = pageSize(limit);
  return rows.slice(page * size, page * size + size);
}

/** Each row with only the selected fields, in their order; empty ones left out. */
export function project(rows: Row[], selected: readonly string[]): XmlRpcValue {
  return {
    type: 'array',
    value: rows.map((r) => {
      const out: Row = new Map();
      for (const f of selected) {
        const v = r.get(f);
        if (v !== undefined) out.set(f, v);
      }
      return { type: 'struct', value: out };
    }),
  };
}
