// Contact fields of Keap's XML-RPC (ContactService, DataService on Contact) read from a REST v2
// contact, per the mapping in keap-xmlrpc-to-rest-v2.md section 10. Dates are written as Keap's
// XML-RPC wrote them: dateTime.iso8601 in US Eastern wall time, with no zone.
import type { XmlRpcValue } from '../xmlrpc-codec.js';
import type { CustomField, CustomFields } from './rest.js';
import { invalidParameter } from './args.js';

type V2 = Record<string, unknown>;
type Reader = (c: V2) => XmlRpcValue | undefined;

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

/** An ISO-8601 instant as Keap's XML-RPC dateTime: YYYYMMDDTHH:MM:SS, US Eastern wall time. */
export function easternDateTime(iso: string): XmlRpcValue | undefined {
  const at = new Date(iso);
  if (Number.isNaN(at.getTime())) return undefined;
  const p: Record<string, string> = {};
  for (const part of EASTERN.formatToParts(at)) p[part.type] = part.value;
  return { type: 'dateTime', value: `${p.year}${p.month}${p.day}T${p.hour}:${p.minute}:${p.second}` };
}

const str = (v: unknown): XmlRpcValue | undefined =>
  typeof v === 'string' && v !== ''
    ? { type: 'string', value: v }
    : typeof v === 'number'
      ? { type: 'string', value: String(v) }
      : undefined;
const int = (v: unknown): XmlRpcValue | undefined => {
  const n = typeof v === 'number' ? v : typeof v === 'string' && /^-?\d+$/.test(v) ? Number(v) : NaN;
  return Number.isSafeInteger(n) ? { type: 'int', value: n } : undefined;
};
const list = (c: V2, prop: string): V2[] => (Array.isArray(c[prop]) ? (c[prop] as V2[]) : []);
const item =
  (prop: string, field: string, key: string): Reader =>
  (c) =>
    str(list(c, prop).find((x) => x.field === field)?.[key]);

/**
 * The writable fields, each once: where it lives in a v2 contact. A scalar property, a
 * property of an object (`company`), or a property of the item of an array whose `field` is
 * given (`email_addresses[field=EMAIL1].email`). Both the readers and the writers come from here.
 */
type Place = ({ prop: string } | { prop: string; key: string } | { prop: string; field: string; key: string }) & {
  /** How XML-RPC carries the value: a string (the default), an int (ids), or a date (dateTime at midnight). */
  kind?: 'int' | 'date';
};

const PLACES = new Map<string, Place>();
{
  const P = PLACES;
  const scalars: [string, string][] = [
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
  ];
  for (const [name, prop] of scalars) P.set(name, { prop });
  // v2 carries ids as strings and these dates as YYYY-MM-DD; XML-RPC as ints and dateTimes.
  P.set('OwnerID', { prop: 'owner_id', kind: 'int' });
  P.set('LeadSourceId', { prop: 'leadsource_id', kind: 'int' });
  P.set('Birthday', { prop: 'birth_date', kind: 'date' });
  P.set('Anniversary', { prop: 'anniversary_date', kind: 'date' });
  P.set('Company', { prop: 'company', key: 'company_name' });
  P.set('CompanyID', { prop: 'company', key: 'id', kind: 'int' });
  for (const [name, field] of [
    ['Email', 'EMAIL1'],
    ['EmailAddress2', 'EMAIL2'],
    ['EmailAddress3', 'EMAIL3'],
  ] as const)
    P.set(name, { prop: 'email_addresses', field, key: 'email' });
  for (let n = 1; n <= 5; n++) {
    P.set(`Phone${n}`, { prop: 'phone_numbers', field: `PHONE${n}`, key: 'number' });
    P.set(`Phone${n}Ext`, { prop: 'phone_numbers', field: `PHONE${n}`, key: 'extension' });
    P.set(`Phone${n}Type`, { prop: 'phone_numbers', field: `PHONE${n}`, key: 'type' });
  }
  for (let n = 1; n <= 2; n++) {
    P.set(`Fax${n}`, { prop: 'fax_numbers', field: `FAX${n}`, key: 'number' });
    P.set(`Fax${n}Type`, { prop: 'fax_numbers', field: `FAX${n}`, key: 'type' });
  }
  const keys = ['line1', 'line2', 'locality', 'region', 'postal_code', 'zip_four', 'country_code'];
  const blocks: [string, string[]][] = [
    ['BILLING', ['StreetAddress1', 'StreetAddress2', 'City', 'State', 'PostalCode', 'ZipFour1', 'Country']],
    ['SHIPPING', ['Address2Street1', 'Address2Street2', 'City2', 'State2', 'PostalCode2', 'ZipFour2', 'Country2']],
    ['OTHER', ['Address3Street1', 'Address3Street2', 'City3', 'State3', 'PostalCode3', 'ZipFour3', 'Country3']],
  ];
  for (const [field, names] of blocks)
    names.forEach((name, i) => P.set(name, { prop: 'addresses', field, key: keys[i] as string }));
}

/** A v2 date (YYYY-MM-DD) as Keap's XML-RPC carried Birthday: a dateTime at midnight. */
const date = (v: unknown): XmlRpcValue | undefined => {
  const m = typeof v === 'string' ? /^(\d{4})-(\d\d)-(\d\d)/.exec(v) : null;
  return m ? { type: 'dateTime', value: `${m[1]}${m[2]}${m[3]}T00:00:00` } : undefined;
};

function readerOf(place: Place): Reader {
  if ('field' in place) return item(place.prop, place.field, place.key);
  if ('key' in place) {
    const read = place.kind === 'int' ? int : str;
    return (c) => read((c[place.prop] as V2 | undefined)?.[place.key]);
  }
  if (place.kind === 'int') return (c) => int(c[place.prop]);
  if (place.kind === 'date') return (c) => date(c[place.prop]);
  return (c) => str(c[place.prop]);
}

/** A custom field's value as Keap's XML-RPC answered it: whole numbers as ints, the rest as text. */
function customReader(field: CustomField): Reader {
  return (c) => {
    const content = list(c, 'custom_fields').find((x) => x.id === field.id || x.id === Number(field.id))?.content;
    if (content === undefined || content === null || content === '') return undefined;
    if (field.type === 'WHOLE_NUMBER') return int(content) ?? str(content);
    if (typeof content === 'boolean') return { type: 'string', value: String(content) };
    return typeof content === 'object' ? { type: 'string', value: JSON.stringify(content) } : str(content);
  };
}

/** Whether an XML-RPC field name is a custom field's (`_Name`): the translation then needs the contact model. */
export const isCustomName = (name: string): boolean => name.startsWith('_');

/** Whether `name` is a Contact field (a custom one's in `custom`, the account's contact model). */
export function isContactField(name: string, custom: CustomFields | undefined): boolean {
  return readerFor(name, custom) !== undefined;
}

function readerFor(name: string, custom: CustomFields | undefined): Reader | undefined {
  const known = CONTACT_FIELDS.get(name);
  if (known !== undefined || !isCustomName(name)) return known;
  const field = custom?.get(name.slice(1).toLowerCase());
  return field === undefined ? undefined : customReader(field);
}

export const CONTACT_FIELDS = new Map<string, Reader>([
  ['Id', (c) => int(c.id)],
  ['DateCreated', (c) => (typeof c.create_time === 'string' ? easternDateTime(c.create_time) : undefined)],
  ['LastUpdated', (c) => (typeof c.update_time === 'string' ? easternDateTime(c.update_time) : undefined)],
  ['Groups', (c) => str(Array.isArray(c.tag_ids) ? (c.tag_ids as unknown[]).join(',') : undefined)],
  ...[...PLACES].map(([name, place]): [string, Reader] => [name, readerOf(place)]),
]);

/**
 * The v2 properties that carry the given XML-RPC fields, for a list call's `fields`: v2 does
 * not document which properties a list returns by default. Unknown names are left out.
 */
export function v2Properties(fields: Iterable<string>): string[] {
  const props = new Set<string>(['id']);
  for (const name of fields) {
    const place = PLACES.get(name);
    if (place !== undefined) props.add(place.prop);
    else if (name === 'DateCreated') props.add('create_time');
    else if (name === 'LastUpdated') props.add('update_time');
    else if (name === 'Groups') props.add('tag_ids');
    else if (isCustomName(name)) props.add('custom_fields');
  }
  return [...props];
}

/** The requested fields of a contact, as Keap's XML-RPC answers them: only the non-empty ones. Unknown names are returned. */
export function contactStruct(
  c: V2,
  fields: readonly string[],
  custom?: CustomFields,
): { struct: XmlRpcValue; unknown: string[] } {
  const members = new Map<string, XmlRpcValue>();
  const unknown: string[] = [];
  for (const name of fields) {
    const read = readerFor(name, custom);
    if (read === undefined) {
      unknown.push(name);
      continue;
    }
    const v = read(c);
    if (v !== undefined) members.set(name, v);
  }
  return { struct: { type: 'struct', value: members }, unknown };
}

// ---------------------------------------------------------------- writing

type Writer = (draft: V2, value: string) => void;

/** Keap's XML-RPC fields a client may not write; Keap ignored them on add and update. */
const READ_ONLY = new Set(['Id', 'DateCreated', 'LastUpdated', 'Groups']);

/** Sets `key` of the array item of `prop` whose field is `field`, making the item if need be; an empty value clears it. */
const setItem =
  (prop: string, field: string, key: string): Writer =>
  (draft, value) => {
    const items = list(draft, prop).map((x) => ({ ...x }));
    let target = items.find((x) => x.field === field);
    if (target === undefined) {
      if (value === '') return;
      target = { field };
      items.push(target);
    }
    if (value === '') delete target[key];
    else target[key] = value;
    // An item left without its main value (an email without an address) is dropped.
    const main = prop === 'addresses' ? undefined : prop === 'email_addresses' ? 'email' : 'number';
    draft[prop] = items.filter((x) =>
      main !== undefined
        ? typeof x[main] === 'string' && x[main] !== ''
        : Object.keys(x).some((k) => k !== 'field' && x[k] !== undefined && x[k] !== ''),
    );
  };

/** YYYY-MM-DD from a dateTime (YYYYMMDDTHH:MM:SS) or a 'YYYY-MM-DD…' string, as Keap's XML-RPC took Birthday. */
function dateOnly(name: string, value: string): string {
  const m = /^(\d{4})-?(\d\d)-?(\d\d)/.exec(value);
  if (!m) throw invalidParameter(`Invalid date for ${name}: ${value.slice(0, 40)}`);
  return `${m[1]}-${m[2]}-${m[3]}`;
}

function writerOf(name: string, place: Place): Writer {
  if ('field' in place) return setItem(place.prop, place.field, place.key);
  if ('key' in place)
    return (d, v) => {
      const next: V2 = { ...(d[place.prop] as V2 | undefined), [place.key]: v };
      if (v === '') delete next[place.key];
      d[place.prop] = next;
    };
  return (d, v) => {
    if (v === '') delete d[place.prop];
    else d[place.prop] = place.kind === 'date' ? dateOnly(name, v) : v;
  };
}

const WRITERS = new Map<string, Writer>(
  [...PLACES].map(([name, place]): [string, Writer] => [name, writerOf(name, place)]),
);

/** A custom field's value as v2 takes it: whole numbers as numbers, the rest as text; empty removes it. */
function customWriter(field: CustomField): Writer {
  return (draft, value) => {
    const others = list(draft, 'custom_fields').filter((x) => String(x.id) !== field.id);
    if (value === '') {
      draft.custom_fields = others;
      return;
    }
    const content = field.type === 'WHOLE_NUMBER' && /^-?\d{1,15}$/.test(value) ? Number(value) : value;
    draft.custom_fields = [...others, { id: field.id, content }];
  };
}

/**
 * The properties of each array item a client may send: v2 replaces arrays whole, so what is
 * sent back is what was read, less what only answers carry (opt status, E.164 numbers).
 */
const WRITABLE: Record<string, readonly string[]> = {
  email_addresses: ['email', 'field', 'opt_in_reason'],
  phone_numbers: ['number', 'extension', 'type', 'field'],
  fax_numbers: ['number', 'type', 'field'],
  addresses: [
    'line1',
    'line2',
    'locality',
    'region',
    'region_code',
    'country_code',
    'postal_code',
    'zip_code',
    'zip_four',
    'field',
  ],
  custom_fields: ['id', 'content'],
};

function writable(prop: string, items: unknown): V2[] {
  const keys = WRITABLE[prop] ?? [];
  return (Array.isArray(items) ? (items as V2[]) : []).map((x) =>
    Object.fromEntries(keys.filter((k) => x[k] !== undefined).map((k) => [k, x[k]])),
  );
}

function textOf(value: XmlRpcValue): string {
  switch (value.type) {
    case 'string':
    case 'dateTime':
      return value.value;
    case 'int':
    case 'double':
      return String(value.value);
    case 'boolean':
      return value.value ? '1' : '0';
    default:
      return '';
  }
}

/**
 * Applies XML-RPC contact data to a copy of `current` (v2 shape) and answers what to send: the
 * changed properties, each array whole as merged (so changing LastName never wipes Email).
 * Unknown field names are returned, read-only ones ignored. Custom fields (`_Name`) are found
 * in `custom`, the account's contact model.
 */
export function contactChanges(
  current: V2,
  data: Map<string, XmlRpcValue>,
  custom?: CustomFields,
): { changes: V2; unknown: string[] } {
  const draft: V2 = structuredClone(current);
  for (const prop of Object.keys(WRITABLE)) if (prop in draft) draft[prop] = writable(prop, draft[prop]);
  const base: V2 = structuredClone(draft);
  const unknown: string[] = [];
  for (const [name, value] of data) {
    if (READ_ONLY.has(name)) continue;
    let write = WRITERS.get(name);
    if (write === undefined && isCustomName(name)) {
      const field = custom?.get(name.slice(1).toLowerCase());
      if (field !== undefined) write = customWriter(field);
    }
    if (write === undefined) {
      unknown.push(name);
      continue;
    }
    write(draft, textOf(value));
  }
  const changes: V2 = {};
  for (const key of new Set([...Object.keys(draft), ...Object.keys(base)])) {
    if (JSON.stringify(draft[key]) === JSON.stringify(base[key])) continue;
    changes[key] = draft[key] ?? (key in WRITABLE ? [] : null);
  }
  return { changes, unknown };
}
