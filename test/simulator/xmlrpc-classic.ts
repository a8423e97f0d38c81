// The classic XML-RPC behaviour (ContactService, DataService on Contact/ContactGroup/
// ContactGroupAssign/ContactGroupCategory, APIEmailService) over the simulator's CrmStore, so state written through
// one API is read through the other. Field names follow /work/shared/keap-xmlrpc-to-rest-v2.md §10
// (XML-RPC Contact field -> v2 property); wire typing, dates and faults follow §4: ints as <i4>,
// untyped strings, dates as dateTime.iso8601 in US Eastern time (America/New_York, DST-aware:
// inferred), faults over HTTP 200 with Keap's "[Tag]message" strings. Where Keap's exact text is
// unknown the string is marked "(choice)".

import {
  DUPLICATE_OPTIONS,
  isMarketable,
  type Address,
  type CrmStore,
  type FaxNumber,
  type PhoneNumber,
  type StoredContact,
} from './crm.js';
import { RpcDateTime, RpcDouble, keapFault, keapResponse, type RpcStruct, type RpcValue } from './xml.js';

export class Fault extends Error {
  constructor(
    readonly code: number,
    faultString: string,
  ) {
    super(faultString);
  }
}

const recordNotFound = (id: number): Fault => new Fault(5, `[RecordNotFound]Record not found for Id:${id}`); // (choice)
const noField = (table: string, f: string): Fault => new Fault(10, `[NoFieldFound]No field found: ${table}.${f}`);

// ---------------------------------------------------------------- dates

const EASTERN = new Intl.DateTimeFormat('en-CA', {
  timeZone: 'America/New_York',
  year: 'numeric',
  month: '2-digit',
  day: '2-digit',
  hour: '2-digit',
  minute: '2-digit',
  second: '2-digit',
  hourCycle: 'h23',
});

/** ISO-8601 UTC -> XML-RPC dateTime (YYYYMMDDTHH:MM:SS, US Eastern wall time). */
export function toEastern(iso: string): RpcDateTime {
  const parts: Record<string, string> = {};
  for (const p of EASTERN.formatToParts(new Date(iso))) parts[p.type] = p.value;
  return new RpcDateTime(`${parts.year}${parts.month}${parts.day}T${parts.hour}:${parts.minute}:${parts.second}`);
}

/** YYYY-MM-DD -> dateTime at midnight (Birthday, Anniversary: dates without a zone). */
const dateOnly = (d: string): RpcDateTime => new RpcDateTime(`${d.replace(/-/g, '')}T00:00:00`);

/** A dateTime or a 'YYYY-MM-DD...' string -> YYYY-MM-DD. */
function toDateOnly(v: RpcValue, field: string): string {
  const t = v instanceof RpcDateTime ? v.text : typeof v === 'string' ? v : '';
  const m = /^(\d{4})-?(\d\d)-?(\d\d)/.exec(t);
  if (!m) throw new Fault(12, `[InvalidParameter]Invalid date for ${field}: ${t}`); // (choice)
  return `${m[1]}-${m[2]}-${m[3]}`;
}

// ---------------------------------------------------------------- Contact field mapping

interface FieldDef {
  get(c: StoredContact, store: CrmStore): RpcValue | undefined;
  /** Absent: read-only (ignored on write: choice). '' clears the value. */
  set?(c: StoredContact, v: RpcValue): void;
}

const asText = (v: RpcValue): string =>
  typeof v === 'string'
    ? v
    : typeof v === 'number'
      ? String(v)
      : typeof v === 'boolean'
        ? v
          ? '1'
          : '0'
        : v instanceof RpcDouble
          ? String(v.value)
          : v instanceof RpcDateTime
            ? v.text
            : '';
const nonEmpty = (s: string | undefined): string | undefined => (s === undefined || s === '' ? undefined : s);
const asInt = (s: string | undefined): number | undefined => (s === undefined || s === '' ? undefined : Number(s));

function scalar(prop: keyof StoredContact, kind: 'string' | 'int' | 'date' = 'string'): FieldDef {
  return {
    get: (c) => {
      const v = c[prop] as string | undefined;
      if (v === undefined || v === '') return undefined;
      return kind === 'int' ? Number(v) : kind === 'date' ? dateOnly(v) : v;
    },
    set: (c, v) => {
      const rec = c as unknown as Record<string, unknown>;
      const t = asText(v);
      if (t === '') delete rec[prop];
      else rec[prop] = kind === 'date' ? toDateOnly(v, prop) : t;
    },
  };
}

/** A value inside one of the contact's array items, found by its `field` (EMAIL1, PHONE2, BILLING...). */
function item<T extends { field: string }>(
  list: (c: StoredContact) => T[],
  field: string,
  key: keyof T & string,
  make: () => T,
): FieldDef {
  return {
    get: (c) => nonEmpty(list(c).find((x) => x.field === field)?.[key] as string | undefined),
    set: (c, v) => {
      const arr = list(c);
      const t = asText(v);
      let x = arr.find((y) => y.field === field);
      if (x === undefined) {
        if (t === '') return;
        arr.push((x = make()));
      }
      (x as Record<string, unknown>)[key] = t;
      if (t === '') {
        delete (x as Record<string, unknown>)[key];
        // An item left with nothing but its field (or without its main value) goes.
        const main = 'email' in x ? 'email' : 'number' in x ? 'number' : undefined;
        const rest = Object.keys(x).filter((k) => k !== 'field');
        if (rest.length === 0 || (main !== undefined && !(main in x))) arr.splice(arr.indexOf(x), 1);
      }
    },
  };
}

const CONTACT_FIELDS = new Map<string, FieldDef>();
{
  const F = CONTACT_FIELDS;
  F.set('Id', { get: (c) => Number(c.id) });
  F.set('DateCreated', { get: (c) => toEastern(c.create_time) });
  F.set('LastUpdated', { get: (c) => toEastern(c.update_time) });
  F.set('Groups', { get: (c, s) => nonEmpty([...s.tagsOf(c.id).keys()].join(',')) });
  const scalars: [string, keyof StoredContact, ('string' | 'int' | 'date')?][] = [
    ['FirstName', 'given_name'],
    ['LastName', 'family_name'],
    ['MiddleName', 'middle_name'],
    ['Nickname', 'preferred_name'],
    ['Title', 'prefix'],
    ['Suffix', 'suffix'],
    ['SpouseName', 'spouse_name'],
    ['JobTitle', 'job_title'],
    ['Website', 'website'],
    ['TimeZone', 'time_zone'],
    ['Language', 'preferred_locale'],
    ['ContactType', 'contact_type'],
    ['ReferralCode', 'referral_code'],
    ['AssistantName', 'assistant_name'],
    ['AssistantPhone', 'assistant_phone'],
    ['BillingInformation', 'billing_information'],
    ['OwnerID', 'owner_id', 'int'],
    ['LeadSourceId', 'leadsource_id', 'int'],
    ['Birthday', 'birth_date', 'date'],
    ['Anniversary', 'anniversary_date', 'date'],
  ];
  for (const [name, prop, kind] of scalars) F.set(name, scalar(prop, kind));
  F.set('Company', {
    get: (c) => nonEmpty(c.company?.company_name),
    set: (c, v) => {
      c.company = { ...c.company, company_name: asText(v) };
    },
  });
  F.set('CompanyID', {
    get: (c) => asInt(c.company?.id),
    set: (c, v) => {
      c.company = { ...c.company, id: asText(v) };
    },
  });
  const emails = (c: StoredContact) => c.email_addresses;
  for (const [name, field] of [
    ['Email', 'EMAIL1'],
    ['EmailAddress2', 'EMAIL2'],
    ['EmailAddress3', 'EMAIL3'],
  ] as const) {
    F.set(
      name,
      item(emails, field, 'email', () => ({ email: '', field })),
    );
  }
  for (let n = 1; n <= 5; n++) {
    const field = `PHONE${n}`;
    const mk = (): PhoneNumber => ({ number: '', field });
    F.set(
      `Phone${n}`,
      item((c) => c.phone_numbers, field, 'number', mk),
    );
    F.set(
      `Phone${n}Ext`,
      item((c) => c.phone_numbers, field, 'extension', mk),
    );
    F.set(
      `Phone${n}Type`,
      item((c) => c.phone_numbers, field, 'type', mk),
    );
  }
  for (let n = 1; n <= 2; n++) {
    const field = `FAX${n}`;
    const mk = (): FaxNumber => ({ number: '', field });
    F.set(
      `Fax${n}`,
      item((c) => c.fax_numbers, field, 'number', mk),
    );
    F.set(
      `Fax${n}Type`,
      item((c) => c.fax_numbers, field, 'type', mk),
    );
  }
  const blocks: [Address['field'], string[]][] = [
    ['BILLING', ['StreetAddress1', 'StreetAddress2', 'City', 'State', 'PostalCode', 'ZipFour1', 'Country']],
    ['SHIPPING', ['Address2Street1', 'Address2Street2', 'City2', 'State2', 'PostalCode2', 'ZipFour2', 'Country2']],
    ['OTHER', ['Address3Street1', 'Address3Street2', 'City3', 'State3', 'PostalCode3', 'ZipFour3', 'Country3']],
  ];
  // Country is stored verbatim in country_code (choice: no "United States" -> "USA" conversion).
  const keys = ['line1', 'line2', 'locality', 'region', 'postal_code', 'zip_four', 'country_code'] as const;
  for (const [field, names] of blocks) {
    names.forEach((name, i) =>
      F.set(
        name,
        item<Address>(
          (c) => c.addresses,
          field,
          keys[i]!,
          () => ({ field }),
        ),
      ),
    );
  }
}

function contactField(store: CrmStore, name: string): FieldDef | undefined {
  const f = CONTACT_FIELDS.get(name);
  if (f !== undefined) return f;
  if (!name.startsWith('_')) return undefined;
  const meta = store.customFieldByName(name.slice(1));
  if (meta === undefined) return undefined;
  const numeric = meta.field_type === 'WHOLE_NUMBER';
  return {
    get: (c) => {
      const v = c.custom_fields.find((x) => x.id === meta.id)?.content;
      if (v === undefined || v === null || v === '') return undefined;
      if (numeric && typeof v === 'number') return v;
      return typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean' ? String(v) : JSON.stringify(v);
    },
    set: (c, v) => {
      c.custom_fields = c.custom_fields.filter((x) => x.id !== meta.id);
      const t = asText(v);
      if (t !== '') c.custom_fields.push({ id: meta.id, content: numeric && /^-?\d+$/.test(t) ? Number(t) : t });
    },
  };
}

function contactRow(store: CrmStore, c: StoredContact, fields?: string[]): RpcStruct {
  const out: RpcStruct = {};
  const names = fields ?? [...CONTACT_FIELDS.keys(), ...store.customFields.map((f) => `_${f.field_name}`)];
  for (const n of names) {
    const def = contactField(store, n);
    if (def === undefined) throw noField('Contact', n);
    const v = def.get(c, store);
    if (v !== undefined) out[n] = v; // empty fields are omitted (VCR contact_load)
  }
  return out;
}

function applyContactData(store: CrmStore, c: StoredContact, data: RpcStruct): void {
  for (const [k, v] of Object.entries(data)) {
    const def = contactField(store, k);
    if (def === undefined) throw noField('Contact', k);
    def.set?.(c, v);
  }
}

function blankContact(): Omit<StoredContact, 'id' | 'create_time' | 'update_time'> {
  return { email_addresses: [], phone_numbers: [], fax_numbers: [], addresses: [], custom_fields: [] };
}

function addContact(store: CrmStore, data: RpcStruct): number {
  // XML-RPC accepted contacts with no email, phone or address (inferred; v2 refuses them).
  const draft = { ...blankContact(), id: '', create_time: '', update_time: '' };
  applyContactData(store, draft, data);
  const { id: _id, create_time: _c, update_time: _u, ...fields } = draft;
  return Number(store.createContact(fields).id);
}

/**
 * "Adds or updates a contact record based on matching data" (DOC2012): the contact `data`
 * describes is matched as REST v2's duplicate_option matches (CrmStore.findDuplicate); a match
 * is updated with `data` (only the fields sent, VCR contact_add_dup_check_with_dup) and its Id
 * answered, otherwise a new contact is added.
 */
function addWithDupCheck(store: CrmStore, data: RpcStruct, dupCheckType: string): number {
  const option = DUPLICATE_OPTIONS.find((o) => o === dupCheckType);
  if (option === undefined)
    throw new Fault(
      12,
      `[InvalidParameter]dupCheckType must be one of ${DUPLICATE_OPTIONS.join(', ')}, not ${dupCheckType.slice(0, 40)}`,
    ); // (choice) Keap's words unknown; the translation's
  const draft = { ...blankContact(), id: '', create_time: '', update_time: '' };
  applyContactData(store, draft, data);
  const match = store.findDuplicate(draft, option);
  return match === undefined ? addContact(store, data) : updateContact(store, Number(match.id), data);
}

function updateContact(store: CrmStore, id: number, data: RpcStruct): number {
  if (Object.keys(data).length === 0) throw new Fault(11, '[NoFields]No fields sent for update');
  const c = store.contacts.get(String(id));
  if (c === undefined) throw new Fault(5, `[RecordNotFound]Unable to perform update. Record not found for Id:${id}`);
  const draft = structuredClone(c);
  applyContactData(store, draft, data);
  Object.assign(c, draft);
  for (const k of Object.keys(c)) if (!(k in draft)) delete (c as unknown as Record<string, unknown>)[k];
  store.touch(c);
  return id;
}

// ---------------------------------------------------------------- tables and queryData

interface Table {
  name: string;
  fields: (store: CrmStore) => string[];
  rows: (store: CrmStore, fields: string[]) => RpcStruct[];
}

const TABLES: Record<string, Table> = {
  Contact: {
    name: 'Contact',
    fields: (s) => [...CONTACT_FIELDS.keys(), ...s.customFields.map((f) => `_${f.field_name}`)],
    rows: (s, fields) => s.allContacts().map((c) => contactRow(s, c, fields)),
  },
  ContactGroup: {
    name: 'ContactGroup',
    fields: () => ['Id', 'GroupName', 'GroupCategoryId', 'GroupDescription'],
    rows: (s) =>
      [...s.tags.values()].map((t) => {
        const r: RpcStruct = { Id: Number(t.id), GroupName: t.name };
        if (t.category.id !== '') r.GroupCategoryId = Number(t.category.id);
        if (t.description !== '') r.GroupDescription = t.description;
        return r;
      }),
  },
  ContactGroupAssign: {
    name: 'ContactGroupAssign',
    fields: () => ['GroupId', 'ContactGroup', 'DateCreated', 'ContactId'],
    // (choice) in ContactId then GroupId order: the table has no Id of its own to order by.
    rows: (s) =>
      s.allContacts().flatMap((c) =>
        [...s.tagsOf(c.id)]
          .sort(([a], [b]) => Number(a) - Number(b))
          .map(([tagId, applied]) => ({
            GroupId: Number(tagId),
            ContactGroup: s.tags.get(tagId)?.name ?? '',
            DateCreated: toEastern(applied),
            ContactId: Number(c.id),
          })),
      ),
  },
  ContactGroupCategory: {
    name: 'ContactGroupCategory',
    fields: () => ['Id', 'CategoryName', 'CategoryDescription'],
    rows: (s) =>
      [...s.tagCategories.values()]
        .sort((a, b) => Number(a.id) - Number(b.id))
        .map((c) => {
          const r: RpcStruct = { Id: Number(c.id) };
          if (c.name !== '') r.CategoryName = c.name;
          if (c.description !== '') r.CategoryDescription = c.description;
          return r;
        }),
  },
};

function table(name: string): Table {
  const t = TABLES[name];
  if (t === undefined) throw new Fault(9, `[NoTableFound]No table found: ${name}`); // (choice)
  return t;
}

/** A row's value as queryData compares it: dates as 'YYYY-MM-DD HH:MM:SS'. */
function cmpText(v: RpcValue | undefined): string {
  if (v === undefined) return '';
  if (v instanceof RpcDateTime) {
    const m = /^(\d{4})(\d\d)(\d\d)T(.*)$/.exec(v.text);
    return m ? `${m[1]}-${m[2]}-${m[3]} ${m[4]}` : v.text;
  }
  return asText(v);
}

function likeToRegExp(pattern: string): RegExp {
  const body = pattern
    .split('%')
    .map((p) => p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))
    .join('.*');
  return new RegExp(`^${body}$`, 'is');
}

function compareValues(a: string, b: string): number {
  const x = Number(a);
  const y = Number(b);
  if (a !== '' && b !== '' && Number.isFinite(x) && Number.isFinite(y)) return x - y;
  return a.toLowerCase() < b.toLowerCase() ? -1 : a.toLowerCase() > b.toLowerCase() ? 1 : 0;
}

/** One queryData condition (DOC2012, F-OPS): exact (case-insensitive), %, ~null~, ~op~ v, IN on arrays. */
function matches(rowValue: RpcValue | undefined, cond: RpcValue): boolean {
  const actual = cmpText(rowValue);
  if (Array.isArray(cond)) return cond.some((c) => compareValues(actual, cmpText(c)) === 0 && actual !== '');
  if (typeof cond === 'number') return actual !== '' && compareValues(actual, String(cond)) === 0;
  const q = cmpText(cond);
  if (q === '~null~') return actual === '';
  const op = /^~(<>|>=|<=|>|<)~\s*(.*)$/s.exec(q);
  if (op) {
    const d = compareValues(actual, op[2]!);
    if (op[1] === '<>') return d !== 0;
    if (actual === '') return false;
    return op[1] === '>' ? d > 0 : op[1] === '>=' ? d >= 0 : op[1] === '<' ? d < 0 : d <= 0;
  }
  if (q.includes('%')) return likeToRegExp(q).test(actual);
  return actual.toLowerCase() === q.toLowerCase();
}

function query(
  store: CrmStore,
  tableName: string,
  limit: number,
  page: number,
  queryData: RpcStruct,
  selected: RpcValue[] | undefined,
  orderBy?: string,
  ascending?: boolean,
): RpcStruct[] {
  const t = table(tableName);
  const known = new Set(t.fields(store));
  for (const k of Object.keys(queryData)) if (!known.has(k)) throw noField(t.name, k);
  const wanted = selected?.map((f) => asText(f));
  if (wanted) for (const f of wanted) if (!known.has(f)) throw noField(t.name, f);
  if (orderBy !== undefined && !known.has(orderBy)) throw noField(t.name, orderBy);
  const all = t.rows(store, t.fields(store));
  let rows = all.filter((r) => Object.entries(queryData).every(([k, cond]) => matches(r[k], cond)));
  if (orderBy !== undefined) {
    // DOC2012: descending unless `ascending` says otherwise.
    const sign = ascending ? 1 : -1;
    rows = [...rows].sort((a, b) => compareValues(cmpText(a[orderBy]), cmpText(b[orderBy])) * sign);
  }
  const size = Math.min(1000, Math.max(0, limit)); // max 1000 per page
  rows = rows.slice(page * size, page * size + size);
  if (wanted === undefined) return rows;
  return rows.map((r) => {
    const out: RpcStruct = {};
    for (const f of wanted) if (r[f] !== undefined) out[f] = r[f];
    return out;
  });
}

// ---------------------------------------------------------------- signatures

type ArgType = 'string' | 'int' | 'struct' | 'array' | 'boolean' | 'scalar';

function javaType(v: RpcValue): string {
  if (typeof v === 'string') return 'java.lang.String';
  if (typeof v === 'number') return 'java.lang.Integer';
  if (typeof v === 'boolean') return 'java.lang.Boolean';
  if (v instanceof RpcDouble) return 'java.lang.Double';
  if (v instanceof RpcDateTime) return 'java.util.Date';
  if (Array.isArray(v)) return '[Ljava.lang.Object;';
  return 'java.util.HashMap';
}

function isType(v: RpcValue, t: ArgType): boolean {
  switch (t) {
    case 'string':
      return typeof v === 'string';
    case 'int':
      return typeof v === 'number';
    case 'boolean':
      return typeof v === 'boolean';
    case 'array':
      return Array.isArray(v);
    case 'struct':
      return typeof v === 'object' && !Array.isArray(v) && !(v instanceof RpcDateTime) && !(v instanceof RpcDouble);
    case 'scalar':
      return typeof v === 'string' || typeof v === 'number';
  }
}

/** Apache XML-RPC's dispatch: params (after the privateKey) must fit one signature. */
function expect(params: RpcValue[], ...signatures: ArgType[][]): void {
  const all: ArgType[][] = signatures.map((s) => ['string', ...s]);
  if (all.some((s) => s.length === params.length && s.every((t, i) => isType(params[i]!, t)))) return;
  // Code not shown in the observed fault (nateleavitt #76): 0 here (choice).
  throw new Fault(0, `No method matching arguments: ${params.map(javaType).join(', ')}`);
}

const S = (v: RpcValue | undefined): string => v as string;
const I = (v: RpcValue | undefined): number => v as number;
const ST = (v: RpcValue | undefined): RpcStruct => v as RpcStruct;
const A = (v: RpcValue | undefined): RpcValue[] => v as RpcValue[];

// ---------------------------------------------------------------- methods

function requireContact(store: CrmStore, id: number): StoredContact {
  const c = store.contacts.get(String(id));
  if (c === undefined) throw recordNotFound(id);
  return c;
}

function requireContactTable(name: string): void {
  if (table(name).name !== 'Contact') {
    throw new Fault(3, `[Unexpected]The simulator implements this method on Contact only, not ${name}`);
  }
}

/** Whether `name` is one of the classic methods implemented here. */
export function isClassicMethod(name: string): boolean {
  return METHODS.has(name);
}

const METHODS = new Map<string, (store: CrmStore, p: RpcValue[]) => RpcValue>([
  [
    'ContactService.add',
    (s, p) => {
      expect(p, ['struct']);
      return addContact(s, ST(p[1]));
    },
  ],
  [
    'ContactService.addWithDupCheck',
    (s, p) => {
      expect(p, ['struct', 'string']);
      return addWithDupCheck(s, ST(p[1]), S(p[2]));
    },
  ],
  [
    'ContactService.merge',
    (s, p) => {
      expect(p, ['int', 'int']);
      // The same merge as REST v2's contacts:merge (CrmStore.mergeContacts); the kept id is checked first.
      const result = s.mergeContacts(String(I(p[1])), String(I(p[2])));
      if ('merged' in result) return true;
      if (result.error === 'invalid') throw new Fault(12, `[InvalidParameter]${result.message}`); // (choice)
      throw recordNotFound(Number(result.id));
    },
  ],
  [
    'ContactService.update',
    (s, p) => {
      expect(p, ['int', 'struct']);
      return updateContact(s, I(p[1]), ST(p[2]));
    },
  ],
  [
    'ContactService.load',
    (s, p) => {
      expect(p, ['int', 'array']);
      return contactRow(s, requireContact(s, I(p[1])), A(p[2]).map(asText));
    },
  ],
  [
    'ContactService.findByEmail',
    (s, p) => {
      expect(p, ['string', 'array']);
      const email = S(p[1]).toLowerCase();
      const fields = A(p[2]).map(asText);
      // "searches the Email, Email 2, and Email 3 fields" (DOC2012)
      return s
        .allContacts()
        .filter((c) => c.email_addresses.some((e) => e.email.toLowerCase() === email))
        .map((c) => contactRow(s, c, fields));
    },
  ],
  [
    'ContactService.addToGroup',
    (s, p) => {
      expect(p, ['int', 'int']);
      requireContact(s, I(p[1]));
      if (!s.tags.has(String(I(p[2])))) throw recordNotFound(I(p[2]));
      s.applyTag(String(I(p[2])), String(I(p[1])));
      return true;
    },
  ],
  [
    'ContactService.removeFromGroup',
    (s, p) => {
      expect(p, ['int', 'int']);
      requireContact(s, I(p[1]));
      s.removeTag(String(I(p[2])), String(I(p[1])));
      return true;
    },
  ],
  [
    'DataService.query',
    (s, p) => {
      expect(
        p,
        ['string', 'int', 'int', 'struct', 'array'],
        ['string', 'int', 'int', 'struct', 'array', 'string'],
        ['string', 'int', 'int', 'struct', 'array', 'string', 'boolean'],
      );
      return query(s, S(p[1]), I(p[2]), I(p[3]), ST(p[4]), A(p[5]), p[6] as string | undefined, p[7] as boolean);
    },
  ],
  [
    'DataService.findByField',
    (s, p) => {
      expect(p, ['string', 'int', 'int', 'string', 'scalar', 'array']);
      return query(s, S(p[1]), I(p[2]), I(p[3]), { [S(p[4])]: p[5]! }, A(p[6]));
    },
  ],
  [
    'DataService.count',
    (s, p) => {
      expect(p, ['string', 'struct']);
      const t = table(S(p[1]));
      const known = new Set(t.fields(s));
      const q = ST(p[2]);
      for (const k of Object.keys(q)) if (!known.has(k)) throw noField(t.name, k);
      return t.rows(s, t.fields(s)).filter((r) => Object.entries(q).every(([k, c]) => matches(r[k], c))).length;
    },
  ],
  [
    'DataService.load',
    (s, p) => {
      expect(p, ['string', 'int', 'array']);
      requireContactTable(S(p[1]));
      return contactRow(s, requireContact(s, I(p[2])), A(p[3]).map(asText));
    },
  ],
  [
    'DataService.add',
    (s, p) => {
      expect(p, ['string', 'struct']);
      requireContactTable(S(p[1]));
      return addContact(s, ST(p[2]));
    },
  ],
  [
    'DataService.update',
    (s, p) => {
      expect(p, ['string', 'int', 'struct']);
      requireContactTable(S(p[1]));
      return updateContact(s, I(p[2]), ST(p[3]));
    },
  ],
  [
    'DataService.delete',
    (s, p) => {
      expect(p, ['string', 'int']);
      requireContactTable(S(p[1]));
      if (!s.deleteContact(String(I(p[2])))) throw recordNotFound(I(p[2]));
      return true;
    },
  ],
  [
    'APIEmailService.optIn',
    (s, p) => {
      expect(p, ['string', 'string']);
      // Blank reason -> "API Opt In" (DOC2012); only a first opt-in changes anything (RUBY).
      return s.optIn(S(p[1]), S(p[2]) || 'API Opt In');
    },
  ],
  [
    'APIEmailService.optOut',
    (s, p) => {
      expect(p, ['string', 'string']);
      return s.optOut(S(p[1]), S(p[2]) || 'API Opt Out');
    },
  ],
  [
    'APIEmailService.getOptStatus',
    (s, p) => {
      expect(p, ['string']);
      const rec = s.emailStatus(S(p[1]));
      if (rec === undefined || !isMarketable(rec.status)) return 0; // opt-out, non-marketable, bounces
      return rec.status === 'DOUBLE_OPT_IN' || rec.status === 'CONFIRMED' ? 2 : 1;
    },
  ],
]);

/** Runs a classic method; always an XML-RPC document (a result or a fault), answered with HTTP 200. */
export function runClassic(store: CrmStore, methodName: string, params: RpcValue[]): string {
  const m = METHODS.get(methodName);
  if (m === undefined) return keapFault(0, `No such handler: ${methodName}`); // code not shown (bvalosek #3)
  try {
    return keapResponse(m(store, params));
  } catch (e) {
    if (e instanceof Fault) return keapFault(e.code, e.message);
    throw e;
  }
}
