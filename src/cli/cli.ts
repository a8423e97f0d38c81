#!/usr/bin/env node
// The process edge: argv and process.env are read here and nowhere else.
import type { Config } from '../config/config.js';
import { runCli } from './cli-run.js';
import { startProxy } from '../http/server.js';
import { createLogDestination, createLogger } from '../observability/log.js';
import { installLastResortGuard } from '../observability/last-resort.js';
import { reloadOnSignal } from './reload-on-signal.js';
import { stopOnSignal } from './stop-on-signal.js';
import { detectContainer, processContainerSigns, readPackageVersion } from '../config/process-facts.js';

async function serve(config: Config, reread: () => Config): Promise<void> {
  const destination = createLogDestination();
  // Lines still waiting for their batch when the process exits (a crash, an exit()) are written on the way out.
  process.once('exit', () => destination.flushSync());
  const logger = createLogger(config.logLevel, destination);
  installLastResortGuard(process, logger);
  const running = await startProxy(config, { logger });
  stopOnSignal(process, running, config.shutdown, (code) => process.exit(code));
  reloadOnSignal(process, running, reread);
}

void runCli({
  argv: process.argv.slice(2),
  env: process.env,
  stdout: process.stdout,
  stderr: process.stderr,
  stdin: async () => {
    const chunks: Buffer[] = [];
    for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks).toString('utf8');
  },
  stdinStream: () => process.stdin,
  // Read once, here: package.json above this file (dist/src/cli/ or src/cli/), and the container's signs.
  facts: {
    version: readPackageVersion(import.meta.url),
    inContainer: detectContainer(processContainerSigns(process.env)),
  },
  serve,
}).then(
  (code) => {
    if (code !== undefined) process.exitCode = code;
  },
  // A failure nobody foresaw: one line and a non-zero exit, never an unhandled rejection.
  (err: unknown) => {
    process.stderr.write(`keap-proxy: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
