// What a translation needs from the REST side: a call to Keap's REST API, made by the proxy
// with the same machinery as every request (credential, pacing, refresh on 401, 429 backoff,
// the deadline; see upstream/keap-rest.ts). Translations know nothing of HTTP beyond this.
import type { XmlRpcValue } from '../xmlrpc-codec.js';

export type RestMethod = 'GET' | 'POST' | 'PATCH' | 'DELETE';

export interface RestAnswer {
  status: number;
  /** The JSON body, or undefined when there was none (204) or it was not JSON. */
  body: unknown;
}

export interface RestCaller {
  call(method: RestMethod, path: string, body?: unknown): Promise<RestAnswer>;
}

export interface CustomField {
  id: string;
  /** field_name, as the XML-RPC name carries it after the underscore. */
  name: string;
  /** REST v2 field_type: TEXT, WHOLE_NUMBER, DATE, ... */
  type: string;
}

/** Custom fields by lower-cased name: Keap matches field names without regard to case. */
export type CustomFields = ReadonlyMap<string, CustomField>;

/** What one translated call works with: the REST calls it makes and its account's contact model. */
export interface TranslationContext {
  rest: RestCaller;
  /** The account's custom contact fields (keap/translate/contact-model.ts keeps them for a while). */
  model: { customFields(rest: RestCaller): Promise<CustomFields> };
}

/** One XML-RPC method answered from REST v2: the call's params (privateKey first, ignored) to a value or a fault. */
export type Translation = (params: readonly XmlRpcValue[], keap: TranslationContext) => Promise<XmlRpcValue>;

/** A fault in Keap's XML-RPC terms, as Keap's XML-RPC would have answered (e.g. 5 RecordNotFound). */
export class XmlRpcFault extends Error {
  constructor(
    readonly faultCode: number,
    readonly faultString: string,
  ) {
    super(faultString);
    this.name = 'XmlRpcFault';
  }
}
