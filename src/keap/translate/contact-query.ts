// DataService.query, findByField and count on the Contact table, answered from REST v2's
// contact list (keap-xmlrpc-to-rest-v2.md §5.1, §11).
//
// Each queryData condition is checked on our side, on the XML-RPC values of the contacts v2
// returns, with Keap's XML-RPC rules (exact match without regard to case, `%` anywhere,
// `~null~`, `~<>~`, `~>~` and the like, arrays of Ids). Those v2's `filter` can express, or
// narrow, are also sent as the filter, so Keap returns few contacts. A condition v2 cannot
// narrow (a leading `%`, `~null~`, a field v2 does not filter) is checked only on our side,
// and only when another condition narrows the list: a query that would read every contact of
// the account to answer is refused with a fault that names the condition.
import type { XmlRpcValue } from '../xmlrpc-codec.js';
import { V2, expectOk, invalidParameter } from './args.js';
import { contactStruct, isContactField, v2Properties } from './contact-fields.js';
import { customFieldsFor } from './contact-service.js';
import { cmpText, compareValues, matches, QUERY_OPERATOR } from './query-data.js';
import { XmlRpcFault, type CustomField, type CustomFields, type TranslationContext } from './rest.js';

export const CONTACT_QUERY = {
  /** Keap's XML-RPC answered at most this many rows per page; v2 pages hold at most this many too. */
  maxPage: 1000,
  /** At most this many Ids in one IN condition (F-OPS: "limited to 1000 ids"). */
  maxIds: 1000,
} as const;

type Contact = Record<string, unknown>;

/** How v2 can narrow one condition: `field==value` (or `field>value` and the like), or not at all. */
type Narrowing = { filter: string } | undefined;

/** v2 filter names of the XML-RPC fields it can match exactly, or by a prefix (`*`). */
const TEXT_FILTERS: Record<string, string> = {
  Email: 'email',
  // v2's email matches EMAIL1 to EMAIL3: it narrows EmailAddress2 and 3 as well; the check on
  // our side keeps the column asked for.
  EmailAddress2: 'email',
  EmailAddress3: 'email',
  FirstName: 'given_name',
  LastName: 'family_name',
  MiddleName: 'middle_name',
  Website: 'website',
  City: 'city',
};

const NUMERIC_CUSTOM = new Set(['WHOLE_NUMBER', 'DECIMAL_NUMBER', 'CURRENCY', 'PERCENT']);
const TEXT_CUSTOM = new Set([
  'TEXT',
  'TEXT_AREA',
  'EMAIL',
  'WEBSITE',
  'PHONE_NUMBER',
  'NAME',
  'STATE',
  'DROPDOWN',
  'RADIO',
]);

/** Characters that mean something in v2's filter grammar: a value holding one is never sent as a filter. */
const GRAMMAR = /[;,*=<>!\\]/;

export interface ContactQuery {
  limit: number;
  page: number;
  conditions: Map<string, XmlRpcValue>;
  fields: readonly string[];
  orderBy?: string;
  ascending?: boolean;
}

/** The rows of one page of a Contact query, as Keap's XML-RPC answered them. */
export async function queryContacts(keap: TranslationContext, q: ContactQuery): Promise<XmlRpcValue> {
  const size = Math.min(CONTACT_QUERY.maxPage, Math.max(0, q.limit));
  const first = Math.max(0, q.page) * size;
  const names = [...q.conditions.keys(), ...q.fields, ...(q.orderBy !== undefined ? [q.orderBy] : [])];
  const custom = await customFieldsFor(keap, names);
  for (const name of names) if (!isContactField(name, custom)) throw noFieldFound(name);
  if (size === 0) return { type: 'array', value: [] };
  const plan = planOf(q.conditions, custom);
  // Keap's XML-RPC sorted by any column; v2 orders by a few. Only Id is left to v2: its other
  // orders break ties differently (v2 keeps milliseconds, XML-RPC dates had seconds).
  const byId = q.orderBy === undefined || q.orderBy === 'Id';
  const direction = q.orderBy !== undefined && q.ascending !== true ? 'desc' : 'asc';
  const wanted = byId ? first + size : Infinity;
  const matched = await matching(keap, plan, custom, names, `id ${direction}`, wanted);
  if (!byId) sortRows(matched, q.orderBy as string, q.ascending === true);
  const rows = matched.slice(first, first + size);
  return { type: 'array', value: rows.map((r) => select(r.values, q.fields)) };
}

/** How many contacts a Contact query matches (DataService.count). */
export async function countContacts(keap: TranslationContext, conditions: Map<string, XmlRpcValue>): Promise<number> {
  const names = [...conditions.keys()];
  const custom = await customFieldsFor(keap, names);
  for (const name of names) if (!isContactField(name, custom)) throw noFieldFound(name);
  const plan = planOf(conditions, custom);
  return (await matching(keap, plan, custom, names, 'id asc', Infinity)).length;
}

interface Plan {
  filters: string[];
  checks: [string, XmlRpcValue][];
  /** The first condition v2 cannot narrow, when none can: the query would read every contact. */
  unbounded?: string;
}

function planOf(conditions: Map<string, XmlRpcValue>, custom: CustomFields | undefined): Plan {
  const filters: string[] = [];
  let narrowed = conditions.size === 0;
  let loose: string | undefined;
  for (const [name, cond] of conditions) {
    const narrowing = narrow(name, cond, custom);
    if (narrowing === 'all') {
      narrowed = true;
      continue;
    }
    if (narrowing === undefined) {
      loose ??= name;
      continue;
    }
    narrowed = true;
    filters.push(narrowing.filter);
  }
  return {
    filters,
    checks: [...conditions].filter(([, cond]) => !matchesEverything(cond)),
    ...(narrowed || loose === undefined ? {} : { unbounded: loose }),
  };
}

/** `%` alone matches every row (Keap's idiom for "all": `Id => '%'`). */
function matchesEverything(cond: XmlRpcValue): boolean {
  return cond.type === 'string' && /^%+$/.test(cond.value);
}

function narrow(name: string, cond: XmlRpcValue, custom: CustomFields | undefined): Narrowing | 'all' {
  if (matchesEverything(cond)) return 'all';
  if (name === 'Id') return narrowId(cond);
  if (name === 'CompanyID') return cond.type === 'int' ? { filter: `company_id==${cond.value}` } : undefined;
  if (name === 'LastUpdated') return narrowUpdated(cond);
  const textFilter = TEXT_FILTERS[name];
  if (textFilter !== undefined) return narrowText(textFilter, cond);
  if (name.startsWith('_')) {
    const field = custom?.get(name.slice(1).toLowerCase());
    if (field !== undefined && /^\w+$/.test(field.name)) return narrowCustom(field, cond);
  }
  return undefined;
}

function narrowId(cond: XmlRpcValue): Narrowing {
  if (cond.type === 'int') return { filter: `ids==${cond.value}` };
  if (cond.type === 'array') {
    const ids = cond.value.map((v) => (v.type === 'int' ? v.value : v.type === 'string' ? Number(v.value) : NaN));
    if (ids.length > CONTACT_QUERY.maxIds)
      throw invalidParameter(`At most ${CONTACT_QUERY.maxIds} Ids in one Id condition, not ${ids.length}`);
    if (ids.length === 0 || !ids.every((n) => Number.isSafeInteger(n))) return undefined;
    return { filter: `ids==${ids.join(',')}` };
  }
  if (cond.type !== 'string') return undefined;
  const v = cond.value.trim();
  if (/^\d{1,15}$/.test(v)) return { filter: `ids==${v}` };
  const op = QUERY_OPERATOR.exec(v);
  if (op && op[1] !== '<>' && /^\d{1,15}$/.test((op[2] as string).trim()))
    return { filter: `contact_id${op[1]}${(op[2] as string).trim()}` };
  return undefined;
}

/** LastUpdated bounds, in Keap's Eastern wall time, as v2's start/end_update_time (UTC, both inclusive). */
function narrowUpdated(cond: XmlRpcValue): Narrowing {
  const text = cond.type === 'string' ? cond.value : cond.type === 'dateTime' ? cond.value : undefined;
  if (text === undefined) return undefined;
  const op = QUERY_OPERATOR.exec(text);
  if (!op || op[1] === '<>') return undefined;
  const at = easternToUtc((op[2] as string).trim());
  if (at === undefined) return undefined;
  // XML-RPC compared whole seconds; v2 keeps milliseconds: the end bound takes the whole second.
  return op[1] === '>' || op[1] === '>='
    ? { filter: `start_update_time==${new Date(at).toISOString()}` }
    : { filter: `end_update_time==${new Date(at + 999).toISOString()}` };
}

function narrowText(filter: string, cond: XmlRpcValue): Narrowing {
  if (cond.type !== 'string') return undefined;
  const v = cond.value;
  if (v === '' || v.startsWith('~') || GRAMMAR.test(v)) return undefined;
  const wildcard = v.indexOf('%');
  if (wildcard === -1) return { filter: `${filter}==${v}` };
  // v2's wildcard is a trailing `*` only: a prefix before the first `%` narrows the list.
  const prefix = v.slice(0, wildcard);
  return prefix === '' ? undefined : { filter: `${filter}==${prefix}*` };
}

function narrowCustom(field: CustomField, cond: XmlRpcValue): Narrowing {
  if (NUMERIC_CUSTOM.has(field.type)) {
    if (cond.type === 'int' || cond.type === 'double') return { filter: `${field.name}==${cond.value}` };
    if (cond.type !== 'string') return undefined;
    const v = cond.value.trim();
    if (/^-?\d+(\.\d+)?$/.test(v)) return { filter: `${field.name}==${v}` };
    const op = QUERY_OPERATOR.exec(v);
    if (op && op[1] !== '<>' && /^-?\d+(\.\d+)?$/.test((op[2] as string).trim()))
      return { filter: `${field.name}${op[1]}${(op[2] as string).trim()}` };
    return undefined;
  }
  return TEXT_CUSTOM.has(field.type) ? narrowText(field.name, cond) : undefined;
}

interface Row {
  id: number;
  values: Map<string, XmlRpcValue>;
}

/** The contacts that meet every condition, in v2's order, up to `wanted`: v2's pages are walked by page_token. */
async function matching(
  keap: TranslationContext,
  plan: Plan,
  custom: CustomFields | undefined,
  names: readonly string[],
  order: string,
  wanted: number,
): Promise<Row[]> {
  if (plan.unbounded !== undefined) {
    throw invalidParameter(
      `The condition on Contact.${plan.unbounded} cannot be sent as a REST v2 filter, and no other condition narrows the query: it would read every contact. Add a condition v2 can filter (Id, Email, FirstName, LastName, CompanyID, City, LastUpdated, a trailing %), or move the query to REST v2`,
    );
  }
  const readable = names.filter((n) => isContactField(n, custom));
  const rows: Row[] = [];
  let token = '';
  do {
    const query = new URLSearchParams({
      page_size: String(CONTACT_QUERY.maxPage),
      order_by: order,
      fields: v2Properties(readable).join(','),
    });
    if (plan.filters.length > 0) query.set('filter', plan.filters.join(';'));
    if (token !== '') query.set('page_token', token);
    const answer = await keap.rest.call('GET', `${V2}/contacts?${query.toString()}`);
    if (answer.status === 400) throw invalidParameter(`Keap's REST API refused the query: ${restText(answer.body)}`);
    const body = expectOk(answer.status, answer.body);
    for (const c of Array.isArray(body.contacts) ? (body.contacts as Contact[]) : []) {
      const { struct } = contactStruct(c, readable, custom);
      const values = struct.type === 'struct' ? struct.value : new Map<string, XmlRpcValue>();
      if (plan.checks.every(([name, cond]) => matches(values.get(name), cond))) rows.push({ id: Number(c.id), values });
      if (rows.length >= wanted) return rows;
    }
    token = typeof body.next_page_token === 'string' ? body.next_page_token : '';
  } while (token !== '');
  return rows;
}

function restText(body: unknown): string {
  const m = typeof body === 'object' && body !== null ? (body as Record<string, unknown>).message : undefined;
  return typeof m === 'string' ? m.slice(0, 200) : 'no reason given';
}

function noFieldFound(name: string): XmlRpcFault {
  return new XmlRpcFault(10, `[NoFieldFound]No field found: Contact.${name.slice(0, 100)}`);
}

function select(values: Map<string, XmlRpcValue>, fields: readonly string[]): XmlRpcValue {
  const out = new Map<string, XmlRpcValue>();
  for (const f of fields) {
    const v = values.get(f);
    if (v !== undefined) out.set(f, v);
  }
  return { type: 'struct', value: out };
}

function sortRows(rows: Row[], field: string, ascending: boolean): void {
  // Keap's XML-RPC: descending unless `ascending`; rows that compare equal keep Id order.
  const sign = ascending ? 1 : -1;
  rows.sort((a, b) => compareValues(cmpText(a.values.get(field)), cmpText(b.values.get(field))) * sign || a.id - b.id);
}

// ---------------------------------------------------------------- Eastern wall time

const EASTERN_OFFSET = new Intl.DateTimeFormat('en-US', { timeZone: 'America/New_York', timeZoneName: 'longOffset' });

/** The UTC instant of a US Eastern wall time 'YYYY-MM-DD[ HH:MM:SS]' (or YYYYMMDDTHH:MM:SS), as Keap's XML-RPC dates were. */
export function easternToUtc(wall: string): number | undefined {
  const m = /^(\d{4})-?(\d\d)-?(\d\d)(?:[ T](\d\d):(\d\d)(?::(\d\d))?)?$/.exec(wall);
  if (!m) return undefined;
  const asUtc = Date.UTC(+m[1]!, +m[2]! - 1, +m[3]!, +(m[4] ?? 0), +(m[5] ?? 0), +(m[6] ?? 0));
  if (Number.isNaN(asUtc)) return undefined;
  // The zone's offset at the instant, found twice: once near the wall time, once at the guess.
  let at = asUtc - offsetMs(asUtc);
  at = asUtc - offsetMs(at);
  return at;
}

function offsetMs(at: number): number {
  const name = EASTERN_OFFSET.formatToParts(at).find((p) => p.type === 'timeZoneName')?.value ?? 'GMT';
  const m = /GMT([+-])(\d\d):(\d\d)/.exec(name);
  if (!m) return 0;
  return (m[1] === '-' ? -1 : 1) * (+m[2]! * 60 + +m[3]!) * 60_000;
}
