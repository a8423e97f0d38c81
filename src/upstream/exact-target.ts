// With `toProxy`, http-proxy-3 sends the client's request target as it is, but still joins it
// to the target URL's path with its urlJoin, which drops an empty query: "/x?" would reach Keap
// as "/x". This puts the "?" back, so every byte of the target passes.
//
// Why on the agent: the upstream request meets its agent inside its constructor, before its
// head is built. http-proxy-3's 'proxyReq' event comes when the request gets a socket, which for
// a request that waited for a free one is after its head was already built from the path.
//
// Why armed per request: only a target ending in a lone "?" needs it, and a wrapper on every
// request's way through the agent cost about a microsecond each (measured with --cpu-prof).
import type { Agent, ClientRequest } from 'node:http';

interface AgentInternals {
  addRequest(req: ClientRequest, options: unknown): void;
}

/**
 * Runs `send` (which must create the upstream request synchronously, as http-proxy-3's web()
 * does) so that the request it creates keeps the "?" its target ends in (see endsInEmptyQuery).
 */
export function sendKeepingEmptyQuery(agent: Agent, send: () => void): void {
  const internals = agent as unknown as AgentInternals;
  const own = Object.getPrototypeOf(agent) as AgentInternals;
  internals.addRequest = function (this: AgentInternals, upstreamReq: ClientRequest, options: unknown): void {
    upstreamReq.path += '?';
    own.addRequest.call(this, upstreamReq, options);
  };
  try {
    send();
  } finally {
    // The agent's own method again (the wrapper was an own property over the prototype's).
    delete (internals as Partial<AgentInternals>).addRequest;
  }
}

/** "/x?" but not "/x?a" or "/x?a?": only a lone "?" at the end is an empty query urlJoin drops. */
export function endsInEmptyQuery(url: string | undefined): boolean {
  return url !== undefined && url.charCodeAt(url.length - 1) === 63 /* ? */ && url.indexOf('?') === url.length - 1;
}
