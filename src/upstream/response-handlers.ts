// Keap's answer passes through response handlers before it is relayed, the way the request
// passes through stages. A handler gets the exchange, Keap's response and `resend`, and
// returns the response to pass on: nearly always the one it got, at once; or, when its
// policy says a replay is safe, the answer to a replay sent with `resend`, which passes the
// new answer through the handlers inside this one only (each handler keeps its own count of
// replays on the exchange). A handler that must read the body keeps it (keepReadBody) for
// the relay; one whose policy says "give up" throws a domain error, answered at the edge.
import type { IncomingMessage } from 'node:http';
import type { Exchange, Stage } from '../pipeline/exchange.js';

/** Sends the exchange's request to Keap (again) and resolves with Keap's response. */
export type Dispatch = (ex: Exchange) => Promise<IncomingMessage>;

export type ResponseHandler = (
  ex: Exchange,
  res: IncomingMessage,
  resend: Dispatch,
) => IncomingMessage | Promise<IncomingMessage>;

/** Writes the final response to the client. */
export type Relay = (ex: Exchange, res: IncomingMessage) => void;

/**
 * `handlers` run innermost first: handlers[0] sees every response, replays included; the last
 * one wraps all the others. Handlers that pass a response on at once cost no promise: on the
 * hot path a request takes exactly one `then`, as if there were no handlers.
 */
export function composeResponseSide(send: Dispatch, handlers: readonly ResponseHandler[], relay: Relay): Stage {
  const through = (
    ex: Exchange,
    res: IncomingMessage,
    from: number,
    to: number,
  ): IncomingMessage | Promise<IncomingMessage> => {
    for (let i = from; i < to; i++) {
      const out = (handlers[i] as ResponseHandler)(ex, res, resends[i] as Dispatch);
      if (out instanceof Promise) {
        const next = i + 1;
        return out.then((r) => through(ex, r, next, to));
      }
      res = out;
    }
    return res;
  };
  const resends: Dispatch[] = handlers.map((_, i) => (ex) => send(ex).then((res) => through(ex, res, 0, i)));
  const all = handlers.length;
  return (ex) =>
    send(ex).then((res) => {
      const out = through(ex, res, 0, all);
      if (out instanceof Promise) return out.then((r) => relay(ex, r));
      relay(ex, out);
    });
}
