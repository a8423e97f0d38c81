// DataService answered from REST v2: the Contact table (keap-xmlrpc-to-rest-v2.md §3.2, §9, §11)
// and the tag tables ContactGroup, ContactGroupAssign and ContactGroupCategory (§5, §7.2).
import type { Translation } from './rest.js';

export const DATA_SERVICE: [string, Translation][] = [];
