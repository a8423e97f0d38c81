// ContactService answered from REST v2 (keap-xmlrpc-to-rest-v2.md §3.1, §9), and the contact
// reads and writes DataService on the Contact table shares with it.
import type { XmlRpcValue } from '../xmlrpc-codec.js';
import {
  V2,
  arg,
  expectOk,
  intArg,
  invalidParameter,
  names,
  recordNotFound,
  restMessage,
  struct,
  text,
} from './args.js';
import { contactChanges, contactStruct, isCustomName } from './contact-fields.js';
import type { CustomFields } from './rest.js';
import { XmlRpcFault, type Translation, type TranslationContext } from './rest.js';

type Contact = Record<string, unknown>;

/** The account's custom fields, fetched only when one of `names` is a custom field's. */
export function customFieldsFor(
  keap: TranslationContext,
  fieldNames: Iterable<string>,
): Promise<CustomFields | undefined> {
  for (const name of fieldNames) if (isCustomName(name)) return keap.model.customFields(keap.rest);
  return Promise.resolve(undefined);
}

function noFieldFound(name: string): XmlRpcFault {
  return new XmlRpcFault(10, `[NoFieldFound]No field found: Contact.${name}`);
}

/** The requested fields of a v2 contact, as Keap's XML-RPC answered them (empty ones left out). */
export function contactFields(
  contact: Contact,
  fields: readonly string[],
  custom: CustomFields | undefined,
): XmlRpcValue {
  const { struct: out, unknown } = contactStruct(contact, fields, custom);
  if (unknown.length > 0) throw noFieldFound(unknown[0] as string);
  return out;
}

function changesOf(current: Contact, data: Map<string, XmlRpcValue>, custom: CustomFields | undefined): Contact {
  const { changes, unknown } = contactChanges(current, data, custom);
  if (unknown.length > 0) throw noFieldFound(unknown[0] as string);
  return changes;
}

export async function loadContact(
  keap: TranslationContext,
  id: number,
  fields: readonly string[],
): Promise<XmlRpcValue> {
  const custom = await customFieldsFor(keap, fields);
  const answer = await keap.rest.call('GET', `${V2}/contacts/${id}`);
  if (answer.status === 404) throw recordNotFound(id);
  return contactFields(expectOk(answer.status, answer.body), fields, custom);
}

export type DuplicateOption = 'Email' | 'EmailAndName' | 'EmailAndNameAndCompany';

/** Creates a contact (or, with a duplicate option, updates the one it matches) and answers its Id. */
export async function addContact(
  keap: TranslationContext,
  data: Map<string, XmlRpcValue>,
  duplicate?: DuplicateOption,
): Promise<XmlRpcValue> {
  const custom = await customFieldsFor(keap, data.keys());
  const body = changesOf({}, data, custom);
  const query = duplicate === undefined ? '' : `?duplicate_option=${duplicate}`;
  const answer = await keap.rest.call('POST', `${V2}/contacts${query}`, body);
  // v2 refuses a contact with no email, phone or address, which Keap's XML-RPC took.
  if (answer.status === 400) throw invalidParameter(restMessage(answer.body));
  const created = expectOk(answer.status, answer.body);
  return { type: 'int', value: Number(created.id) };
}

/** Changes the fields sent and only those: v2 replaces arrays whole, so read, merge, write what changed. */
export async function updateContact(
  keap: TranslationContext,
  id: number,
  data: Map<string, XmlRpcValue>,
): Promise<XmlRpcValue> {
  if (data.size === 0) throw new XmlRpcFault(11, '[NoFields]No fields sent for update');
  const notFound = () => new XmlRpcFault(5, `[RecordNotFound]Unable to perform update. Record not found for Id:${id}`);
  const custom = await customFieldsFor(keap, data.keys());
  const current = await keap.rest.call('GET', `${V2}/contacts/${id}`);
  if (current.status === 404) throw notFound();
  const changes = changesOf(expectOk(current.status, current.body), data, custom);
  if (Object.keys(changes).length === 0) return { type: 'int', value: id };
  const answer = await keap.rest.call('PATCH', `${V2}/contacts/${id}`, changes);
  if (answer.status === 404) throw notFound();
  if (answer.status === 400) throw invalidParameter(restMessage(answer.body));
  expectOk(answer.status, answer.body);
  return { type: 'int', value: id };
}

const DUPLICATE_OPTIONS: readonly DuplicateOption[] = ['Email', 'EmailAndName', 'EmailAndNameAndCompany'];

/** The first contact (lowest Id) whose Email, and per the option name and company, are the data's, without regard to case. */
async function findDuplicate(
  keap: TranslationContext,
  data: Map<string, XmlRpcValue>,
  option: DuplicateOption,
): Promise<number | undefined> {
  const value = (name: string): string => {
    const v = data.get(name);
    return v === undefined ? '' : text(v).toLowerCase();
  };
  const email = value('Email');
  // A value holding v2's filter grammar is not sent as a filter: duplicate_option matches it then.
  if (email === '' || /[;,*]/.test(email)) return undefined;
  const query = new URLSearchParams({ filter: `email==${email}`, page_size: '1000', order_by: 'id asc' });
  const answer = await keap.rest.call('GET', `${V2}/contacts?${query.toString()}`);
  const body = expectOk(answer.status, answer.body);
  const same = (a: unknown, b: string): boolean => (typeof a === 'string' ? a.toLowerCase() : '') === b;
  const match = (Array.isArray(body.contacts) ? (body.contacts as Contact[]) : []).find((c) => {
    const email1 = (Array.isArray(c.email_addresses) ? (c.email_addresses as Contact[]) : []).find(
      (e) => e.field === 'EMAIL1',
    );
    if (!same(email1?.email, email)) return false;
    if (option === 'Email') return true;
    if (!same(c.given_name, value('FirstName')) || !same(c.family_name, value('LastName'))) return false;
    return option === 'EmailAndName' || same((c.company as Contact | undefined)?.company_name, value('Company'));
  });
  return match === undefined ? undefined : Number(match.id);
}

export const CONTACT_SERVICE: [string, Translation][] = [
  ['ContactService.add', (params, keap) => addContact(keap, struct(arg(params, 1, 'struct')))],
  [
    'ContactService.addWithDupCheck',
    async (params, keap) => {
      const data = struct(arg(params, 1, 'struct'));
      const option = text(arg(params, 2, 'string'));
      const duplicate = DUPLICATE_OPTIONS.find((o) => o === option);
      if (duplicate === undefined)
        throw invalidParameter(
          `dupCheckType must be one of ${DUPLICATE_OPTIONS.join(', ')}, not ${option.slice(0, 40)}`,
        );
      // v2's duplicate_option would update a match by replacing its arrays whole (a second
      // sign-up without a phone would drop the phone): a match is found first and updated
      // field by field, as Keap's XML-RPC did; only a contact not found is created, still
      // with duplicate_option, so one made meanwhile is matched rather than doubled.
      const match = await findDuplicate(keap, data, duplicate);
      return match === undefined ? addContact(keap, data, duplicate) : updateContact(keap, match, data);
    },
  ],
  ['ContactService.update', (params, keap) => updateContact(keap, intArg(params, 1), struct(arg(params, 2, 'struct')))],
  ['ContactService.load', (params, keap) => loadContact(keap, intArg(params, 1), names(arg(params, 2, 'array')))],
  [
    'ContactService.findByEmail',
    async (params, keap) => {
      const email = text(arg(params, 1, 'string'));
      const fields = names(arg(params, 2, 'array'));
      const custom = await customFieldsFor(keap, fields);
      // `;` and `,` are v2's filter grammar, and no address Keap stores holds one unquoted:
      // such a value finds nothing rather than reach Keap as a filter of its own.
      if (email === '' || /[;,]/.test(email)) return { type: 'array', value: [] };
      // v2's email filter matches EMAIL1 to EMAIL3, as findByEmail searched all three; a `*`
      // there is v2's wildcard, so what comes back is held to the exact address.
      const query = new URLSearchParams({ filter: `email==${email}`, page_size: '1000' });
      const answer = await keap.rest.call('GET', `${V2}/contacts?${query.toString()}`);
      const body = expectOk(answer.status, answer.body);
      const wanted = email.toLowerCase();
      const contacts = (Array.isArray(body.contacts) ? (body.contacts as Contact[]) : []).filter((c) =>
        (Array.isArray(c.email_addresses) ? (c.email_addresses as Contact[]) : []).some(
          (e) => typeof e.email === 'string' && e.email.toLowerCase() === wanted,
        ),
      );
      return { type: 'array', value: contacts.map((c) => contactFields(c, fields, custom)) };
    },
  ],
  [
    'ContactService.merge',
    async (params, keap) => {
      const contactId = intArg(params, 1);
      const duplicateId = intArg(params, 2);
      const answer = await keap.rest.call('POST', `${V2}/contacts:merge`, {
        contact_id: String(contactId),
        duplicate_contact_id: String(duplicateId),
      });
      if (answer.status === 404) {
        // Keap's XML-RPC named the record it could not find; v2's 404 does not say which.
        const kept = await keap.rest.call('GET', `${V2}/contacts/${contactId}`);
        throw recordNotFound(kept.status === 404 ? contactId : duplicateId);
      }
      if (answer.status === 400) throw invalidParameter(restMessage(answer.body));
      if (answer.status < 200 || answer.status >= 300) expectOk(answer.status, answer.body);
      return { type: 'boolean', value: true };
    },
  ],
  [
    'ContactService.addToGroup',
    async (params, keap) => {
      const contactId = intArg(params, 1);
      const tagId = intArg(params, 2);
      const answer = await keap.rest.call('POST', `${V2}/tags/${tagId}/contacts:applyTags`, {
        contact_ids: [String(contactId)],
      });
      if (answer.status === 404) {
        // No such tag, or no such contact as well: Keap's XML-RPC named the contact first.
        const contact = await keap.rest.call('GET', `${V2}/contacts/${contactId}`);
        throw recordNotFound(contact.status === 404 ? contactId : tagId);
      }
      const results = expectOk(answer.status, answer.body).results as Record<string, unknown> | undefined;
      if (results?.[String(contactId)] === 'CONTACT_NOT_FOUND') throw recordNotFound(contactId);
      return { type: 'boolean', value: true };
    },
  ],
  [
    'ContactService.removeFromGroup',
    async (params, keap) => {
      const contactId = intArg(params, 1);
      const tagId = intArg(params, 2);
      // Keap's XML-RPC refused an unknown contact, and took an unknown tag as nothing to remove.
      const contact = await keap.rest.call('GET', `${V2}/contacts/${contactId}`);
      if (contact.status === 404) throw recordNotFound(contactId);
      expectOk(contact.status, contact.body);
      const answer = await keap.rest.call('POST', `${V2}/tags/${tagId}/contacts:removeTags`, {
        contact_ids: [String(contactId)],
      });
      if (answer.status !== 404 && (answer.status < 200 || answer.status >= 300)) expectOk(answer.status, answer.body);
      return { type: 'boolean', value: true };
    },
  ],
];
