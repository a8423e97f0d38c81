// Reading an XML-RPC call's arguments and Keap's REST answers, the same way in every
// translation: a wrong argument is Keap's "No method matching arguments" fault, an answer the
// translation cannot read is Keap's failure.
import type { XmlRpcValue } from '../xmlrpc-codec.js';
import { XmlRpcFault } from './rest.js';

export const V2 = '/crm/rest/v2';

/** Params[i], which must be of `type` (a string param also takes an int, as Keap's did). */
export function arg(params: readonly XmlRpcValue[], i: number, type: XmlRpcValue['type']): XmlRpcValue {
  const p = params[i];
  if (p?.type !== type && !(type === 'string' && p !== undefined && p.type === 'int')) throw noMatchingMethod(params);
  return p;
}

const JAVA_TYPES: Record<XmlRpcValue['type'], string> = {
  string: 'java.lang.String',
  int: 'java.lang.Integer',
  boolean: 'java.lang.Boolean',
  double: 'java.lang.Double',
  dateTime: 'java.util.Date',
  base64: '[B',
  nil: 'null',
  array: '[Ljava.lang.Object;',
  struct: 'java.util.HashMap',
};

/**
 * Keap's own fault for a call whose arguments match no signature of the method: its Java
 * server named the types it was given (nateleavitt/infusionsoft #76), and legacy code may
 * look for these words.
 */
export function noMatchingMethod(params: readonly XmlRpcValue[]): XmlRpcFault {
  return new XmlRpcFault(0, `No method matching arguments: ${params.map((p) => JAVA_TYPES[p.type]).join(', ')}`);
}

/** An int param (Keap's XML-RPC, in Java, matched methods by type: a string is not an int). */
export function intArg(params: readonly XmlRpcValue[], i: number): number {
  const v = arg(params, i, 'int');
  return v.type === 'int' ? v.value : 0;
}

export function text(v: XmlRpcValue): string {
  return v.type === 'string' ? v.value : v.type === 'int' || v.type === 'double' ? String(v.value) : '';
}

export function names(v: XmlRpcValue): string[] {
  return v.type === 'array' ? v.value.map(text) : [];
}

export function struct(v: XmlRpcValue): Map<string, XmlRpcValue> {
  return v.type === 'struct' ? v.value : new Map<string, XmlRpcValue>();
}

export function recordNotFound(id: number | string): XmlRpcFault {
  return new XmlRpcFault(5, `[RecordNotFound]Record not found for Id:${id}`);
}

export function invalidParameter(message: string): XmlRpcFault {
  return new XmlRpcFault(12, `[InvalidParameter]${message}`);
}

export function restMessage(body: unknown): string {
  const m = typeof body === 'object' && body !== null ? (body as Record<string, unknown>).message : undefined;
  return typeof m === 'string' ? m : "Keap's REST API refused the data";
}

/** A REST answer the translation can read; any other is Keap's failure, reported as its faults report one. */
export function expectOk(status: number, body: unknown): Record<string, unknown> {
  if (status >= 200 && status < 300 && typeof body === 'object' && body !== null)
    return body as Record<string, unknown>;
  throw new XmlRpcFault(
    3,
    `[Unexpected]Keap's REST API answered ${status} to a translated call; try again, or set XMLRPC_MODE=passthrough`,
  );
}

/** A call the proxy cannot answer from REST v2: Keap's [Unexpected], with our own code, as the translate stage says it. */
export function notTranslatable(what: string): XmlRpcFault {
  return new XmlRpcFault(
    3,
    `[Unexpected]${what} cannot be translated to Keap's REST API by this proxy; move the call to REST v2, or set XMLRPC_MODE=passthrough while Keap still serves XML-RPC (keap-proxy: not_translatable)`,
  );
}
