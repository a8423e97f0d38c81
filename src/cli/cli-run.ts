// The command line as a function of argv, environment and output streams, so that tests run
// it the way a shell does and read what it prints; src/cli/cli.ts hands it the process's own.
import { ConfigError, loadConfig, type Config } from '../config/config.js';
import { helpText } from './cli-help.js';
import { parseArgs, UsageError, type Command } from './cli-args.js';
import { AuthError, runAuth } from './auth-command.js';
import { runTokenStatus, type Output } from './token-status.js';
import { TokenStoreError } from '../tokens/token-store.js';

export interface CliInput {
  argv: readonly string[];
  env: NodeJS.ProcessEnv;
  stdout: Output;
  stderr: Output;
  /** Relative paths in the configuration resolve against this; default the process's. */
  cwd?: string;
  /** Runs the proxy until it is stopped (the process's signals are src/cli/cli.ts's business). */
  serve: (config: Config) => Promise<void>;
}

/** Runs one command; resolves to its exit code, or to undefined for a proxy that is now serving. */
export async function runCli(input: CliInput): Promise<number | undefined> {
  const { stdout, stderr } = input;
  let command: Command;
  try {
    command = parseArgs(input.argv);
    if (command.kind === 'help') {
      stdout.write(helpText() + '\n');
      return 0;
    }
    const config = loadConfig({ env: input.env, configFile: command.configFile, cwd: input.cwd });
    switch (command.kind) {
      case 'serve':
        await input.serve(config);
        return undefined;
      case 'auth':
        await runAuth({ config, out: stdout, code: command.code, state: command.state, timeoutMs: command.timeoutMs });
        return 0;
      case 'token-status':
        return await runTokenStatus({ config, out: stdout, json: command.json });
    }
  } catch (err) {
    // These messages are written for the operator and carry no secret (see shown() in config.ts).
    if (err instanceof ConfigError || err instanceof UsageError) {
      stderr.write(`keap-proxy: ${err.message}\n`);
      return 2;
    }
    if (err instanceof AuthError || err instanceof TokenStoreError) {
      stderr.write(`keap-proxy: ${err.message}\n`);
      return 1;
    }
    throw err;
  }
}
