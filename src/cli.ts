#!/usr/bin/env node
// The process edge: argv and process.env are read here and nowhere else.
import { ConfigError, loadConfig, type Config } from './config.js';
import { helpText } from './cli-help.js';
import { parseArgs, UsageError, type Command } from './cli-args.js';
import { AuthError, runAuth } from './auth-command.js';
import { runTokenStatus } from './token-status.js';
import { TokenStoreError } from './token-store.js';
import { startProxy } from './server.js';
import { createLogDestination, createLogger } from './log.js';
import { installLastResortGuard } from './last-resort.js';

/** Requests in flight at SIGTERM get this long to finish: well inside Kubernetes' default 30 s grace period. */
const SHUTDOWN_GRACE_MS = 10_000;

async function main(): Promise<void> {
  let command: Command;
  try {
    command = parseArgs(process.argv.slice(2));
    if (command.kind === 'help') {
      process.stdout.write(helpText() + '\n');
      return;
    }
    const config = loadConfig({ env: process.env, configFile: command.configFile });
    switch (command.kind) {
      case 'serve':
        return await serve(config);
      case 'auth':
        await runAuth({ config, out: process.stdout, code: command.code, state: command.state, timeoutMs: command.timeoutMs });
        process.exitCode = 0;
        return;
      case 'token-status':
        process.exitCode = await runTokenStatus({ config, out: process.stdout, json: command.json });
        return;
    }
  } catch (err) {
    if (err instanceof ConfigError || err instanceof UsageError) {
      process.stderr.write(`keap-proxy: ${err.message}\n`);
      process.exitCode = 2;
      return;
    }
    if (err instanceof AuthError || err instanceof TokenStoreError) {
      process.stderr.write(`keap-proxy: ${err.message}\n`);
      process.exitCode = 1;
      return;
    }
    throw err;
  }
}

async function serve(config: Config): Promise<void> {
  const destination = createLogDestination();
  // Lines still waiting for their batch when the process exits (a crash, an exit()) are written on the way out.
  process.once('exit', () => destination.flushSync());
  const logger = createLogger(config.logLevel, destination);
  installLastResortGuard(process, logger);
  const running = await startProxy(config, { logger });
  const stop = (signal: string): void => {
    running.logger.info({ event: 'stopping', signal }, 'keap-proxy stopping');
    void running.close(SHUTDOWN_GRACE_MS).then(() => running.logger.flush());
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
}

void main();
