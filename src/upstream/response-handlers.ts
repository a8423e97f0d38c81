// Keap's answer passes through response handlers before it is relayed, the way the request
// passes through stages. A handler gets the exchange, Keap's response and `resend`, and
// returns the response to pass on: nearly always the one it got, at once; or, when its
// policy says a replay is safe, the answer to a replay sent with `resend`, which passes the
// new answer through the handlers inside this one only (each handler keeps its own count of
// replays on the exchange). A handler that must read the body keeps it (keepReadBody) for
// the relay; one whose policy says "give up" throws a domain error, answered at the edge.
// A handler may also answer the client itself, as a stage may (e.g. from REST v2 instead of
// Keap's XML-RPC answer), and return 'done': nothing is relayed then. Such a handler must
// come after every handler that replays: a replay's answer is a response, never 'done'.
import type { IncomingMessage } from 'node:http';
import type { Exchange, Stage } from '../pipeline/exchange.js';

/** Sends the exchange's request to Keap (again) and resolves with Keap's response. */
export type Dispatch = (ex: Exchange) => Promise<IncomingMessage>;

/** The response to pass on, or 'done': the handler answered the client itself (and disposed of Keap's response). */
export type Handled = IncomingMessage | 'done';

export type ResponseHandler = (ex: Exchange, res: IncomingMessage, resend: Dispatch) => Handled | Promise<Handled>;

/** Writes the final response to the client. */
export type Relay = (ex: Exchange, res: IncomingMessage) => void;

/**
 * `handlers` run innermost first: handlers[0] sees every response, replays included; the last
 * one wraps all the others. Handlers that pass a response on at once cost no promise: on the
 * hot path a request takes exactly one `then`, as if there were no handlers.
 */
export function composeResponseSide(send: Dispatch, handlers: readonly ResponseHandler[], relay: Relay): Stage {
  const through = (ex: Exchange, res: IncomingMessage, from: number, to: number): Handled | Promise<Handled> => {
    for (let i = from; i < to; i++) {
      const out = (handlers[i] as ResponseHandler)(ex, res, resends[i] as Dispatch);
      if (out instanceof Promise) {
        const next = i + 1;
        return out.then((r) => (r === 'done' ? r : through(ex, r, next, to)));
      }
      if (out === 'done') return out;
      res = out;
    }
    return res;
  };
  const resends: Dispatch[] = handlers.map(
    (_, i) => (ex) => send(ex).then(async (res) => replayAnswer(await through(ex, res, 0, i))),
  );
  const finish = (ex: Exchange, out: Handled): void => {
    if (out !== 'done') relay(ex, out);
  };
  const all = handlers.length;
  return (ex) =>
    send(ex).then((res) => {
      const out = through(ex, res, 0, all);
      if (out instanceof Promise) return out.then((r) => finish(ex, r));
      finish(ex, out);
    });
}

function replayAnswer(out: Handled): IncomingMessage {
  if (out === 'done')
    throw new Error(
      'a response handler answered inside a replay: compose handlers that answer outside those that replay',
    );
  return out;
}
