// The XML-RPC methods the proxy answers itself, by calls to Keap's REST v2 (XMLRPC_MODE=translate).
// Each takes the call's params (privateKey first, ignored: the proxy holds the credential) and
// answers a value or raises an XmlRpcFault, as Keap's XML-RPC did.
import type { XmlRpcValue } from '../xmlrpc-codec.js';
import { contactChanges, contactStruct } from './contact-fields.js';
import { XmlRpcFault, type RestCaller } from './rest.js';

export type Translation = (params: readonly XmlRpcValue[], rest: RestCaller) => Promise<XmlRpcValue>;

const V2 = '/crm/rest/v2';

function arg(params: readonly XmlRpcValue[], i: number, type: XmlRpcValue['type'], method: string): XmlRpcValue {
  const p = params[i];
  if (p?.type !== type && !(type === 'string' && p !== undefined && p.type === 'int')) {
    // Keap's own words for a call with the wrong arguments.
    throw new XmlRpcFault(
      0,
      `No method matching arguments for ${method}: parameter ${i + 1} must be ${type === 'int' ? 'an int' : `a ${type}`}`,
    );
  }
  return p;
}

function text(v: XmlRpcValue): string {
  return v.type === 'string' ? v.value : v.type === 'int' ? String(v.value) : '';
}

function names(v: XmlRpcValue): string[] {
  return v.type === 'array' ? v.value.map(text) : [];
}

function fieldsOf(contact: Record<string, unknown>, fields: string[]): XmlRpcValue {
  const { struct, unknown } = contactStruct(contact, fields);
  if (unknown.length > 0) throw new XmlRpcFault(10, `[NoFieldFound]No field found: Contact.${unknown[0]}`);
  return struct;
}

function data(v: XmlRpcValue, method: string): Map<string, XmlRpcValue> {
  if (v.type !== 'struct')
    throw new XmlRpcFault(0, `No method matching arguments for ${method}: the data must be a struct`);
  return v.value;
}

function changesOf(current: Record<string, unknown>, fields: Map<string, XmlRpcValue>): Record<string, unknown> {
  const { changes, unknown } = contactChanges(current, fields);
  if (unknown.length > 0) throw new XmlRpcFault(10, `[NoFieldFound]No field found: Contact.${unknown[0]}`);
  return changes;
}

export const TRANSLATIONS = new Map<string, Translation>([
  [
    'ContactService.add',
    async (params, rest) => {
      const fields = data(arg(params, 1, 'struct', 'ContactService.add'), 'ContactService.add');
      const body = changesOf({}, fields);
      const answer = await rest.call('POST', `${V2}/contacts`, body);
      // v2 refuses a contact with no email, phone or address, which Keap's XML-RPC took.
      if (answer.status === 400) throw new XmlRpcFault(12, `[InvalidParameter]${restMessage(answer.body)}`);
      const created = expectOk(answer.status, answer.body);
      return { type: 'int', value: Number(created.id) };
    },
  ],
  [
    'ContactService.update',
    async (params, rest) => {
      const idArg = arg(params, 1, 'int', 'ContactService.update');
      const id = idArg.type === 'int' ? idArg.value : 0;
      const fields = data(arg(params, 2, 'struct', 'ContactService.update'), 'ContactService.update');
      if (fields.size === 0) throw new XmlRpcFault(11, '[NoFields]No fields sent for update');
      // v2 replaces arrays whole: read, merge, write only what changed.
      const current = await rest.call('GET', `${V2}/contacts/${id}`);
      if (current.status === 404)
        throw new XmlRpcFault(5, `[RecordNotFound]Unable to perform update. Record not found for Id:${id}`);
      const changes = changesOf(expectOk(current.status, current.body), fields);
      if (Object.keys(changes).length === 0) return { type: 'int', value: id };
      const answer = await rest.call('PATCH', `${V2}/contacts/${id}`, changes);
      if (answer.status === 404)
        throw new XmlRpcFault(5, `[RecordNotFound]Unable to perform update. Record not found for Id:${id}`);
      if (answer.status === 400) throw new XmlRpcFault(12, `[InvalidParameter]${restMessage(answer.body)}`);
      expectOk(answer.status, answer.body);
      return { type: 'int', value: id };
    },
  ],
  [
    'ContactService.load',
    async (params, rest) => {
      const id = arg(params, 1, 'int', 'ContactService.load');
      const fields = names(arg(params, 2, 'array', 'ContactService.load'));
      const answer = await rest.call('GET', `${V2}/contacts/${id.type === 'int' ? id.value : 0}`);
      if (answer.status === 404)
        throw new XmlRpcFault(5, `[RecordNotFound]Record not found for Id:${id.type === 'int' ? id.value : ''}`);
      return fieldsOf(expectOk(answer.status, answer.body), fields);
    },
  ],
  [
    'ContactService.findByEmail',
    async (params, rest) => {
      const email = text(arg(params, 1, 'string', 'ContactService.findByEmail'));
      const fields = names(arg(params, 2, 'array', 'ContactService.findByEmail'));
      const query = new URLSearchParams({ filter: `email==${email}`, page_size: '1000' });
      const answer = await rest.call('GET', `${V2}/contacts?${query.toString()}`);
      const body = expectOk(answer.status, answer.body);
      const contacts = Array.isArray(body.contacts) ? (body.contacts as Record<string, unknown>[]) : [];
      return { type: 'array', value: contacts.map((c) => fieldsOf(c, fields)) };
    },
  ],
  [
    'ContactService.addToGroup',
    async (params, rest) => {
      const contactId = intOf(arg(params, 1, 'int', 'ContactService.addToGroup'));
      const tagId = intOf(arg(params, 2, 'int', 'ContactService.addToGroup'));
      const answer = await rest.call('POST', `${V2}/tags/${tagId}/contacts:applyTags`, {
        contact_ids: [String(contactId)],
      });
      if (answer.status === 404) {
        // No such tag, or no such contact as well: Keap's XML-RPC named the contact first.
        const contact = await rest.call('GET', `${V2}/contacts/${contactId}`);
        throw recordNotFound(contact.status === 404 ? contactId : tagId);
      }
      const results = expectOk(answer.status, answer.body).results as Record<string, unknown> | undefined;
      if (results?.[String(contactId)] === 'CONTACT_NOT_FOUND') throw recordNotFound(contactId);
      return { type: 'boolean', value: true };
    },
  ],
  [
    'ContactService.removeFromGroup',
    async (params, rest) => {
      const contactId = intOf(arg(params, 1, 'int', 'ContactService.removeFromGroup'));
      const tagId = intOf(arg(params, 2, 'int', 'ContactService.removeFromGroup'));
      // Keap's XML-RPC refused an unknown contact, and took an unknown tag as nothing to remove.
      const contact = await rest.call('GET', `${V2}/contacts/${contactId}`);
      if (contact.status === 404) throw recordNotFound(contactId);
      expectOk(contact.status, contact.body);
      const answer = await rest.call('POST', `${V2}/tags/${tagId}/contacts:removeTags`, {
        contact_ids: [String(contactId)],
      });
      if (answer.status !== 404 && (answer.status < 200 || answer.status >= 300)) expectOk(answer.status, answer.body);
      return { type: 'boolean', value: true };
    },
  ],
  [
    'APIEmailService.optIn',
    async (params, rest) => {
      const email = text(arg(params, 1, 'string', 'APIEmailService.optIn'));
      // Keap's XML-RPC took a blank reason as "API Opt In"; v2 requires one.
      const reason = text(params[2] ?? { type: 'string', value: '' }) || 'API Opt In';
      const path = `${V2}/emailAddresses/${encodeURIComponent(email)}/status`;
      const before = await rest.call('GET', path);
      if (before.status === 404) return { type: 'boolean', value: false };
      const was = expectOk(before.status, before.body).status;
      const after = await rest.call('PATCH', path, { opted_in: true, reason });
      // "Only works the first time an email address opts in": true when the status changed.
      return { type: 'boolean', value: expectOk(after.status, after.body).status !== was };
    },
  ],
  [
    'APIEmailService.optOut',
    async (params, rest) => {
      const email = text(arg(params, 1, 'string', 'APIEmailService.optOut'));
      const reason = text(params[2] ?? { type: 'string', value: '' }) || 'API Opt Out';
      const answer = await rest.call('PATCH', `${V2}/emailAddresses/${encodeURIComponent(email)}/status`, {
        opted_in: false,
        reason,
      });
      if (answer.status === 404) return { type: 'boolean', value: false };
      expectOk(answer.status, answer.body);
      return { type: 'boolean', value: true };
    },
  ],
  [
    'APIEmailService.getOptStatus',
    async (params, rest) => {
      const email = text(arg(params, 1, 'string', 'APIEmailService.getOptStatus'));
      const answer = await rest.call('GET', `${V2}/emailAddresses/${encodeURIComponent(email)}/status`);
      // Keap's XML-RPC: 0 opted out or unknown, 1 single opt-in, 2 double opt-in (confirmed).
      if (answer.status === 404) return { type: 'int', value: 0 };
      const body = expectOk(answer.status, answer.body);
      if (body.opted_in !== true) return { type: 'int', value: 0 };
      return { type: 'int', value: body.status === 'DOUBLE_OPT_IN' || body.status === 'CONFIRMED' ? 2 : 1 };
    },
  ],
]);

function intOf(v: XmlRpcValue): number {
  return v.type === 'int' ? v.value : 0;
}

function recordNotFound(id: number): XmlRpcFault {
  return new XmlRpcFault(5, `[RecordNotFound]Record not found for Id:${id}`);
}

function restMessage(body: unknown): string {
  const m = typeof body === 'object' && body !== null ? (body as Record<string, unknown>).message : undefined;
  return typeof m === 'string' ? m : "Keap's REST API refused the data";
}

/** A REST answer the translation can read; any other is Keap's failure, reported as its faults report one. */
function expectOk(status: number, body: unknown): Record<string, unknown> {
  if (status >= 200 && status < 300 && typeof body === 'object' && body !== null)
    return body as Record<string, unknown>;
  throw new XmlRpcFault(
    3,
    `[Unexpected]Keap's REST API answered ${status} to a translated call; try again, or set XMLRPC_MODE=passthrough`,
  );
}
