#!/usr/bin/env node
// The process edge: argv and process.env are read here and nowhere else.
import { ConfigError, loadConfig } from './config.js';
import { helpText } from './cli-help.js';
import { startProxy, type RunningProxy } from './server.js';

interface Args {
  help: boolean;
  configFile: string | undefined;
}

function parseArgs(argv: string[]): Args {
  const args: Args = { help: false, configFile: undefined };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--help' || a === '-h') args.help = true;
    else if (a === '--config') args.configFile = argv[++i];
    else if (a?.startsWith('--config=')) args.configFile = a.slice('--config='.length);
    else throw new ConfigError([`unknown argument "${a}"; see keap-proxy --help`]);
  }
  return args;
}

async function main(): Promise<void> {
  let running: RunningProxy;
  try {
    const args = parseArgs(process.argv.slice(2));
    if (args.help) {
      process.stdout.write(helpText() + '\n');
      return;
    }
    const config = loadConfig({ env: process.env, configFile: args.configFile });
    running = await startProxy(config);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`keap-proxy: ${err.message}\n`);
      process.exitCode = 2;
      return;
    }
    throw err;
  }
  const stop = (signal: string): void => {
    running.logger.info({ event: 'stopping', signal }, 'keap-proxy stopping');
    void running.close().then(() => running.logger.flush());
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
}

void main();
