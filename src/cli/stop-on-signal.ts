// SIGTERM (and SIGINT) stop the proxy the way a pod needs (RunningProxy.shutdown), then
// write a final `stopped` line with the counts and exit. The process is a parameter so a
// test can send the signal to a real proxy without ending its own process.
import type { RunningProxy } from '../http/server.js';

export interface SignalSource {
  on(signal: 'SIGTERM' | 'SIGINT', listener: () => void): unknown;
}

export function stopOnSignal(
  proc: SignalSource,
  running: RunningProxy,
  shutdown: { delayMs: number; graceMs: number },
  exit: (code: number) => void,
): void {
  let stopping = false;
  const stop = (signal: string): void => {
    // A second signal while stopping changes nothing: the grace already bounds the stop.
    if (stopping) return;
    stopping = true;
    const { delayMs, graceMs } = shutdown;
    running.logger.info(
      { event: 'stopping', signal, delayMs, graceMs },
      'keap-proxy stopping: /readyz answers 503, new connections accepted until the delay ends, then requests in flight drain',
    );
    running.shutdown({ delayMs, graceMs }).then(
      (counts) => {
        running.logger.info({ event: 'stopped', ...counts }, 'keap-proxy stopped');
        running.logger.flush(() => exit(0));
      },
      (err: unknown) => {
        running.logger.error(
          { event: 'stop_failed', err: err instanceof Error ? err.message : String(err) },
          'keap-proxy could not stop cleanly',
        );
        running.logger.flush(() => exit(1));
      },
    );
  };
  proc.on('SIGTERM', () => stop('SIGTERM'));
  proc.on('SIGINT', () => stop('SIGINT'));
}
