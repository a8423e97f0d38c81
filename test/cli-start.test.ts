// A proxy that cannot start says so in one line that names the setting and what to do, and
// exits non-zero: no stack trace, no unhandled rejection, nothing left running.
import { describe, it, expect } from 'vitest';
import net from 'node:net';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';
import { runCli } from '../src/cli/cli-run.js';
import { startProxy } from '../src/http/server.js';
import { createLogger } from '../src/observability/log.js';
import type { Config } from '../src/config/config.js';
import { Out, tempDir, SIM_API_KEY } from './harness.js';
import { unwritableDir, unwritableDirAvailable } from './unwritable-dir.js';

/** The real server, started as the serve command starts it, with its log lines dropped. */
async function serve(config: Config): Promise<void> {
  await startProxy(config, { logger: createLogger('silent', new Writable({ write: (_c, _e, cb) => cb() })) });
}

async function start(env: Record<string, string>): Promise<{ code: number | undefined; err: string }> {
  const stdout = new Out();
  const stderr = new Out();
  const code = await runCli({
    argv: [],
    env: { KEAP_API_URL: 'http://127.0.0.1:9', RATE_LIMIT_PER_SECOND: '0', ...env },
    stdout,
    stderr,
    cwd: tempDir(),
    serve,
  });
  return { code, err: stderr.text };
}

function oneLine(text: string): void {
  expect(text.trimEnd().split('\n')).toHaveLength(1);
  expect(text).not.toMatch(/\n\s+at /);
}

describe('start failures', () => {
  it('a port in use: PORT is named, exit 1', async () => {
    const taken = net.createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    const port = (taken.address() as net.AddressInfo).port;
    try {
      const { code, err } = await start({ KEAP_API_KEY: SIM_API_KEY, PORT: String(port) });
      expect(code).toBe(1);
      expect(err).toBe(
        `keap-proxy: PORT: 127.0.0.1:${port} is already in use; stop what listens there or set PORT to a free port\n`,
      );
      oneLine(err);
    } finally {
      taken.close();
    }
  });

  it("an address that is not this machine's: HOST is named, exit 1", async () => {
    // 192.0.2.0/24 is reserved for documentation (RFC 5737): binding fails, nothing is sent.
    const { code, err } = await start({ KEAP_API_KEY: SIM_API_KEY, HOST: '192.0.2.1', PORT: '0' });
    expect(code).toBe(1);
    expect(err).toMatch(/^keap-proxy: HOST: 192\.0\.2\.1 is not an address of this machine; set HOST/);
    oneLine(err);
  });

  it('a token store that cannot be read: TOKEN_STORE is named, exit 1, no secret shown', async () => {
    const dir = tempDir();
    const store = path.join(dir, 'store', 'tokens.json');
    mkdirSync(path.dirname(store), { recursive: true });
    writeFileSync(store, 'not json, but refresh-token-that-must-not-show');
    const { code, err } = await start({
      KEAP_CLIENT_ID: 'id',
      KEAP_CLIENT_SECRET: 'client-secret-that-must-not-show',
      TOKEN_STORE: store,
      PORT: '0',
    });
    expect(code).toBe(1);
    expect(err).toMatch(
      /^keap-proxy: TOKEN_STORE: token store .* is not valid JSON; restore it or remove it and re-authorize/,
    );
    expect(err).not.toContain('must-not-show');
    oneLine(err);
  });

  it.runIf(unwritableDirAvailable())(
    'a token store directory that cannot be written: TOKEN_STORE is named with the directory and what to do, exit 1, nothing left running',
    async () => {
      const dir = unwritableDir();
      const { code, err } = await start({
        KEAP_CLIENT_ID: 'id',
        KEAP_CLIENT_SECRET: 'client-secret-that-must-not-show',
        KEAP_REFRESH_TOKEN: 'refresh-token-that-must-not-show',
        TOKEN_STORE: path.join(dir, 'tokens.json'),
        PORT: '0',
      });
      expect(code).toBe(1);
      expect(err).toMatch(
        new RegExp(
          `^keap-proxy: TOKEN_STORE: token store directory ${dir} cannot be written by this process \\((EACCES|EPERM|EROFS): the lock ${path.join(dir, 'tokens.json.lock')} cannot be created\\), so no refreshed grant could be saved; make it writable by user \\d+ .* or point TOKEN_STORE into a writable directory\n$`,
        ),
      );
      expect(err).not.toContain('must-not-show');
      oneLine(err);
    },
  );

  it('a token store directory that cannot be made (a file in its path): TOKEN_STORE is named, exit 1', async () => {
    const dir = tempDir();
    writeFileSync(path.join(dir, 'a-file'), '');
    const { code, err } = await start({
      KEAP_CLIENT_ID: 'id',
      KEAP_CLIENT_SECRET: 'client-secret-that-must-not-show',
      TOKEN_STORE: path.join(dir, 'a-file', 'tokens.json'),
      PORT: '0',
    });
    expect(code).toBe(1);
    expect(err).toMatch(
      /^keap-proxy: TOKEN_STORE: token store .*a-file\/tokens\.json(\.lock)? cannot be (read|created) \(ENOTDIR\)/,
    );
    oneLine(err);
  });
});
