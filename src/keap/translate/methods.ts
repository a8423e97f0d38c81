// The XML-RPC methods the proxy answers itself, by calls to Keap's REST v2 (XMLRPC_MODE=translate
// or fallback): one list per service, composed here.
import { CONTACT_SERVICE } from './contact-service.js';
import { DATA_SERVICE } from './data-service.js';
import { API_EMAIL_SERVICE } from './email-service.js';
import type { Translation } from './rest.js';

export type { Translation } from './rest.js';

export const TRANSLATIONS = new Map<string, Translation>([...CONTACT_SERVICE, ...DATA_SERVICE, ...API_EMAIL_SERVICE]);
