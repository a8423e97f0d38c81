// `npm run demo`: the built-in Keap simulator and a proxy wired to it, so the proxy can be
// tried with no Keap account (see demo-setup.ts). Like cli.ts, this is a process edge and may
// read process.env.
import { ConfigError } from '../src/config/config.js';
import { startDemo, type Demo } from './demo-setup.js';

async function main(): Promise<void> {
  let demo: Demo;
  try {
    demo = await startDemo({ env: { PORT: process.env.PORT, LOG_LEVEL: process.env.LOG_LEVEL } });
  } catch (err) {
    if (err instanceof ConfigError) process.stderr.write(`${err.message}\n`);
    else process.stderr.write(`demo could not start: ${(err as Error).message}\n`);
    process.exitCode = 1;
    return;
  }
  const stop = (): void => {
    void demo.close();
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  // Last: whoever reads this may stop the demo at once.
  process.stderr.write(demo.instructions);
}

void main();
