// What an XML-RPC client gets when the proxy itself cannot serve its call: a
// <methodResponse><fault>, over HTTP 200 and in text/xml as Keap sends its faults, because
// legacy XML-RPC libraries read faults and treat any other status as a broken transport
// (Keap's PHP SDK does). The faultString says what happened and what to do, as the JSON
// message does; the faultCode follows Keap's table where one fits.
import type { OutgoingHttpHeaders, ServerResponse } from 'node:http';
import { writeFault } from '../keap/xmlrpc-codec.js';
import { markAnsweredClosing, type HttpError } from './http-error.js';

interface FaultKind {
  /** Keap's faultCode (0 generic, 1 InvalidConfig, 2 InvalidKey, 3 Unexpected, 12 InvalidParameter). */
  code: number;
  /** Keap's faultStrings start with a bracketed tag that names the kind: "[InvalidKey]...". */
  tag: string | undefined;
}

/** Our error codes that have a match in Keap's table; every other one is code 3, [Unexpected]. */
const KEAP_FAULTS: Record<string, FaultKind> = {
  client_unauthorized: { code: 2, tag: 'InvalidKey' },
  // Keap: "Failed to parse XML-RPC request: ..." with code 0 and no tag.
  malformed_xmlrpc: { code: 0, tag: undefined },
  reauthorization_required: { code: 1, tag: 'InvalidConfig' },
  // The app's base URL names no account this proxy serves: its configuration is wrong.
  unknown_account: { code: 1, tag: 'InvalidConfig' },
};
const UNEXPECTED: FaultKind = { code: 3, tag: 'Unexpected' };

export function faultFor(err: HttpError): { faultCode: number; faultString: string } {
  const kind = KEAP_FAULTS[err.code] ?? UNEXPECTED;
  const prefix = err.code === 'malformed_xmlrpc' ? 'Failed to parse XML-RPC request: ' : `[${kind.tag ?? ''}]`;
  // Our own code goes last, so a log or a support ticket can tell the proxy's fault from Keap's.
  return { faultCode: kind.code, faultString: `${prefix}${err.message} (keap-proxy: ${err.code})` };
}

/** The fault document; kept as a name of its own for the tests that read it. */
export const faultXml = writeFault;

/** Sends `err` as an XML-RPC fault; its headers (Retry-After, connection: close) go along. */
export function sendXmlRpcFault(
  res: ServerResponse,
  err: HttpError,
  requestId: string,
  extraHeaders?: OutgoingHttpHeaders,
): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const headers = extraHeaders === undefined ? err.headers : { ...extraHeaders, ...err.headers };
  if (headers.connection === 'close') markAnsweredClosing(res.socket);
  const { faultCode, faultString } = faultFor(err);
  const body = faultXml(faultCode, faultString);
  res.writeHead(200, {
    ...headers,
    'content-type': 'text/xml; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
    ...(requestId !== '' ? { 'x-request-id': requestId } : {}),
  });
  res.end(body);
}
