// The XML-RPC methods the proxy answers itself, by calls to Keap's REST v2 (XMLRPC_MODE=translate
// or fallback): one list per service, composed here.
import { CONTACT_SERVICE } from './contact-service.js';
import { DATA_SERVICE } from './data-service.js';
import { API_EMAIL_SERVICE } from './email-service.js';
import type { Translation } from './rest.js';

export type { Translation } from './rest.js';

export const TRANSLATIONS = new Map<string, Translation>([...CONTACT_SERVICE, ...DATA_SERVICE, ...API_EMAIL_SERVICE]);

/** Methods translated for some of their arguments only: what the inventory report tells an operator. */
export const TRANSLATED_IN_PART = new Map<string, string>([
  ['DataService.query', 'the Contact, ContactGroup, ContactGroupAssign and ContactGroupCategory tables'],
  ['DataService.count', 'the Contact, ContactGroup, ContactGroupAssign and ContactGroupCategory tables'],
  ['DataService.findByField', 'the Contact, ContactGroup, ContactGroupAssign and ContactGroupCategory tables'],
  ['DataService.load', 'the Contact table'],
  ['DataService.add', 'the Contact table'],
  ['DataService.update', 'the Contact table'],
  ['DataService.delete', 'the Contact table'],
]);
