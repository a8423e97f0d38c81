// The last line of defence. Every known fault on the request path is handled where it
// happens; this catches the unknown one, so that one bad exchange does not end every other
// request in flight, and above all a refresh between Keap's answer and the store's write
// (Keap has already killed the old refresh token by then).
import type { Logger } from './log.js';

export interface ProcessEvents {
  on(event: 'uncaughtException', listener: (err: unknown, origin: string) => void): unknown;
  on(event: 'unhandledRejection', listener: (reason: unknown) => void): unknown;
}

export function installLastResortGuard(proc: ProcessEvents, logger: Logger): void {
  proc.on('uncaughtException', (err, origin) => {
    logger.error(
      { event: 'uncaught_exception', origin, err: describe(err) },
      'a fault escaped its request: logged, and the proxy keeps serving; please report it',
    );
  });
  proc.on('unhandledRejection', (reason) => {
    logger.error(
      { event: 'unhandled_rejection', err: describe(reason) },
      'a promise failed with nobody to handle it: logged, and the proxy keeps serving; please report it',
    );
  });
}

function describe(err: unknown): { message: string; stack?: string } {
  if (!(err instanceof Error)) return { message: String(err) };
  return { message: err.message, stack: err.stack?.split('\n').slice(0, 6).join('\n') };
}
