// DataService.query and DataService.count on Keap's tag tables, answered from REST v2
// (keap-xmlrpc-to-rest-v2.md §5, §5.1, §7.2, §9):
//
// - ContactGroup (tags): GET /v2/tags. Id (an id or a list) goes to v2 as `tag_ids==`,
//   GroupCategoryId as `category_id==` (`~null~` as `NONE`), GroupName and GroupDescription
//   as `name==` / `description==` when exact or with one trailing `%` (v2's trailing `*`);
//   any other condition (a leading or inner `%`, `~<>~`, ...) is left to the filter here.
// - ContactGroupAssign (which contact has which tag): GET /v2/contacts/{ContactId}/tags, or
//   GET /v2/tags/{GroupId}/contacts. One of ContactId or GroupId must name ids: v2 has no list
//   of every assignment, and reading every contact's tags would cost one call per contact, so
//   such a query is refused (fault 12) rather than run slowly through the account's quota.
// - ContactGroupCategory: GET /v2/tags/categories, filtered here.
//
// Every condition is applied here too, on the rows read, with Keap's XML-RPC rules
// (query-data.ts): a v2 filter only narrows what is read. This assumes v2's filters are no
// narrower than Keap's XML-RPC (name matching without regard to case, as the simulator's and as
// v2 documents for companies; tags document nothing). Rows come in Keap's XML-RPC order: by Id
// (ContactGroupAssign: by ContactId, then GroupId), then by orderBy when given. Without an
// orderBy, reading stops once the page asked for is complete (in pages of just that many rows
// when v2 filtered on every condition, else of 1000); this assumes v2 lists in ascending id
// order when given no order_by, as it did in every answer seen (the spec names no default). With
// an orderBy every page is read: these tables are small, though one tag's contacts may not be.
import type { XmlRpcValue } from '../xmlrpc-codec.js';
import { V2, expectOk, invalidParameter } from './args.js';
import { easternDateTime } from './contact-fields.js';
import { matchesAll, ordered, pageOf, pageSize, project, type Row } from './query-data.js';
import { XmlRpcFault, type TranslationContext } from './rest.js';

type Json = Record<string, unknown>;

/** How many ids one ContactGroupAssign query may name (choice): each is a REST call. */
export const MAX_ASSIGN_IDS = 100;

interface TagTable {
  fields: readonly string[];
  /**
   * The rows that may match `queryData`, in the table's own order; `need` (when given) is how
   * many matching rows are enough, `matching` tells which match.
   */
  read(keap: TranslationContext, queryData: ReadonlyMap<string, XmlRpcValue>, need: Need): Promise<Row[]>;
  /** Throws before any REST call when the query cannot be answered (ContactGroupAssign without ids). */
  check?(queryData: ReadonlyMap<string, XmlRpcValue>): void;
}

interface Need {
  /** Enough rows: stop reading once this many match; undefined reads everything. */
  count: number | undefined;
  matching: (row: Row) => boolean;
  /** Whether ContactGroup (the tag's name) is asked for, compared or ordered on. */
  wantsName: boolean;
}

const int = (v: unknown): XmlRpcValue | undefined => {
  const n = typeof v === 'number' ? v : typeof v === 'string' && /^-?\d+$/.test(v) ? Number(v) : NaN;
  return Number.isSafeInteger(n) ? { type: 'int', value: n } : undefined;
};
const str = (v: unknown): XmlRpcValue | undefined =>
  typeof v === 'string' && v !== '' ? { type: 'string', value: v } : undefined;

function row(entries: [string, XmlRpcValue | undefined][]): Row {
  const r: Row = new Map();
  for (const [k, v] of entries) if (v !== undefined) r.set(k, v);
  return r;
}

/** The ids a condition names exactly: an int, a string of digits, or a list of them; else undefined. */
function exactIds(cond: XmlRpcValue | undefined): number[] | undefined {
  if (cond === undefined) return undefined;
  if (cond.type === 'int') return [cond.value];
  if (cond.type === 'string') return /^\d{1,15}$/.test(cond.value.trim()) ? [Number(cond.value.trim())] : undefined;
  if (cond.type === 'array') {
    const ids: number[] = [];
    for (const v of cond.value) {
      const one = v.type === 'array' ? undefined : exactIds(v);
      if (one === undefined) return undefined;
      ids.push(...one);
    }
    return [...new Set(ids)].sort((a, b) => a - b);
  }
  return undefined;
}

/**
 * A text condition as a v2 filter value: exact, or a prefix with one trailing `%`; undefined
 * when v2 cannot say it (a leading or inner `%`, an operator, `~null~`), or when the value
 * holds v2's own syntax (`*`, `,`, `;`).
 */
function textFilter(cond: XmlRpcValue | undefined): string | undefined {
  // (An int compares as a number in Keap's XML-RPC, '05' equal to 5: not a text filter.)
  if (cond?.type !== 'string') return undefined;
  const v = cond.value;
  if (v === '' || v.startsWith('~') || /[*,;]/.test(v)) return undefined;
  const body = v.endsWith('%') ? v.slice(0, -1) : v;
  if (body === '' || body.includes('%')) return undefined;
  return v.endsWith('%') ? `${body}*` : body;
}

/**
 * Reads a v2 list page by page (`page_token`), keeping the rows `toRows` makes of each item,
 * until there are no more pages or `need.count` rows match.
 */
async function walk(
  keap: TranslationContext,
  path: string,
  query: Record<string, string>,
  listProp: string,
  toRows: (item: Json) => Row[],
  need: Need,
  exact: boolean,
): Promise<Row[]> {
  const rows: Row[] = [];
  let matched = 0;
  // With every condition in v2's filter, the rows read all match: read only as many as needed.
  const size = need.count !== undefined && exact ? Math.min(1000, Math.max(1, need.count)) : 1000;
  let token = '';
  for (;;) {
    const params = new URLSearchParams({ ...query, page_size: String(size) });
    if (token !== '') params.set('page_token', token);
    const answer = await keap.rest.call('GET', `${path}?${params.toString()}`);
    if (answer.status === 404) return rows;
    const body = expectOk(answer.status, answer.body);
    const items = Array.isArray(body[listProp]) ? (body[listProp] as Json[]) : [];
    for (const item of items)
      for (const r of toRows(item)) {
        rows.push(r);
        if (need.matching(r)) matched++;
      }
    token = typeof body.next_page_token === 'string' ? body.next_page_token : '';
    if (token === '' || items.length === 0) return rows;
    if (need.count !== undefined && matched >= need.count) return rows;
  }
}

const num = (r: Row, field: string): number => {
  const v = r.get(field);
  return v?.type === 'int' ? v.value : 0;
};

const byNumber =
  (...fields: string[]) =>
  (a: Row, b: Row): number => {
    for (const f of fields) {
      const d = num(a, f) - num(b, f);
      if (d !== 0) return d;
    }
    return 0;
  };

function tagRow(t: Json): Row {
  const category = (t.category as Json | undefined)?.id;
  return row([
    ['Id', int(t.id)],
    ['GroupName', str(t.name)],
    ['GroupCategoryId', int(category)],
    ['GroupDescription', str(t.description)],
  ]);
}

const CONTACT_GROUP: TagTable = {
  fields: ['Id', 'GroupName', 'GroupCategoryId', 'GroupDescription'],
  async read(keap, queryData, need) {
    const filter: string[] = [];
    let exact = true;
    for (const [field, cond] of queryData) {
      if (field === 'Id') {
        const ids = exactIds(cond);
        if (ids?.length === 0) return [];
        if (ids !== undefined) filter.push(`tag_ids==${ids.join(',')}`);
        else exact = false;
      } else if (field === 'GroupCategoryId') {
        const ids = exactIds(cond);
        if (ids?.length === 1) filter.push(`category_id==${ids[0]}`);
        else if (cond.type === 'string' && cond.value === '~null~') filter.push('category_id==NONE');
        else exact = false;
      } else {
        const value = textFilter(cond);
        if (value !== undefined) filter.push(`${field === 'GroupName' ? 'name' : 'description'}==${value}`);
        else exact = false;
      }
    }
    const query: Record<string, string> = filter.length > 0 ? { filter: filter.join(';') } : {};
    const rows = await walk(keap, `${V2}/tags`, query, 'tags', (t) => [tagRow(t)], need, exact);
    return rows.sort(byNumber('Id'));
  },
};

function assignRow(tagId: unknown, tagName: unknown, applied: unknown, contactId: unknown): Row {
  return row([
    ['GroupId', int(tagId)],
    ['ContactGroup', str(tagName)],
    ['DateCreated', typeof applied === 'string' ? easternDateTime(applied) : undefined],
    ['ContactId', int(contactId)],
  ]);
}

function assignIds(queryData: ReadonlyMap<string, XmlRpcValue>): { contacts?: number[]; groups?: number[] } {
  const contacts = exactIds(queryData.get('ContactId'));
  const groups = exactIds(queryData.get('GroupId'));
  if (contacts === undefined && groups === undefined)
    throw invalidParameter(
      "ContactGroupAssign is read only with ContactId or GroupId in queryData (an id or a list of ids): Keap's REST API lists one contact's tags or one tag's contacts, and reading every contact's tags would take a call per contact",
    );
  // With both, the shorter list (then ContactId: a contact's tags are few); the other is filtered here.
  const which =
    contacts !== undefined && (groups === undefined || contacts.length <= groups.length)
      ? { contacts }
      : { groups: groups ?? [] };
  if ((which.contacts ?? which.groups ?? []).length > MAX_ASSIGN_IDS)
    throw invalidParameter(`ContactGroupAssign is read for at most ${MAX_ASSIGN_IDS} ContactId or GroupId ids at once`);
  return which;
}

const CONTACT_GROUP_ASSIGN: TagTable = {
  fields: ['GroupId', 'ContactGroup', 'DateCreated', 'ContactId'],
  check(queryData) {
    assignIds(queryData);
  },
  async read(keap, queryData, need) {
    const { contacts, groups } = assignIds(queryData);
    const rows: Row[] = [];
    if (contacts !== undefined) {
      // Contacts in id order, each one's tags whole (few): the rows come in ContactId, GroupId order.
      for (const id of contacts) {
        const mine = await walk(
          keap,
          `${V2}/contacts/${id}/tags`,
          {},
          'tags',
          (a) => {
            const tag = (a.tag ?? {}) as Json;
            return [assignRow(tag.id, tag.name, a.applied_time, id)];
          },
          { ...need, count: undefined },
          false,
        );
        rows.push(...mine.sort(byNumber('GroupId')));
        if (need.count !== undefined && rows.filter(need.matching).length >= need.count) break;
      }
      return rows;
    }
    // One tag's contacts carry no tag name: read the names once, if the query needs them.
    const tagIds = groups ?? [];
    const names = new Map<number, string>();
    if (tagIds.length > 0 && need.wantsName) {
      const found = await walk(
        keap,
        `${V2}/tags`,
        { filter: `tag_ids==${tagIds.join(',')}` },
        'tags',
        (t) => [tagRow(t)],
        { count: undefined, matching: () => true, wantsName: true },
        false,
      );
      for (const t of found) {
        const name = t.get('GroupName');
        if (name?.type === 'string') names.set(num(t, 'Id'), name.value);
      }
    }
    for (const id of tagIds) {
      const theirs = await walk(
        keap,
        `${V2}/tags/${id}/contacts`,
        {},
        'contacts',
        (c) => [assignRow(id, names.get(id), c.applied_time, c.id)],
        // One tag's contacts come in contact id order: enough rows is enough, for one tag.
        tagIds.length === 1 ? need : { ...need, count: undefined },
        false,
      );
      rows.push(...theirs);
    }
    return rows.sort(byNumber('ContactId', 'GroupId'));
  },
};

const CONTACT_GROUP_CATEGORY: TagTable = {
  fields: ['Id', 'CategoryName', 'CategoryDescription'],
  async read(keap, queryData, need) {
    const rows = await walk(
      keap,
      `${V2}/tags/categories`,
      {},
      'tag_categories',
      (c) => [
        row([
          ['Id', int(c.id)],
          ['CategoryName', str(c.name)],
          ['CategoryDescription', str(c.description)],
        ]),
      ],
      need,
      queryData.size === 0,
    );
    return rows.sort(byNumber('Id'));
  },
};

const TAG_TABLES = new Map<string, TagTable>([
  ['ContactGroup', CONTACT_GROUP],
  ['ContactGroupAssign', CONTACT_GROUP_ASSIGN],
  ['ContactGroupCategory', CONTACT_GROUP_CATEGORY],
]);

function noFieldFound(table: string, field: string): XmlRpcFault {
  return new XmlRpcFault(10, `[NoFieldFound]No field found: ${table}.${field}`);
}

/** Keap's XML-RPC checks, in its order: queryData's fields, the selected ones, orderBy; then the table's own. */
function check(
  table: string,
  t: TagTable,
  queryData: ReadonlyMap<string, XmlRpcValue>,
  selected: readonly string[],
  orderBy: string | undefined,
): void {
  for (const f of [...queryData.keys(), ...selected, ...(orderBy === undefined ? [] : [orderBy])])
    if (!t.fields.includes(f)) throw noFieldFound(table, f);
  t.check?.(queryData);
}

/**
 * DataService.query(table, limit, page, queryData, selectedFields, orderBy, ascending) on a tag
 * table, or undefined when `table` is not one (DataService.query on other tables is answered
 * elsewhere).
 */
export function queryTagTable(
  table: string,
  limit: number,
  page: number,
  queryData: ReadonlyMap<string, XmlRpcValue>,
  selectedFields: readonly string[],
  orderBy: string | undefined,
  ascending: boolean | undefined,
  keap: TranslationContext,
): Promise<XmlRpcValue> | undefined {
  const t = TAG_TABLES.get(table);
  if (t === undefined) return undefined;
  return (async (): Promise<XmlRpcValue> => {
    check(table, t, queryData, selectedFields, orderBy);
    if (pageSize(limit) === 0) return { type: 'array', value: [] };
    const matching = (r: Row) => matchesAll(r, queryData);
    // Without orderBy, the table's own order is the answer's: reading can stop at the page's end.
    const count = orderBy === undefined && page >= 0 ? (page + 1) * pageSize(limit) : undefined;
    const wantsName = [...queryData.keys(), ...selectedFields, orderBy].includes('ContactGroup');
    const rows = (await t.read(keap, queryData, { count, matching, wantsName })).filter(matching);
    return project(pageOf(ordered(rows, orderBy, ascending), limit, page), selectedFields);
  })();
}

/** DataService.count(table, queryData) on a tag table (every page read), or undefined when `table` is not one. */
export function countTagTable(
  table: string,
  queryData: ReadonlyMap<string, XmlRpcValue>,
  keap: TranslationContext,
): Promise<XmlRpcValue> | undefined {
  const t = TAG_TABLES.get(table);
  if (t === undefined) return undefined;
  return (async (): Promise<XmlRpcValue> => {
    check(table, t, queryData, [], undefined);
    const matching = (r: Row) => matchesAll(r, queryData);
    const rows = await t.read(keap, queryData, {
      count: undefined,
      matching,
      wantsName: queryData.has('ContactGroup'),
    });
    return { type: 'int', value: rows.filter(matching).length };
  })();
}
