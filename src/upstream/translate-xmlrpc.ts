// Answering an XML-RPC call from Keap's REST v2 (keap/translate/methods.ts), in Keap's XML-RPC
// shapes: one XmlRpcTranslation, shared by XMLRPC_MODE=translate (the stage below: every
// call translated, any other answered with a fault that names the method) and
// XMLRPC_MODE=fallback (fall-back-to-translation.ts: when Keap's XML-RPC endpoint answers as
// retired). A translated call never goes to Keap's XML-RPC endpoint, so it takes no turn of
// its own in the pacer: each REST call it makes does (upstream/keap-rest.ts).
import { HttpError } from '../http/http-error.js';
import { parseMethodCall, writeFault, writeMethodResponse } from '../keap/xmlrpc-codec.js';
import { XmlRpcError } from '../keap/xmlrpc.js';
import { TRANSLATIONS } from '../keap/translate/methods.js';
import { XmlRpcFault } from '../keap/translate/rest.js';
import { accountOf, clientXmlRpcCall, type Exchange, type Stage } from '../pipeline/exchange.js';
import type { RateLimitReplayPolicy } from './back-off-on-rate-limit.js';
import type { Forwarder } from './forwarder.js';
import { restCallerFor } from './keap-rest.js';
import type { Metrics } from '../observability/metrics.js';

export class XmlRpcTranslation {
  constructor(
    private readonly forwarder: Forwarder,
    private readonly policy: RateLimitReplayPolicy,
    private readonly metrics: Metrics,
  ) {}

  /** Whether the proxy can answer calls of this methodName itself. */
  translates(methodName: string | undefined): boolean {
    return methodName !== undefined && TRANSLATIONS.has(methodName);
  }

  /**
   * Answers the exchange's XML-RPC call (as the client sent it) from REST v2: HTTP 200, the
   * method's value or Keap's fault for it. A call that cannot be translated is refused with
   * HttpError `not_translatable`; what fails on the REST side is thrown, answered at the edge.
   */
  async answer(ex: Exchange): Promise<'done'> {
    const body = clientXmlRpcCall(ex);
    if (body === undefined) throw new HttpError(400, 'malformed_xmlrpc', 'The XML-RPC call has no body.');
    let call;
    try {
      call = parseMethodCall(body);
    } catch (err) {
      if (err instanceof XmlRpcError) throw new HttpError(400, 'malformed_xmlrpc', err.message);
      throw err;
    }
    const translation = TRANSLATIONS.get(call.methodName);
    if (translation === undefined) {
      throw new HttpError(
        400,
        'not_translatable',
        `${call.methodName.slice(0, 100)} cannot be translated to Keap's REST API by this proxy (XMLRPC_MODE=translate). Move the call to REST v2, or set XMLRPC_MODE=passthrough while Keap still serves XML-RPC.`,
      );
    }
    ex.xmlrpcServedBy = 'translation';
    const rest = restCallerFor(ex, this.forwarder, this.policy, this.metrics);
    let document: string;
    try {
      document = writeMethodResponse(await translation(call.params, { rest, model: accountOf(ex).contactModel }));
    } catch (err) {
      if (!(err instanceof XmlRpcFault)) throw err;
      document = writeFault(err.faultCode, err.faultString);
    }
    // Fallback keeps the status Keap's XML-RPC endpoint answered with, for the log line.
    ex.upstreamStatus ??= 200;
    ex.res.writeHead(200, {
      'content-type': 'text/xml; charset=utf-8',
      'content-length': Buffer.byteLength(document),
      'x-request-id': ex.id,
    });
    ex.res.end(document);
    return 'done';
  }
}

/** XMLRPC_MODE=translate: every XML-RPC call is answered here, by translation or a fault. */
export function translateXmlRpc(translation: XmlRpcTranslation): Stage {
  return (ex) =>
    ex.xmlrpc && ex.body !== undefined && accountOf(ex).xmlrpcMode === 'translate' ? translation.answer(ex) : undefined;
}
