// DataService answered from REST v2: the Contact table (keap-xmlrpc-to-rest-v2.md §3.2, §9, §11)
// through the contact translations, and the tag tables ContactGroup, ContactGroupAssign and
// ContactGroupCategory (§5, §7.2) through tag-tables.ts.
import type { XmlRpcValue } from '../xmlrpc-codec.js';
import {
  V2,
  arg,
  expectOk,
  intArg,
  names,
  noMatchingMethod,
  notTranslatable,
  recordNotFound,
  struct,
  text,
} from './args.js';
import { addContact, loadContact, updateContact } from './contact-service.js';
import { countContacts, queryContacts } from './contact-query.js';
import { XmlRpcFault, type Translation, type TranslationContext } from './rest.js';
import { countTagTable, queryTagTable } from './tag-tables.js';

/** Keap's XML-RPC tables the translation does not answer (yet), as against a table Keap has not. */
const KEAP_TABLES = new Set([
  'Contact',
  'ContactGroup',
  'ContactGroupAssign',
  'ContactGroupCategory',
  'Company',
  'Lead',
  'Job',
  'Invoice',
  'RecurringOrder',
  'ContactAction',
  'DataFormField',
  'EmailAddStatus',
  'Product',
]);

function otherTable(method: string, table: string): XmlRpcFault {
  if (KEAP_TABLES.has(table)) return notTranslatable(`${method} on the ${table} table`);
  return new XmlRpcFault(9, `[NoTableFound]No table found: ${table.slice(0, 100)}`);
}

function tableOf(params: readonly XmlRpcValue[]): string {
  return text(arg(params, 1, 'string'));
}

/** The table a DataService call names, which must be Contact: the other methods are translated on it alone. */
function contactTable(params: readonly XmlRpcValue[], method: string): void {
  const table = tableOf(params);
  if (table !== 'Contact') throw otherTable(method, table);
}

function optional(params: readonly XmlRpcValue[], i: number, type: XmlRpcValue['type']) {
  return params.length > i ? arg(params, i, type) : undefined;
}

interface Query {
  limit: number;
  page: number;
  conditions: Map<string, XmlRpcValue>;
  fields: string[];
  orderBy?: string;
  ascending?: boolean;
}

function queryTable(method: string, table: string, q: Query, keap: TranslationContext): Promise<XmlRpcValue> {
  if (table === 'Contact') return queryContacts(keap, q);
  const answer = queryTagTable(table, q.limit, q.page, q.conditions, q.fields, q.orderBy, q.ascending, keap);
  if (answer === undefined) throw otherTable(method, table);
  return answer;
}

export const DATA_SERVICE: [string, Translation][] = [
  [
    'DataService.query',
    async (params, keap) => {
      const method = 'DataService.query';
      const orderBy = optional(params, 6, 'string');
      const ascending = optional(params, 7, 'boolean');
      return queryTable(
        method,
        tableOf(params),
        {
          limit: intArg(params, 2),
          page: intArg(params, 3),
          conditions: struct(arg(params, 4, 'struct')),
          fields: names(arg(params, 5, 'array')),
          ...(orderBy !== undefined ? { orderBy: text(orderBy) } : {}),
          ...(ascending?.type === 'boolean' ? { ascending: ascending.value } : {}),
        },
        keap,
      );
    },
  ],
  [
    'DataService.findByField',
    async (params, keap) => {
      const method = 'DataService.findByField';
      const value = params[5];
      if (value === undefined || value.type === 'struct' || value.type === 'array') throw noMatchingMethod(params);
      return queryTable(
        method,
        tableOf(params),
        {
          limit: intArg(params, 2),
          page: intArg(params, 3),
          conditions: new Map([[text(arg(params, 4, 'string')), value]]),
          fields: names(arg(params, 6, 'array')),
        },
        keap,
      );
    },
  ],
  [
    'DataService.count',
    async (params, keap) => {
      const method = 'DataService.count';
      const table = tableOf(params);
      const conditions = struct(arg(params, 2, 'struct'));
      if (table === 'Contact') return { type: 'int', value: await countContacts(keap, conditions) };
      const answer = countTagTable(table, conditions, keap);
      if (answer === undefined) throw otherTable(method, table);
      return answer;
    },
  ],
  [
    'DataService.load',
    (params, keap) => {
      const method = 'DataService.load';
      contactTable(params, method);
      return loadContact(keap, intArg(params, 2), names(arg(params, 3, 'array')));
    },
  ],
  [
    'DataService.add',
    (params, keap) => {
      const method = 'DataService.add';
      contactTable(params, method);
      return addContact(keap, struct(arg(params, 2, 'struct')));
    },
  ],
  [
    'DataService.update',
    (params, keap) => {
      const method = 'DataService.update';
      contactTable(params, method);
      return updateContact(keap, intArg(params, 2), struct(arg(params, 3, 'struct')));
    },
  ],
  [
    'DataService.delete',
    async (params, keap) => {
      const method = 'DataService.delete';
      contactTable(params, method);
      const id = intArg(params, 2);
      const answer = await keap.rest.call('DELETE', `${V2}/contacts/${id}`);
      if (answer.status === 404) throw recordNotFound(id);
      if (answer.status !== 204) expectOk(answer.status, answer.body);
      return { type: 'boolean', value: true };
    },
  ],
];
