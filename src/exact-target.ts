// With `toProxy`, http-proxy-3 sends the client's request target as it is, but still joins it
// to the target URL's path with its urlJoin, which drops an empty query: "/x?" would reach Keap
// as "/x". This puts the "?" back, so every byte of the target passes.
//
// Why on the agent: the upstream request meets its agent inside its constructor, before its
// head is built. http-proxy-3's 'proxyReq' event comes when the request gets a socket, which for
// a request that waited for a free one is after its head was already built from the path.
import type { Agent, ClientRequest, IncomingMessage } from 'node:http';
import type { ProxyServer } from 'http-proxy-3';

interface AgentInternals {
  addRequest(req: ClientRequest, options: unknown): void;
}

export function keepEmptyQuery(proxy: ProxyServer, agent: Agent): void {
  // 'start' is emitted synchronously just before http-proxy-3 creates the upstream request,
  // and is set for every request, so a stale value is always overwritten before it is read.
  let emptyQuery = false;
  proxy.on('start', (req: IncomingMessage) => {
    emptyQuery = endsInEmptyQuery(req.url);
  });
  const internals = agent as unknown as AgentInternals;
  const addRequest = internals.addRequest;
  internals.addRequest = function (this: AgentInternals, upstreamReq: ClientRequest, options: unknown): void {
    if (emptyQuery) {
      emptyQuery = false;
      upstreamReq.path += '?';
    }
    addRequest.call(this, upstreamReq, options);
  };
}

/** "/x?" but not "/x?a" or "/x?a?": only a lone "?" at the end is an empty query urlJoin drops. */
export function endsInEmptyQuery(url: string | undefined): boolean {
  return url !== undefined && url.charCodeAt(url.length - 1) === 63 /* ? */ && url.indexOf('?') === url.length - 1;
}
