// REST v1 contacts (/crm/rest/v1/contacts...), over the same CrmStore as REST v2 and the classic
// XML-RPC methods: a contact created in one is read, changed and deleted through the others.
// Keap's v1 shapes: ids are numbers, the contact's times are `date_created` and `last_updated`,
// lists page with `limit`/`offset` and answer {contacts, count, next, previous}. Where Keap's v1
// documentation is silent the choice is marked "(choice)".
//
// Errors: (choice) `{"message": "..."}`, the shape Keap's v1 answers its own 400s and 404s with
// in its users' reports; v1 has no documented Error schema.

import { ARRAY_PROPS, SCALAR_PROPS, contactView, type CrmStore, type StoredContact } from './crm.js';
import { BadRequest, applyRequest, emptyContact, jsonBody } from './rest-v2.js';

export interface V1Answer {
  status: number;
  /** JSON body; undefined for 204. */
  body?: unknown;
}

const message = (status: number, text: string): V1Answer => ({ status, body: { message: text } });

/** (choice) Keap documents no default page size for v1; 1000 is its largest. */
const MAX_LIMIT = 1000;

/** What a v1 request may set: REST v2's CreateUpdateContactRequest properties, v1's spellings mapped. */
const V1_KNOWN = new Set<string>([...SCALAR_PROPS, ...ARRAY_PROPS, 'company']);
const V1_RENAMED: Readonly<Record<string, string>> = { lead_source_id: 'leadsource_id' };

/**
 * Answers a /crm/rest/v1/<rest> contacts call, or undefined when the path is not one of these
 * routes. `base` is the simulator's URL, for the list's `next` and `previous` links.
 */
export function handleRestV1(
  store: CrmStore,
  method: string,
  rest: string,
  query: string,
  body: Buffer,
  base: string,
): V1Answer | undefined {
  const params = new URLSearchParams(query);
  const seg = rest.split('/');
  if (seg[0] !== 'contacts' || seg.length > 2) return undefined;
  try {
    // `contacts/` too: Keap's own next and previous links are written so.
    if (seg.length === 1 || seg[1] === '') {
      if (method === 'GET') return listContacts(store, params, base);
      if (method === 'POST') return createContact(store, body);
      return message(405, 'Method Not Allowed');
    }
    const id = seg[1] ?? '';
    // (choice) An id that is not a whole number names no contact.
    const c = /^[1-9]\d{0,15}$/.test(id) ? store.contacts.get(id) : undefined;
    if (method !== 'GET' && method !== 'PATCH' && method !== 'DELETE') return message(405, 'Method Not Allowed');
    if (c === undefined) return message(404, `Contact with id ${id} not found`);
    if (method === 'GET') return { status: 200, body: v1View(store, c) };
    if (method === 'PATCH') return updateContact(store, c, body);
    store.deleteContact(c.id);
    return { status: 204 };
  } catch (e) {
    if (e instanceof BadRequest) return message(400, e.message);
    throw e;
  }
}

/** A contact as v1 answers it: v2's properties, the id and tag ids as numbers, v1's time names. */
export function v1View(store: CrmStore, c: StoredContact): Record<string, unknown> {
  const v2 = contactView(store, c);
  const out: Record<string, unknown> = { id: Number(c.id) };
  for (const p of SCALAR_PROPS) if (v2[p] !== undefined) out[p === 'leadsource_id' ? 'lead_source_id' : p] = v2[p];
  if (v2.company !== undefined) out.company = v2.company;
  out.email_addresses = c.email_addresses.map((e) => ({ email: e.email, field: e.field }));
  out.phone_numbers = c.phone_numbers.map((p) => ({ ...p }));
  out.fax_numbers = c.fax_numbers.map((p) => ({ ...p }));
  out.addresses = c.addresses.map((a) => ({ ...a }));
  // (choice) custom fields are always listed (Keap's v1 lists them only when asked via optional_properties).
  out.custom_fields = c.custom_fields.map((f) => ({ id: Number(f.id), content: f.content }));
  out.tag_ids = [...store.tagsOf(c.id).keys()].map(Number);
  out.date_created = c.create_time;
  out.last_updated = c.update_time;
  return out;
}

/** v1's request with only what it may set, v1's spellings as v2's (choice: anything else is ignored). */
function v1Request(body: Buffer): Record<string, unknown> {
  const raw = jsonBody(body);
  const req: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(raw)) {
    const name = V1_RENAMED[k] ?? k;
    if (V1_KNOWN.has(name)) req[name] = v;
  }
  return req;
}

function createContact(store: CrmStore, body: Buffer): V1Answer {
  const c = emptyContact();
  applyRequest(store, c, v1Request(body), undefined);
  if (c.email_addresses.length === 0 && c.phone_numbers.length === 0)
    return message(400, 'Contact must contain at least one item in email_addresses or phone_numbers');
  return { status: 201, body: v1View(store, store.createContact(c)) };
}

/** PATCH: only the properties sent change; an array sent replaces the contact's whole (choice, as in v2). */
function updateContact(store: CrmStore, c: StoredContact, body: Buffer): V1Answer {
  const draft: StoredContact = structuredClone(c);
  applyRequest(store, draft, v1Request(body), undefined);
  Object.assign(c, draft);
  for (const p of SCALAR_PROPS) if (draft[p] === undefined) delete c[p];
  if (draft.company === undefined) delete c.company;
  store.touch(c);
  return { status: 200, body: v1View(store, c) };
}

function whole(params: URLSearchParams, name: string, dflt: number, max: number): number {
  const raw = params.get(name);
  if (raw === null || raw === '') return dflt;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0 || n > max) throw new BadRequest(`${name} must be a whole number from 0 to ${max}`);
  return n;
}

/**
 * GET /contacts?limit=&offset= (and `email`, `given_name`, `family_name` filters, exact and
 * without regard to case: choice). `count` is every match, not the page's; `next` and
 * `previous` are the neighbouring pages' URLs (choice: always present, as Keap's are).
 */
function listContacts(store: CrmStore, params: URLSearchParams, base: string): V1Answer {
  const limit = whole(params, 'limit', MAX_LIMIT, MAX_LIMIT) || MAX_LIMIT;
  const offset = whole(params, 'offset', 0, Number.MAX_SAFE_INTEGER);
  const eq = (a: string | undefined, b: string): boolean => (a ?? '').toLowerCase() === b.toLowerCase();
  const email = params.get('email');
  const given = params.get('given_name');
  const family = params.get('family_name');
  const matching = store
    .allContacts()
    .filter(
      (c) =>
        (email === null || c.email_addresses.some((e) => eq(e.email, email))) &&
        (given === null || eq(c.given_name, given)) &&
        (family === null || eq(c.family_name, family)),
    );
  const link = (at: number): string => `${base}/crm/rest/v1/contacts/?limit=${limit}&offset=${at}`;
  return {
    status: 200,
    body: {
      contacts: matching.slice(offset, offset + limit).map((c) => v1View(store, c)),
      count: matching.length,
      next: link(offset + limit),
      previous: link(Math.max(0, offset - limit)),
    },
  };
}
