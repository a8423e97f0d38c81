// keap-proxy's version: printed by `--version` and `version`, carried by the start-up log line,
// every /readyz answer and /metrics' keap_proxy_build_info. package.json is read once, by the
// process edge, from wherever the code runs: src/ under tsx, dist/ after a build, /app in the image.
import { afterEach, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { loadConfig, type ProcessFacts } from '../src/config/config.js';
import { readPackageVersion } from '../src/config/process-facts.js';
import { startProxy, type RunningProxy } from '../src/http/server.js';
import { createLogger } from '../src/observability/log.js';
import { KeapSimulator } from './simulator/keap-simulator.js';
import { keyEnv, LogCapture, oauthEnv, runCommand, send, tempDir } from './harness.js';

const PACKAGE_VERSION = (
  JSON.parse(readFileSync(path.resolve(import.meta.dirname, '../package.json'), 'utf8')) as { version: string }
).version;
const FACTS: ProcessFacts = { version: '7.8.9-test', inContainer: false };

const cli = (argv: string[], facts?: ProcessFacts) => runCommand(argv, facts === undefined ? {} : { facts });

describe('keap-proxy --version and version', () => {
  it.each([[['--version']], [['-V']], [['version']]])(
    '%o prints the version and exits 0, with no configuration',
    async (argv) => {
      expect(await cli(argv, FACTS)).toEqual({ code: 0, out: '7.8.9-test\n', err: '' });
    },
  );

  it('takes no other argument', async () => {
    for (const argv of [
      ['version', 'extra'],
      ['--version', 'auth'],
    ]) {
      const r = await cli(argv, FACTS);
      expect(r.code, argv.join(' ')).toBe(2);
      expect(r.err).toMatch(/^keap-proxy: (--)?version takes no/);
    }
  });

  it("the process prints package.json's version, run from src/ through tsx, from any working directory", async () => {
    const tsx = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;
    const child = spawn(
      process.execPath,
      ['--import', tsx, path.resolve(import.meta.dirname, '../src/cli/cli.ts'), '--version'],
      {
        cwd: tempDir(),
        env: { PATH: process.env.PATH ?? '' },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString('utf8')));
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    expect(code).toBe(0);
    expect(out).toBe(`${PACKAGE_VERSION}\n`);
  });
});

describe('readPackageVersion', () => {
  it("finds keap-proxy's package.json above src/cli (tsx) and above dist/src/cli (a build, the image's /app)", () => {
    expect(readPackageVersion(pathToFileURL(path.resolve(import.meta.dirname, '../src/cli/cli.ts')).href)).toBe(
      PACKAGE_VERSION,
    );
    // The image: /app/package.json beside /app/dist/src/cli/cli.js.
    const app = tempDir();
    writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'keap-proxy', version: '3.2.1' }));
    mkdirSync(path.join(app, 'dist', 'src', 'cli'), { recursive: true });
    writeFileSync(path.join(app, 'dist', 'src', 'cli', 'cli.js'), '');
    expect(readPackageVersion(pathToFileURL(path.join(app, 'dist', 'src', 'cli', 'cli.js')).href)).toBe('3.2.1');
    // Another package's package.json on the way (a dependency's, a broken one) is passed over.
    writeFileSync(path.join(app, 'dist', 'package.json'), JSON.stringify({ type: 'module' }));
    writeFileSync(path.join(app, 'dist', 'src', 'package.json'), '{ not json');
    expect(readPackageVersion(path.join(app, 'dist', 'src', 'cli'))).toBe('3.2.1');
  });

  it("says 'unknown' where no keap-proxy package.json is above", () => {
    const dir = tempDir();
    writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'someone-else', version: '1.0.0' }));
    // The temporary folder's ancestors hold no keap-proxy package.json.
    expect(readPackageVersion(dir)).toBe('unknown');
  });
});

describe('the version where operators look', () => {
  let running: { proxy: RunningProxy; sim: KeapSimulator } | undefined;
  afterEach(async () => {
    await running?.proxy.close();
    await running?.sim.close();
    running = undefined;
  });

  async function start(env: Record<string, string>, oauth = false): Promise<{ proxy: RunningProxy; logs: LogCapture }> {
    const sim = await KeapSimulator.start();
    const dir = tempDir();
    const logs = new LogCapture();
    const config = loadConfig({
      env: { ...(oauth ? oauthEnv(sim, dir) : keyEnv(sim)), ...env },
      cwd: dir,
      facts: FACTS,
    });
    const proxy = await startProxy(config, { logger: createLogger(config.logLevel, logs) });
    running = { proxy, sim };
    return { proxy, logs };
  }

  it('the starting log line carries the version and the Node.js version', async () => {
    const { logs } = await start({});
    const line = logs.entries.find((e) => e.event === 'starting');
    expect(line).toMatchObject({ version: '7.8.9-test', node: process.version, msg: 'keap-proxy 7.8.9-test starting' });
  });

  it('/readyz carries it, ready (one account) and not ready (OAuth with no grant)', async () => {
    const { proxy } = await start({});
    const ready = await send(proxy.url, 'GET', '/readyz');
    expect(ready.status).toBe(200);
    expect(ready.json()).toMatchObject({ status: 'ready', version: '7.8.9-test' });
    await running?.proxy.close();
    await running?.sim.close();
    running = undefined;

    const { proxy: waiting } = await start({ KEAP_REFRESH_TOKEN: '' }, true);
    const notReady = await send(waiting.url, 'GET', '/readyz');
    expect(notReady.status).toBe(503);
    expect(notReady.json()).toMatchObject({ error: 'reauthorization_required', version: '7.8.9-test' });
  });

  it('/readyz carries it in the accounts shape too, and for ?account=', async () => {
    const dir = tempDir();
    const accountsFile = path.join(dir, 'accounts.json');
    writeFileSync(
      accountsFile,
      JSON.stringify({
        accounts: { a: { KEAP_API_KEY: 'key-of-account-a' }, b: { KEAP_API_KEY: 'key-of-account-b' } },
      }),
    );
    const { proxy } = await start({ KEAP_API_KEY: '', ACCOUNTS_FILE: accountsFile, ALLOWED_HOSTS: '' });
    const all = await send(proxy.url, 'GET', '/readyz');
    expect(all.status).toBe(200);
    expect(all.json()).toMatchObject({ status: 'ready', version: '7.8.9-test', configured: 2 });
    const one = await send(proxy.url, 'GET', '/readyz?account=nope');
    expect(one.status).toBe(503);
    expect(one.json()).toMatchObject({ error: 'unknown_account', version: '7.8.9-test' });
  });

  it('/metrics has keap_proxy_build_info{version,node} 1', async () => {
    const { proxy } = await start({});
    const r = await send(proxy.url, 'GET', '/metrics');
    expect(r.text()).toContain(`keap_proxy_build_info{version="7.8.9-test",node="${process.version}"} 1`);
  });
});
