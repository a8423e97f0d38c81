// REST v2 contacts, tags, a contact's tags, email opt status and the contact model, over the
// simulator's CrmStore. Shapes follow Keap's v2 OpenAPI (infusionsoft/keap-sdk sdks/v2/swagger.yml)
// as summarised in /work/shared/keap-xmlrpc-to-rest-v2.md §6-§8. Where the spec is silent the
// choice is marked "(choice)".
//
// Errors use the spec's Error schema {code, message, status, details} (since 2026-03-13).

import {
  ARRAY_PROPS,
  DUPLICATE_OPTIONS,
  SCALAR_PROPS,
  contactView,
  isMarketable,
  type Address,
  type CrmStore,
  type CustomFieldValue,
  type EmailAddress,
  type FaxNumber,
  type PhoneNumber,
  type StoredContact,
} from './crm.js';

export interface V2Answer {
  status: number;
  /** JSON body; undefined for 204. */
  body?: unknown;
}

const err = (code: number, status: string, message: string): V2Answer => ({
  status: code,
  body: { code, message, status, details: [] },
});
const badRequest = (message: string): V2Answer => err(400, 'INVALID_ARGUMENT', message);
const notFound = (message: string): V2Answer => err(404, 'NOT_FOUND', message);

const MAX_PAGE = 1000;
const ORDERABLE = new Set(['id', 'create_time', 'email', 'update_time']);

/** Answers a /crm/rest/v2/<rest> call, or undefined when the path is not one of these routes. */
export function handleRestV2(
  store: CrmStore,
  method: string,
  rest: string,
  query: string,
  body: Buffer,
): V2Answer | undefined {
  const params = new URLSearchParams(query);
  const seg = rest.split('/');
  try {
    if (rest === 'contacts') {
      if (method === 'GET') return listContacts(store, params);
      if (method === 'POST') return createContact(store, params, body);
      return err(405, 'METHOD_NOT_ALLOWED', 'Method Not Allowed');
    }
    if (rest === 'contacts:merge') {
      if (method === 'POST') return mergeContacts(store, params, body);
      return err(405, 'METHOD_NOT_ALLOWED', 'Method Not Allowed');
    }
    if (rest === 'contacts/model') {
      if (method === 'GET') return { status: 200, body: contactModel(store) };
      return err(405, 'METHOD_NOT_ALLOWED', 'Method Not Allowed');
    }
    if (seg[0] === 'contacts' && seg.length === 2) {
      const id = decodeURIComponent(seg[1]!);
      if (method === 'GET') return getContact(store, id, params);
      if (method === 'PATCH') return updateContact(store, id, params, body);
      if (method === 'DELETE') return store.deleteContact(id) ? { status: 204 } : contactNotFound(id);
      return err(405, 'METHOD_NOT_ALLOWED', 'Method Not Allowed');
    }
    if (seg[0] === 'contacts' && seg.length === 3 && seg[2] === 'tags') {
      if (method === 'GET') return contactTags(store, decodeURIComponent(seg[1]!), params);
      return err(405, 'METHOD_NOT_ALLOWED', 'Method Not Allowed');
    }
    if (rest === 'tags') {
      if (method === 'GET') return listTags(store, params);
      if (method === 'POST') return createTag(store, body);
      return undefined;
    }
    if (rest === 'tags/categories') {
      if (method === 'GET') return listTagCategories(store, params);
      if (method === 'POST') return createTagCategory(store, body);
      return err(405, 'METHOD_NOT_ALLOWED', 'Method Not Allowed');
    }
    if (seg[0] === 'tags' && seg[1] === 'categories' && seg.length === 3) {
      const category = store.tagCategories.get(decodeURIComponent(seg[2]!));
      if (method !== 'GET') return undefined;
      if (category === undefined) return notFound(`Tag category with id ${seg[2]!} not found`);
      return { status: 200, body: category };
    }
    if (seg[0] === 'tags' && seg.length === 3 && seg[2] !== undefined) {
      const tagId = decodeURIComponent(seg[1]!);
      if (seg[2] === 'contacts:applyTags' && method === 'POST') return applyTags(store, tagId, body);
      if (seg[2] === 'contacts:removeTags' && method === 'POST') return removeTags(store, tagId, body);
      if (seg[2] === 'contacts' && method === 'GET') return taggedContacts(store, tagId, params);
      return undefined;
    }
    if (seg[0] === 'emailAddresses' && seg.length === 3 && seg[2] === 'status') {
      const email = decodeURIComponent(seg[1]!);
      if (method === 'GET') return getEmailStatus(store, email);
      if (method === 'PATCH') return patchEmailStatus(store, email, body);
      return err(405, 'METHOD_NOT_ALLOWED', 'Method Not Allowed');
    }
  } catch (e) {
    if (e instanceof BadRequest) return badRequest(e.message);
    throw e;
  }
  return undefined;
}

/** A request the routes refuse with 400 (REST v1 reuses it, with its own body shape). */
export class BadRequest extends Error {}

export function jsonBody(body: Buffer): Record<string, unknown> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString('utf8'));
  } catch {
    throw new BadRequest('Input could not be converted to a valid request');
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new BadRequest('Input could not be converted to a valid request');
  }
  return parsed as Record<string, unknown>;
}

function contactNotFound(id: string): V2Answer {
  return notFound(`Contact with id ${id} not found`);
}

// ---------------------------------------------------------------- contacts

/** `fields=a,b` (comma list; repeated params accepted too): id is always returned (choice). */
function project(view: Record<string, unknown>, params: URLSearchParams): Record<string, unknown> {
  const wanted = params
    .getAll('fields')
    .flatMap((f) => f.split(','))
    .map((f) => f.trim())
    .filter((f) => f !== '');
  if (wanted.length === 0) return view; // (choice) the spec documents no default set: all properties
  const out: Record<string, unknown> = { id: view.id };
  for (const f of wanted) if (view[f] !== undefined) out[f] = view[f];
  return out;
}

function getContact(store: CrmStore, id: string, params: URLSearchParams): V2Answer {
  const c = store.contacts.get(id);
  if (c === undefined) return contactNotFound(id);
  return { status: 200, body: project(contactView(store, c), params) };
}

const str = (v: unknown, what: string): string => {
  if (typeof v === 'string') return v;
  if (typeof v === 'number') return String(v);
  throw new BadRequest(`${what} must be a string`);
};
const optStr = (o: Record<string, unknown>, k: string, what: string): string | undefined =>
  o[k] === undefined || o[k] === null ? undefined : str(o[k], `${what}.${k}`);

function arrayOf(v: unknown, what: string): Record<string, unknown>[] {
  if (!Array.isArray(v)) throw new BadRequest(`${what} must be an array`);
  return v.map((x, i) => {
    if (x === null || typeof x !== 'object' || Array.isArray(x))
      throw new BadRequest(`${what}[${i}] must be an object`);
    return x as Record<string, unknown>;
  });
}

function enumIn<T extends string>(v: unknown, allowed: readonly T[], what: string): T {
  if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v)) {
    throw new BadRequest(`${what} must be one of ${allowed.join(', ')}`);
  }
  return v as T;
}

function parseArrayProp(
  store: CrmStore,
  prop: (typeof ARRAY_PROPS)[number],
  v: unknown,
): EmailAddress[] | PhoneNumber[] | FaxNumber[] | Address[] | CustomFieldValue[] {
  const items = arrayOf(v, prop);
  switch (prop) {
    case 'email_addresses':
      return items.map((e, i) => {
        const email = str(e.email, `email_addresses[${i}].email`);
        if (!/^[^@\s]+@[^@\s]+$/.test(email)) throw new BadRequest(`email_addresses[${i}].email is not valid`);
        const reason = optStr(e, 'opt_in_reason', `email_addresses[${i}]`);
        return {
          email,
          field: enumIn(e.field, ['EMAIL1', 'EMAIL2', 'EMAIL3'] as const, `email_addresses[${i}].field`),
          ...(reason ? { opt_in_reason: reason } : {}),
        };
      });
    case 'phone_numbers':
      return items.map((p, i) => {
        const out: PhoneNumber = {
          number: str(p.number, `phone_numbers[${i}].number`),
          field: enumIn(
            p.field,
            ['PHONE1', 'PHONE2', 'PHONE3', 'PHONE4', 'PHONE5'] as const,
            `phone_numbers[${i}].field`,
          ),
        };
        const ext = optStr(p, 'extension', `phone_numbers[${i}]`);
        const type = optStr(p, 'type', `phone_numbers[${i}]`);
        if (ext !== undefined) out.extension = ext;
        if (type !== undefined) out.type = type;
        return out;
      });
    case 'fax_numbers':
      return items.map((p, i) => {
        const out: FaxNumber = {
          number: str(p.number, `fax_numbers[${i}].number`),
          field: enumIn(p.field, ['FAX1', 'FAX2'] as const, `fax_numbers[${i}].field`),
        };
        const type = optStr(p, 'type', `fax_numbers[${i}]`);
        if (type !== undefined) out.type = type;
        return out;
      });
    case 'addresses':
      return items.map((a, i) => {
        const out: Address = {
          field: enumIn(a.field, ['BILLING', 'SHIPPING', 'OTHER'] as const, `addresses[${i}].field`),
        };
        for (const k of [
          'line1',
          'line2',
          'locality',
          'region',
          'region_code',
          'country_code',
          'postal_code',
          'zip_code',
          'zip_four',
        ] as const) {
          const s = optStr(a, k, `addresses[${i}]`);
          if (s !== undefined) out[k] = s;
        }
        if (out.region !== undefined && out.country_code === undefined) {
          throw new BadRequest(`addresses[${i}]: country_code is required if region is specified`);
        }
        return out;
      });
    case 'custom_fields':
      return items.map((f, i) => {
        const id = str(f.id, `custom_fields[${i}].id`);
        if (store.customFieldById(id) === undefined)
          throw new BadRequest(`custom_fields[${i}].id ${id} is not a custom field`);
        return { id, content: f.content ?? null };
      });
  }
}

/** Applies a CreateUpdateContactRequest's properties (only `mask` ones when given) onto `target`. */
export function applyRequest(
  store: CrmStore,
  target: Partial<StoredContact>,
  req: Record<string, unknown>,
  mask: Set<string> | undefined,
): void {
  const known = new Set<string>([
    ...SCALAR_PROPS,
    ...ARRAY_PROPS,
    'company',
    'origin',
    'social_accounts',
    'utm_parameters',
  ]);
  for (const k of Object.keys(req)) if (!known.has(k)) throw new BadRequest(`Unknown property: ${k}`);
  if (mask) for (const k of mask) if (!known.has(k)) throw new BadRequest(`Invalid update_mask value: ${k}`);
  const wanted = (k: string): boolean => req[k] !== undefined && (mask === undefined || mask.has(k));
  for (const p of SCALAR_PROPS) {
    if (!wanted(p)) continue;
    const v = req[p];
    if (v === null) delete target[p];
    else target[p] = str(v, p);
  }
  for (const p of ARRAY_PROPS) {
    if (!wanted(p)) continue;
    (target as Record<string, unknown>)[p] = req[p] === null ? [] : parseArrayProp(store, p, req[p]);
  }
  if (wanted('company')) {
    const co = req.company;
    if (co === null) delete target.company;
    else if (typeof co !== 'object' || Array.isArray(co)) throw new BadRequest('company must be an object');
    else {
      const o = co as Record<string, unknown>;
      const id = optStr(o, 'id', 'company');
      const name = optStr(o, 'company_name', 'company');
      target.company = { ...(id !== undefined ? { id } : {}), ...(name !== undefined ? { company_name: name } : {}) };
    }
  }
}

export function emptyContact(): Omit<StoredContact, 'id' | 'create_time' | 'update_time'> {
  return { email_addresses: [], phone_numbers: [], fax_numbers: [], addresses: [], custom_fields: [] };
}

function createContact(store: CrmStore, params: URLSearchParams, body: Buffer): V2Answer {
  const req = jsonBody(body);
  const c = emptyContact();
  applyRequest(store, c, req, undefined);
  if (c.email_addresses.length === 0 && c.phone_numbers.length === 0 && c.addresses.length === 0) {
    return badRequest('Contact must contain at least one item in `email_addresses`, `phone_numbers`, or `addresses`');
  }
  const dup = params.get('duplicate_option');
  if (dup !== null) {
    const option = enumIn(dup, DUPLICATE_OPTIONS, 'duplicate_option');
    const match = store.findDuplicate(c, option);
    if (match) {
      applyRequest(store, match, req, undefined);
      store.touch(match);
      return { status: 200, body: project(contactView(store, match), params) };
    }
  }
  const created = store.createContact(c);
  return { status: 201, body: project(contactView(store, created), params) };
}

function updateContact(store: CrmStore, id: string, params: URLSearchParams, body: Buffer): V2Answer {
  const c = store.contacts.get(id);
  if (c === undefined) return contactNotFound(id);
  const req = jsonBody(body);
  // update_mask: repeated params (the generated clients) or a comma list (choice: both accepted).
  const maskList = params
    .getAll('update_mask')
    .flatMap((m) => m.split(','))
    .map((m) => m.trim())
    .filter((m) => m !== '');
  const draft: StoredContact = structuredClone(c);
  applyRequest(store, draft, req, maskList.length > 0 ? new Set(maskList) : undefined);
  Object.assign(c, draft);
  for (const p of SCALAR_PROPS) if (draft[p] === undefined) delete c[p];
  if (draft.company === undefined) delete c.company;
  store.touch(c);
  return { status: 200, body: project(contactView(store, c), params) };
}

/** POST /contacts:merge {contact_id, duplicate_contact_id}: the merged contact (CrmStore.mergeContacts). */
function mergeContacts(store: CrmStore, params: URLSearchParams, body: Buffer): V2Answer {
  const req = jsonBody(body);
  const id = (k: string): string => (req[k] === undefined || req[k] === null ? '' : str(req[k], k));
  const result = store.mergeContacts(id('contact_id'), id('duplicate_contact_id'));
  if ('merged' in result) return { status: 200, body: project(contactView(store, result.merged), params) };
  if (result.error === 'invalid') return badRequest(result.message);
  return contactNotFound(result.id);
}

function contactModel(store: CrmStore): unknown {
  return {
    custom_fields: store.customFields.map((f) => ({ record_type: 'CONTACT', options: [], ...f })),
    optional_properties: ['custom_fields', 'job_title', 'notes', 'referral_code', 'social_accounts', 'utm_parameters'],
  };
}

// ---------------------------------------------------------------- filter / paging

interface Condition {
  field: string;
  op: '==' | '>' | '<' | '>=' | '<=';
  value: string;
}

function parseFilter(filter: string | null): Condition[] {
  if (filter === null || filter.trim() === '') return [];
  return filter.split(';').map((part) => {
    const m = /^\s*([A-Za-z_][\w]*)\s*(==|>=|<=|>|<)\s*(.*?)\s*$/.exec(part);
    if (!m) throw new BadRequest(`Invalid filter: ${part}`);
    return { field: m[1]!, op: m[2] as Condition['op'], value: m[3]! };
  });
}

/** Case-insensitive equality, or a prefix match when the value ends in `*` and the field allows it. */
function textMatch(actual: string | undefined, value: string, wildcard: boolean): boolean {
  const a = (actual ?? '').toLowerCase();
  const v = value.toLowerCase();
  if (wildcard && v.endsWith('*')) return a.startsWith(v.slice(0, -1));
  return a === v;
}

function compare(a: number, op: Condition['op'], b: number): boolean {
  switch (op) {
    case '==':
      return a === b;
    case '>':
      return a > b;
    case '<':
      return a < b;
    case '>=':
      return a >= b;
    case '<=':
      return a <= b;
  }
}

function contactMatcher(store: CrmStore, cond: Condition): (c: StoredContact) => boolean {
  const { field, op, value } = cond;
  const eqOnly = () => {
    if (op !== '==') throw new BadRequest(`Operator ${op} is not supported for ${field}`);
  };
  const billing = (c: StoredContact) => c.addresses.find((a) => a.field === 'BILLING');
  switch (field) {
    case 'email':
      eqOnly();
      return (c) => c.email_addresses.some((e) => textMatch(e.email, value, true));
    case 'given_name':
    case 'family_name':
    case 'middle_name':
    case 'website':
      eqOnly();
      return (c) => textMatch(c[field], value, true);
    case 'company_id':
      eqOnly();
      return (c) => c.company?.id === value;
    case 'contact_ids':
    case 'ids': {
      eqOnly();
      const set = new Set(value.split(',').map((s) => s.trim()));
      return (c) => set.has(c.id);
    }
    case 'contact_id': {
      const n = Number(value);
      if (!Number.isInteger(n)) throw new BadRequest('contact_id must be an integer');
      return (c) => compare(Number(c.id), op, n);
    }
    case 'city':
      eqOnly();
      return (c) => textMatch(billing(c)?.locality, value, true);
    case 'state':
      eqOnly();
      return (c) => textMatch(billing(c)?.region, value, true);
    case 'start_update_time':
    case 'end_update_time': {
      eqOnly();
      const t = Date.parse(value);
      if (Number.isNaN(t)) throw new BadRequest(`${field} must be an ISO-8601 date-time`);
      // (choice) both ends inclusive; the spec does not say.
      return field === 'start_update_time'
        ? (c) => Date.parse(c.update_time) >= t
        : (c) => Date.parse(c.update_time) <= t;
    }
    default: {
      const cf = store.customFieldByName(field);
      if (cf === undefined) throw new BadRequest(`Invalid filter field: ${field}`);
      const numeric = ['WHOLE_NUMBER', 'DECIMAL_NUMBER', 'CURRENCY', 'PERCENT'].includes(cf.field_type);
      if (numeric) {
        const n = Number(value);
        return (c) => {
          const v = c.custom_fields.find((f) => f.id === cf.id)?.content;
          return v !== undefined && v !== null && v !== '' && compare(Number(v), op, n);
        };
      }
      eqOnly();
      return (c) => {
        const v = c.custom_fields.find((f) => f.id === cf.id)?.content;
        return (typeof v === 'string' || typeof v === 'number') && textMatch(String(v), value, true);
      };
    }
  }
}

/** page_token is opaque to clients; here the base64url of the next offset (choice). */
function page<T>(items: T[], params: URLSearchParams): { items: T[]; next: string } {
  const sizeRaw = params.get('page_size');
  let size = MAX_PAGE;
  if (sizeRaw !== null && sizeRaw !== '') {
    const n = Number(sizeRaw);
    if (!Number.isInteger(n) || n < 0 || n > MAX_PAGE) throw new BadRequest('page_size must be between 0 and 1000');
    if (n > 0) size = n;
  }
  let offset = 0;
  const token = params.get('page_token');
  if (token !== null && token !== '') {
    const n = Number(Buffer.from(token, 'base64url').toString('utf8'));
    if (!Number.isInteger(n) || n < 0) throw new BadRequest('Invalid page_token');
    offset = n;
  }
  const slice = items.slice(offset, offset + size);
  const nextOffset = offset + slice.length;
  return { items: slice, next: nextOffset < items.length ? Buffer.from(String(nextOffset)).toString('base64url') : '' };
}

function orderBy<T>(
  items: T[],
  raw: string | null,
  keys: Record<string, (x: T) => string | number>,
  dflt: string,
): T[] {
  const spec = (raw ?? dflt).trim().split(/\s+/);
  const key = keys[spec[0] ?? ''];
  const dir = (spec[1] ?? 'asc').toLowerCase();
  if (key === undefined || (dir !== 'asc' && dir !== 'desc')) throw new BadRequest(`Invalid order_by: ${raw ?? ''}`);
  const sign = dir === 'asc' ? 1 : -1;
  return [...items].sort((a, b) => {
    const x = key(a);
    const y = key(b);
    return (x < y ? -1 : x > y ? 1 : 0) * sign;
  });
}

function listContacts(store: CrmStore, params: URLSearchParams): V2Answer {
  const matchers = parseFilter(params.get('filter')).map((c) => contactMatcher(store, c));
  const rawOrder = params.get('order_by');
  if (rawOrder !== null && !ORDERABLE.has(rawOrder.trim().split(/\s+/)[0] ?? '')) {
    throw new BadRequest(`Invalid order_by: ${rawOrder}`);
  }
  const matched = orderBy(
    store.allContacts().filter((c) => matchers.every((m) => m(c))),
    rawOrder,
    {
      id: (c) => Number(c.id),
      create_time: (c) => c.create_time,
      update_time: (c) => c.update_time,
      email: (c) => (c.email_addresses.find((e) => e.field === 'EMAIL1')?.email ?? '').toLowerCase(),
    },
    'id asc',
  );
  const p = page(matched, params);
  return {
    status: 200,
    body: { contacts: p.items.map((c) => project(contactView(store, c), params)), next_page_token: p.next },
  };
}

// ---------------------------------------------------------------- tags

function listTags(store: CrmStore, params: URLSearchParams): V2Answer {
  const conds = parseFilter(params.get('filter'));
  const tags = [...store.tags.values()].filter((t) =>
    conds.every((c) => {
      if (c.op !== '==') throw new BadRequest(`Operator ${c.op} is not supported for ${c.field}`);
      switch (c.field) {
        case 'name':
          return textMatch(t.name, c.value, true);
        case 'description':
          return textMatch(t.description, c.value, true);
        case 'category_id':
          return c.value === 'NONE' ? t.category.id === '' : t.category.id === c.value;
        case 'tag_ids':
          return c.value.split(',').includes(t.id);
        default:
          throw new BadRequest(`Invalid filter field: ${c.field}`);
      }
    }),
  );
  const sorted = orderBy(
    tags,
    params.get('order_by'),
    {
      name: (t) => t.name.toLowerCase(),
      create_time: (t) => t.create_time,
      update_time: (t) => t.update_time,
      id: (t) => Number(t.id),
    },
    'id asc',
  );
  const p = page(sorted, params);
  return { status: 200, body: { tags: p.items, next_page_token: p.next } };
}

/** POST /tags (CreateUpdateTagRequest): 201 Tag. (choice) A name is required; a category must exist (400). */
function createTag(store: CrmStore, body: Buffer): V2Answer {
  const req = jsonBody(body);
  const name = optStr(req, 'name', 'tag');
  if (name === undefined || name.trim() === '') return badRequest('name is required');
  const description = optStr(req, 'description', 'tag') ?? '';
  let categoryId = '';
  if (req.category !== undefined && req.category !== null) {
    if (typeof req.category !== 'object' || Array.isArray(req.category))
      return badRequest('category must be an object');
    categoryId = optStr(req.category as Record<string, unknown>, 'id', 'category') ?? '';
    if (categoryId !== '' && !store.tagCategories.has(categoryId))
      return badRequest(`Tag category with id ${categoryId} not found`);
  }
  return { status: 201, body: store.addTag(name.slice(0, 255), description, categoryId) };
}

/** GET /tags/categories: filter name, description (`NONE` = empty); order_by name, create_time, update_time. */
function listTagCategories(store: CrmStore, params: URLSearchParams): V2Answer {
  const conds = parseFilter(params.get('filter'));
  const categories = [...store.tagCategories.values()].filter((t) =>
    conds.every((c) => {
      if (c.op !== '==') throw new BadRequest(`Operator ${c.op} is not supported for ${c.field}`);
      switch (c.field) {
        case 'name':
        case 'description':
          // (choice) exact and case-insensitive; the spec documents no wildcard here.
          return c.value === 'NONE' ? t[c.field] === '' : textMatch(t[c.field], c.value, false);
        default:
          throw new BadRequest(`Invalid filter field: ${c.field}`);
      }
    }),
  );
  const sorted = orderBy(
    categories,
    params.get('order_by'),
    {
      name: (t) => t.name.toLowerCase(),
      create_time: (t) => t.create_time,
      update_time: (t) => t.update_time,
      id: (t) => Number(t.id),
    },
    'id asc', // (choice) the spec names no default order
  );
  const p = page(sorted, params);
  return { status: 200, body: { tag_categories: p.items, next_page_token: p.next } };
}

/** POST /tags/categories (CreateUpdateTagCategoryRequest): 201 TagCategory; (choice) a taken name is 409. */
function createTagCategory(store: CrmStore, body: Buffer): V2Answer {
  const req = jsonBody(body);
  const name = optStr(req, 'name', 'tag category');
  if (name === undefined || name.trim() === '') return badRequest('name is required');
  if ([...store.tagCategories.values()].some((c) => c.name.toLowerCase() === name.toLowerCase()))
    return err(409, 'ALREADY_EXISTS', `Tag category named ${name} already exists`);
  return { status: 201, body: store.addTagCategory(name, optStr(req, 'description', 'tag category') ?? '') };
}

function contactIdsBody(body: Buffer): string[] {
  const req = jsonBody(body);
  const ids = req.contact_ids;
  if (!Array.isArray(ids) || ids.length === 0) throw new BadRequest('contact_ids is required');
  const out = ids.map((x) => str(x, 'contact_ids[]'));
  if (new Set(out).size !== out.length) throw new BadRequest('contact_ids must be unique');
  return out;
}

function applyTags(store: CrmStore, tagId: string, body: Buffer): V2Answer {
  if (!store.tags.has(tagId)) return notFound(`Tag with id ${tagId} not found`);
  const results: Record<string, string> = {};
  for (const id of contactIdsBody(body)) results[id] = store.applyTag(tagId, id);
  return { status: 200, body: { results } };
}

function removeTags(store: CrmStore, tagId: string, body: Buffer): V2Answer {
  if (!store.tags.has(tagId)) return notFound(`Tag with id ${tagId} not found`);
  for (const id of contactIdsBody(body)) store.removeTag(tagId, id);
  return { status: 204 };
}

function contactTags(store: CrmStore, contactId: string, params: URLSearchParams): V2Answer {
  if (!store.contacts.has(contactId)) return contactNotFound(contactId);
  const rows = [...store.tagsOf(contactId)]
    .map(([tagId, applied]) => ({ tag: store.tags.get(tagId), applied_time: applied }))
    .filter((r) => r.tag !== undefined);
  const sorted = orderBy(
    rows,
    params.get('order_by'),
    {
      name: (r) => r.tag!.name.toLowerCase(),
      applied_time: (r) => r.applied_time,
      create_time: (r) => r.tag!.create_time,
      update_time: (r) => r.tag!.update_time,
      category_id: (r) => r.tag!.category.id,
      id: (r) => Number(r.tag!.id),
    },
    'id asc',
  );
  const p = page(sorted, params);
  return { status: 200, body: { tags: p.items, next_page_token: p.next } };
}

function taggedContacts(store: CrmStore, tagId: string, params: URLSearchParams): V2Answer {
  if (!store.tags.has(tagId)) return notFound(`Tag with id ${tagId} not found`);
  const rows = store
    .allContacts()
    .filter((c) => store.tagsOf(c.id).has(tagId))
    .map((c) => ({
      id: c.id,
      email: c.email_addresses.find((e) => e.field === 'EMAIL1')?.email,
      given_name: c.given_name,
      family_name: c.family_name,
      applied_time: store.tagsOf(c.id).get(tagId),
    }));
  const p = page(rows, params);
  return { status: 200, body: { contacts: p.items, next_page_token: p.next } };
}

// ---------------------------------------------------------------- email status

function statusBody(store: CrmStore, email: string): unknown {
  const s = store.emailStatus(email)!;
  return {
    email: s.email,
    opted_in: isMarketable(s.status),
    status: s.status,
    create_time: s.create_time,
  };
}

function getEmailStatus(store: CrmStore, email: string): V2Answer {
  if (store.emailStatus(email) === undefined) return notFound(`Email address ${email} not found`);
  return { status: 200, body: statusBody(store, email) };
}

function patchEmailStatus(store: CrmStore, email: string, body: Buffer): V2Answer {
  const req = jsonBody(body);
  if (typeof req.opted_in !== 'boolean') return badRequest('opted_in is required');
  if (typeof req.reason !== 'string' || req.reason === '') return badRequest('reason is required');
  if (store.emailStatus(email) === undefined) return notFound(`Email address ${email} not found`);
  if (req.opted_in) store.optIn(email, req.reason);
  else store.optOut(email, req.reason);
  return { status: 200, body: statusBody(store, email) };
}
