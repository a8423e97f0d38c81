// XMLRPC_MODE=translate: an XML-RPC call the proxy can translate is answered from Keap's REST
// v2 (keap/translate/methods.ts); any other gets a fault that names the method. The call
// itself never goes to Keap's XML-RPC endpoint, so it takes no turn of its own in the pacer:
// each REST call it makes does (upstream/keap-rest.ts).
import { HttpError } from '../http/http-error.js';
import { parseMethodCall, writeFault, writeMethodResponse } from '../keap/xmlrpc-codec.js';
import { XmlRpcError } from '../keap/xmlrpc.js';
import { TRANSLATIONS } from '../keap/translate/methods.js';
import { XmlRpcFault } from '../keap/translate/rest.js';
import { accountOf, type Exchange, type Stage } from '../pipeline/exchange.js';
import type { RateLimitReplayPolicy } from './back-off-on-rate-limit.js';
import type { Forwarder } from './forwarder.js';
import { restCallerFor } from './keap-rest.js';
import type { Metrics } from '../observability/metrics.js';

export function translateXmlRpc(forwarder: Forwarder, policy: RateLimitReplayPolicy, metrics: Metrics): Stage {
  const answer = async (ex: Exchange, body: Buffer): Promise<'done'> => {
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
    let document: string;
    try {
      document = writeMethodResponse(
        await translation(call.params, {
          rest: restCallerFor(ex, forwarder, policy, metrics),
          model: accountOf(ex).contactModel,
        }),
      );
    } catch (err) {
      if (!(err instanceof XmlRpcFault)) throw err;
      document = writeFault(err.faultCode, err.faultString);
    }
    ex.upstreamStatus = 200;
    ex.res.writeHead(200, {
      'content-type': 'text/xml; charset=utf-8',
      'content-length': Buffer.byteLength(document),
      'x-request-id': ex.id,
    });
    ex.res.end(document);
    return 'done';
  };
  return (ex) => (ex.xmlrpc && ex.body !== undefined ? answer(ex, ex.body.whole()) : undefined);
}
