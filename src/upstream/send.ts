// Every send to Keap, the first and each replay, goes through here.
import type { Forwarder } from './forwarder.js';
import { UpstreamError } from './forwarder.js';
import type { Metrics } from '../observability/metrics.js';
import type { Dispatch } from './response-handlers.js';

/** A client that has gone gets nothing sent for it; each send counts as an attempt and is timed. */
export function createSend(forwarder: Forwarder, metrics: Metrics): Dispatch {
  return (ex) => {
    if (ex.clientGone) return Promise.reject(new UpstreamError('client_closed'));
    ex.attempts += 1;
    const started = performance.now();
    return forwarder.send(ex.req, ex.res, ex.body, ex.bodyStream).then((upstream) => {
      metrics.upstreamDone(ex.xmlrpc ? 'xmlrpc' : 'rest', (performance.now() - started) / 1000);
      return upstream;
    });
  };
}
