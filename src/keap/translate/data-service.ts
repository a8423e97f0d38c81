// DataService answered from REST v2: the Contact table (keap-xmlrpc-to-rest-v2.md §3.2, §9, §11)
// through the contact translations, and the tag tables (§5, §7.2) through tag-tables.ts.
import type { XmlRpcValue } from '../xmlrpc-codec.js';
import { V2, arg, expectOk, intArg, names, notTranslatable, recordNotFound, struct, text } from './args.js';
import { addContact, loadContact, updateContact } from './contact-service.js';
import { countContacts, queryContacts } from './contact-query.js';
import { XmlRpcFault, type Translation, type TranslationContext } from './rest.js';

/** The table a DataService call names; only Contact has every method translated. */
function contactTable(params: readonly XmlRpcValue[], method: string): void {
  const table = text(arg(params, 1, 'string', method));
  if (table !== 'Contact') throw notTranslatable(`${method} on the ${table.slice(0, 60)} table`);
}

function optional(params: readonly XmlRpcValue[], i: number, type: XmlRpcValue['type'], method: string) {
  return params.length > i ? arg(params, i, type, method) : undefined;
}

async function query(params: readonly XmlRpcValue[], keap: TranslationContext): Promise<XmlRpcValue> {
  const method = 'DataService.query';
  contactTable(params, method);
  const orderBy = optional(params, 6, 'string', method);
  const ascending = optional(params, 7, 'boolean', method);
  return queryContacts(keap, {
    limit: intArg(params, 2, method),
    page: intArg(params, 3, method),
    conditions: struct(arg(params, 4, 'struct', method), method),
    fields: names(arg(params, 5, 'array', method)),
    ...(orderBy !== undefined ? { orderBy: text(orderBy) } : {}),
    ...(ascending?.type === 'boolean' ? { ascending: ascending.value } : {}),
  });
}

export const DATA_SERVICE: [string, Translation][] = [
  ['DataService.query', query],
  [
    'DataService.findByField',
    (params, keap) => {
      const method = 'DataService.findByField';
      contactTable(params, method);
      const value = params[5];
      if (value === undefined || value.type === 'struct' || value.type === 'array')
        throw new XmlRpcFault(
          0,
          `No method matching arguments for ${method}: parameter 6 must be a value, not a ${value?.type ?? 'missing one'}`,
        );
      return queryContacts(keap, {
        limit: intArg(params, 2, method),
        page: intArg(params, 3, method),
        conditions: new Map([[text(arg(params, 4, 'string', method)), value]]),
        fields: names(arg(params, 6, 'array', method)),
      });
    },
  ],
  [
    'DataService.count',
    async (params, keap) => {
      const method = 'DataService.count';
      contactTable(params, method);
      const count = await countContacts(keap, struct(arg(params, 2, 'struct', method), method));
      return { type: 'int', value: count };
    },
  ],
  [
    'DataService.load',
    (params, keap) => {
      const method = 'DataService.load';
      contactTable(params, method);
      return loadContact(keap, intArg(params, 2, method), names(arg(params, 3, 'array', method)));
    },
  ],
  [
    'DataService.add',
    (params, keap) => {
      const method = 'DataService.add';
      contactTable(params, method);
      return addContact(keap, struct(arg(params, 2, 'struct', method), method));
    },
  ],
  [
    'DataService.update',
    (params, keap) => {
      const method = 'DataService.update';
      contactTable(params, method);
      return updateContact(keap, intArg(params, 2, method), struct(arg(params, 3, 'struct', method), method));
    },
  ],
  [
    'DataService.delete',
    async (params, keap) => {
      const method = 'DataService.delete';
      contactTable(params, method);
      const id = intArg(params, 2, method);
      const answer = await keap.rest.call('DELETE', `${V2}/contacts/${id}`);
      if (answer.status === 404) throw recordNotFound(id);
      if (answer.status !== 204) expectOk(answer.status, answer.body);
      return { type: 'boolean', value: true };
    },
  ],
];
