// DataService answered from REST v2: the Contact table (keap-xmlrpc-to-rest-v2.md §3.2, §9, §11)
// and the tag tables ContactGroup, ContactGroupAssign and ContactGroupCategory (§5, §7.2).
import type { Translation } from './rest.js';
// ---- branch `tags` only: begin (to be reconciled with the Contact table's DataService.query/count) ----
import { arg, intArg, names, struct, text } from './args.js';
import { XmlRpcFault } from './rest.js';
import { countTagTable, queryTagTable } from './tag-tables.js';

/** Keap's XML-RPC tables the translation does not answer (yet), as against a table Keap has not. */
const KNOWN_TABLES = new Set(['Contact', 'Company', 'Lead', 'Job', 'RecurringOrder', 'ContactAction', 'DataFormField']);

function otherTable(method: string, table: string): XmlRpcFault {
  if (KNOWN_TABLES.has(table))
    return new XmlRpcFault(
      3,
      `[Unexpected]${method} on ${table} cannot be translated to Keap's REST API by this proxy (XMLRPC_MODE=translate)`,
    );
  return new XmlRpcFault(9, `[NoTableFound]No table found: ${table.slice(0, 100)}`);
}

const TAG_TABLE_ENTRIES: [string, Translation][] = [
  [
    'DataService.query',
    async (params, keap) => {
      const m = 'DataService.query';
      const table = text(arg(params, 1, 'string', m));
      const orderBy = params[6] === undefined ? undefined : text(arg(params, 6, 'string', m));
      const asc = params[7] === undefined ? undefined : arg(params, 7, 'boolean', m);
      const ascending = asc?.type === 'boolean' ? asc.value : undefined;
      const answer = queryTagTable(
        table,
        intArg(params, 2, m),
        intArg(params, 3, m),
        struct(arg(params, 4, 'struct', m), m),
        names(arg(params, 5, 'array', m)),
        orderBy,
        ascending,
        keap,
      );
      if (answer === undefined) throw otherTable(m, table);
      return answer;
    },
  ],
  [
    'DataService.count',
    async (params, keap) => {
      const m = 'DataService.count';
      const table = text(arg(params, 1, 'string', m));
      const answer = countTagTable(table, struct(arg(params, 2, 'struct', m), m), keap);
      if (answer === undefined) throw otherTable(m, table);
      return answer;
    },
  ],
];
// ---- branch `tags` only: end ----

export const DATA_SERVICE: [string, Translation][] = [...TAG_TABLE_ENTRIES];
