// SIGHUP reads the configuration again and serves ACCOUNTS_FILE's accounts as it now says:
// added accounts at once, removed or changed ones after their requests in flight. A file
// that no longer validates changes nothing: the proxy keeps serving what it had, and says why.
import type { Config } from '../config/config.js';
import { ConfigError } from '../config/config.js';
import type { RunningProxy } from '../http/server.js';

export interface HangupSource {
  on(signal: 'SIGHUP', listener: () => void): unknown;
}

export function reloadOnSignal(proc: HangupSource, running: RunningProxy, reread: () => Config): void {
  proc.on('SIGHUP', () => {
    let next: Config;
    try {
      next = reread();
    } catch (err) {
      const problems = err instanceof ConfigError ? err.problems : [err instanceof Error ? err.message : String(err)];
      running.logger.warn(
        { event: 'accounts_reload_refused', problems },
        'the configuration read on SIGHUP is not valid: nothing changed; fix it and send SIGHUP again',
      );
      return;
    }
    running.reloadAccounts(next);
  });
}
