// The command line as a function of argv, environment and output streams, so that tests run
// it the way a shell does and read what it prints; src/cli/cli.ts hands it the process's own.
import { ConfigError, loadConfig, UNKNOWN_PROCESS, type Config, type ProcessFacts } from '../config/config.js';
import { commandHelpText, helpText } from './cli-help.js';
import { parseArgs, UsageError, type Command } from './cli-args.js';
import { AuthError, runAuth } from './auth-command.js';
import path from 'node:path';
import { runTokenStatus, type Output } from './token-status.js';
import { runTokenExport, runTokenImport, TransferError } from './token-transfer.js';
import { ReportError, runXmlRpcReport } from './xmlrpc-report.js';
import { Readable } from 'node:stream';
import { TokenStoreError } from '../tokens/token-store.js';

export interface CliInput {
  argv: readonly string[];
  env: NodeJS.ProcessEnv;
  stdout: Output;
  stderr: Output;
  /** Relative paths in the configuration resolve against this; default the process's. */
  cwd?: string;
  /** All of standard input, for `token import --from -`. */
  stdin?: () => Promise<string>;
  /** Standard input as a stream, for `xmlrpc report` reading a log piped in. */
  stdinStream?: () => Readable;
  /** keap-proxy's version and whether it runs in a container, as src/cli/cli.ts found them; default UNKNOWN_PROCESS. */
  facts?: ProcessFacts;
  /**
   * Runs the proxy until it is stopped (the process's signals are src/cli/cli.ts's business);
   * `reread` reads the configuration again, from the same sources, for a reload.
   */
  serve: (config: Config, reread: () => Config) => Promise<void>;
}

/** Runs one command; resolves to its exit code, or to undefined for a proxy that is now serving. */
export async function runCli(input: CliInput): Promise<number | undefined> {
  const { stdout, stderr } = input;
  const facts = input.facts ?? UNKNOWN_PROCESS;
  let command: Command;
  let config: Config | undefined;
  try {
    command = parseArgs(input.argv);
    if (command.kind === 'help') {
      stdout.write((command.command !== undefined ? commandHelpText(command.command) : helpText()) + '\n');
      return 0;
    }
    if (command.kind === 'version') {
      stdout.write(`${facts.version}\n`);
      return 0;
    }
    // The report reads log files: it needs no configuration, and works where there is none.
    if (command.kind === 'xmlrpc-report')
      return await runXmlRpcReport({
        files: command.logs.map((f) => path.resolve(input.cwd ?? process.cwd(), f)),
        stdin: input.stdinStream ?? (() => Readable.from([])),
        out: stdout,
        json: command.json,
      });
    config = loadConfig({ env: input.env, configFile: command.configFile, cwd: input.cwd, facts });
    switch (command.kind) {
      case 'serve':
        await input.serve(config, () =>
          loadConfig({
            env: input.env,
            configFile: command.kind === 'serve' ? command.configFile : undefined,
            cwd: input.cwd,
            facts,
          }),
        );
        return undefined;
      case 'auth':
        await runAuth({
          config,
          out: stdout,
          account: command.account,
          code: command.code,
          state: command.state,
          timeoutMs: command.timeoutMs,
        });
        return 0;
      case 'token-status':
        return await runTokenStatus({ config, out: stdout, account: command.account, json: command.json });
      case 'token-export':
        return await runTokenExport({
          config,
          out: stdout,
          err: stderr,
          account: command.account,
          file: command.out,
          cwd: input.cwd ?? process.cwd(),
        });
      case 'token-import':
        return await runTokenImport({
          config,
          out: stdout,
          account: command.account,
          from: command.from,
          force: command.force,
          cwd: input.cwd ?? process.cwd(),
          stdin: input.stdin ?? (() => Promise.resolve('')),
        });
    }
  } catch (err) {
    // These messages are written for the operator and carry no secret (see shown() in config.ts).
    if (err instanceof ConfigError || err instanceof UsageError) {
      stderr.write(`keap-proxy: ${err.message}\n`);
      return 2;
    }
    if (err instanceof AuthError || err instanceof TransferError || err instanceof ReportError) {
      stderr.write(`keap-proxy: ${err.message}\n`);
      return 1;
    }
    if (err instanceof TokenStoreError) {
      stderr.write(`keap-proxy: TOKEN_STORE: ${err.message}\n`);
      return 1;
    }
    const listen = config !== undefined ? listenFailure(err, config) : undefined;
    if (listen !== undefined) {
      stderr.write(`keap-proxy: ${listen}\n`);
      return 1;
    }
    throw err;
  }
}

/** Why the proxy could not listen, as one line naming the setting and what to do; undefined for any other error. */
export function listenFailure(err: unknown, config: Config): string | undefined {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  const where = `${config.host}:${config.port}`;
  switch (code) {
    case 'EADDRINUSE':
      return `PORT: ${where} is already in use; stop what listens there or set PORT to a free port`;
    case 'EADDRNOTAVAIL':
      return `HOST: ${config.host} is not an address of this machine; set HOST to one of its addresses (127.0.0.1 by default)`;
    case 'EACCES':
      return `PORT: listening on ${where} is not permitted for this user (ports below 1024 need privileges); set PORT to 1024 or above`;
    default:
      return undefined;
  }
}
