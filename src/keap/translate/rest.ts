// What a translation needs from the REST side: a call to Keap's REST API, made by the proxy
// with the same machinery as every request (credential, pacing, refresh on 401, 429 backoff,
// the deadline; see upstream/keap-rest.ts). Translations know nothing of HTTP beyond this.

export type RestMethod = 'GET' | 'POST' | 'PATCH' | 'DELETE';

export interface RestAnswer {
  status: number;
  /** The JSON body, or undefined when there was none (204) or it was not JSON. */
  body: unknown;
}

export interface RestCaller {
  call(method: RestMethod, path: string, body?: unknown): Promise<RestAnswer>;
}

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
