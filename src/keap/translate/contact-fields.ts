// Contact fields of Keap's XML-RPC (ContactService, DataService on Contact) read from a REST v2
// contact, per the mapping in keap-xmlrpc-to-rest-v2.md section 10. Dates are written as Keap's
// XML-RPC wrote them: dateTime.iso8601 in US Eastern wall time, with no zone.
import type { XmlRpcValue } from '../xmlrpc-codec.js';

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
type Place = { prop: string } | { prop: string; key: string } | { prop: string; field: string; key: string };

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
  ];
  for (const [name, prop] of scalars) P.set(name, { prop });
  P.set('Company', { prop: 'company', key: 'company_name' });
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
  const keys = ['line1', 'line2', 'locality', 'region', 'postal_code', 'zip_four', 'country_code'];
  const blocks: [string, string[]][] = [
    ['BILLING', ['StreetAddress1', 'StreetAddress2', 'City', 'State', 'PostalCode', 'ZipFour1', 'Country']],
    ['SHIPPING', ['Address2Street1', 'Address2Street2', 'City2', 'State2', 'PostalCode2', 'ZipFour2', 'Country2']],
    ['OTHER', ['Address3Street1', 'Address3Street2', 'City3', 'State3', 'PostalCode3', 'ZipFour3', 'Country3']],
  ];
  for (const [field, names] of blocks)
    names.forEach((name, i) => P.set(name, { prop: 'addresses', field, key: keys[i] as string }));
}

function readerOf(place: Place): Reader {
  if ('field' in place) return item(place.prop, place.field, place.key);
  if ('key' in place) return (c) => str((c[place.prop] as V2 | undefined)?.[place.key]);
  return (c) => str(c[place.prop]);
}

export const CONTACT_FIELDS = new Map<string, Reader>([
  ['Id', (c) => int(c.id)],
  ['DateCreated', (c) => (typeof c.create_time === 'string' ? easternDateTime(c.create_time) : undefined)],
  ['LastUpdated', (c) => (typeof c.update_time === 'string' ? easternDateTime(c.update_time) : undefined)],
  ['Groups', (c) => str(Array.isArray(c.tag_ids) ? (c.tag_ids as unknown[]).join(',') : undefined)],
  ...[...PLACES].map(([name, place]): [string, Reader] => [name, readerOf(place)]),
  // Readable, not writable here: a company is linked by REST v2's own calls.
  ['CompanyID', (c) => int((c.company as V2 | undefined)?.id)],
]);

/** The requested fields of a contact, as Keap's XML-RPC answers them: only the non-empty ones. Unknown names are returned. */
export function contactStruct(c: V2, fields: readonly string[]): { struct: XmlRpcValue; unknown: string[] } {
  const members = new Map<string, XmlRpcValue>();
  const unknown: string[] = [];
  for (const name of fields) {
    const read = CONTACT_FIELDS.get(name);
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
    // An item left with nothing but its field (an email without an address) is dropped.
    draft[prop] = items.filter((x) =>
      Object.keys(x).some((k) => k !== 'field' && k !== 'type' && x[k] !== undefined && x[k] !== ''),
    );
  };

function writerOf(place: Place): Writer {
  if ('field' in place) return setItem(place.prop, place.field, place.key);
  if ('key' in place)
    return (d, v) => {
      d[place.prop] = { ...(d[place.prop] as V2 | undefined), [place.key]: v };
    };
  return (d, v) => {
    if (v === '') delete d[place.prop];
    else d[place.prop] = v;
  };
}

const WRITERS = new Map<string, Writer>([...PLACES].map(([name, place]): [string, Writer] => [name, writerOf(place)]));

/** The array properties a change may touch: v2 replaces them whole, so they are sent whole. */
const ARRAYS = ['email_addresses', 'phone_numbers', 'addresses'];

/**
 * Applies XML-RPC contact data to a copy of `current` (v2 shape) and answers what to send: the
 * changed properties, each array whole as merged (so changing LastName never wipes Email).
 * Unknown field names are returned, read-only ones ignored.
 */
export function contactChanges(current: V2, data: Map<string, XmlRpcValue>): { changes: V2; unknown: string[] } {
  const draft: V2 = structuredClone(current);
  const unknown: string[] = [];
  for (const [name, value] of data) {
    if (READ_ONLY.has(name)) continue;
    const write = WRITERS.get(name);
    if (write === undefined) {
      unknown.push(name);
      continue;
    }
    write(
      draft,
      value.type === 'string'
        ? value.value
        : value.type === 'int' || value.type === 'double'
          ? String(value.value)
          : '',
    );
  }
  const changes: V2 = {};
  for (const key of new Set([...Object.keys(draft), ...Object.keys(current)])) {
    if (JSON.stringify(draft[key]) === JSON.stringify(current[key])) continue;
    changes[key] = draft[key] ?? (ARRAYS.includes(key) ? [] : null);
  }
  return { changes, unknown };
}
