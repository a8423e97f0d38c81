// `keap-proxy token export` and `token import`: a grant moves between stores (file, Redis)
// with one command, never over a newer grant, and is written nowhere it was not asked to go.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { statSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { Redis } from 'ioredis';
import { parseArgs, UsageError } from '../src/cli/cli-args.js';
import { FileTokenStore } from '../src/tokens/token-store.js';
import { RedisTokenStore } from '../src/tokens/redis-token-store.js';
import type { Grant } from '../src/tokens/grant.js';
import { grantIssuedAt } from './grants.js';
import { runCommand, tempDir } from './harness.js';
import { startRedisServer, type RedisServer } from './redis-server.js';

const REFRESH = 'refresh-token-live-one';

function grant(refreshIssuedAt: number, refreshToken = REFRESH): Grant {
  return grantIssuedAt(refreshIssuedAt, { accessToken: 'access-token-x', refreshToken });
}

const cli = (argv: string[], env: Record<string, string>, cwd: string, stdin = '') =>
  runCommand(argv, { env: { KEAP_CLIENT_ID: 'cid', KEAP_CLIENT_SECRET: 'csecret', ...env }, cwd, stdin });

let redis: RedisServer;
beforeAll(async () => {
  redis = await startRedisServer();
});
afterAll(async () => {
  await redis.stop();
});

async function redisGrant(prefix: string): Promise<Grant | undefined> {
  const client = new Redis(redis.clientOptions({ enableOfflineQueue: true }));
  const store = new RedisTokenStore({ redis: client, prefix });
  try {
    return await store.load();
  } finally {
    await store.close();
    client.disconnect();
  }
}

describe('token import', () => {
  it('moves a file grant into Redis with one command, and says so without showing a token', async () => {
    const dir = tempDir();
    await new FileTokenStore(path.join(dir, 'tokens.json')).save(grant(1_000));
    const url = `redis://${redis.host}:${redis.port}/0`;
    const r = await cli(['token', 'import', '--from', 'tokens.json'], { TOKEN_STORE: url, REDIS_PREFIX: 'mv1:' }, dir);
    expect(r.code).toBe(0);
    expect(r.out).toContain(`Imported the grant for ab123.infusionsoft.com into redis://${redis.host}:${redis.port}/0`);
    expect(r.out + r.err).not.toContain(REFRESH);
    expect(await redisGrant('mv1:')).toEqual(grant(1_000));
    // Again: the same grant is there already.
    const again = await cli(
      ['token', 'import', '--from', 'tokens.json'],
      { TOKEN_STORE: url, REDIS_PREFIX: 'mv1:' },
      dir,
    );
    expect(again.code).toBe(0);
    expect(again.out).toContain('already holds this grant');
  });

  it('never replaces a newer grant unless --force', async () => {
    const dir = tempDir();
    const target = path.join(dir, 'target.json');
    await new FileTokenStore(target).save(grant(5_000, 'refresh-newer'));
    await new FileTokenStore(path.join(dir, 'old.json')).save(grant(1_000, 'refresh-older'));
    const refused = await cli(['token', 'import', '--from', 'old.json'], { TOKEN_STORE: target }, dir);
    expect(refused.code).toBe(1);
    expect(refused.out).toContain('holds a newer grant');
    expect((await new FileTokenStore(target).load())?.refreshToken).toBe('refresh-newer');
    const forced = await cli(['token', 'import', '--from', 'old.json', '--force'], { TOKEN_STORE: target }, dir);
    expect(forced.code).toBe(0);
    expect((await new FileTokenStore(target).load())?.refreshToken).toBe('refresh-older');
  });

  it('takes exported JSON on stdin, and refuses what is not a grant', async () => {
    const dir = tempDir();
    const target = path.join(dir, 'target.json');
    const ok = await cli(
      ['token', 'import', '--from', '-'],
      { TOKEN_STORE: target },
      dir,
      JSON.stringify(grant(2_000)),
    );
    expect(ok.code).toBe(0);
    expect(await new FileTokenStore(target).load()).toEqual(grant(2_000));
    const bad = await cli(['token', 'import', '--from', '-'], { TOKEN_STORE: target }, dir, '{"refreshToken":"x"}');
    expect(bad.code).toBe(1);
    expect(bad.err).toBe('keap-proxy: stdin is not a grant: give the output of `keap-proxy token export`\n');
    const empty = await cli(['token', 'import', '--from', 'none.json'], { TOKEN_STORE: target }, dir);
    expect(empty.code).toBe(1);
    expect(empty.err).toMatch(/none\.json holds no grant: nothing to import/);
  });
});

describe('token export', () => {
  it('writes the grant to stdout, or to a new file with mode 0600, never over an existing one', async () => {
    const dir = tempDir();
    const url = `redis://${redis.host}:${redis.port}/0`;
    const env = { TOKEN_STORE: url, REDIS_PREFIX: 'ex1:' };
    expect((await cli(['token', 'import', '--from', '-'], env, dir, JSON.stringify(grant(3_000)))).code).toBe(0);

    // token status reads the same store.
    const status = await cli(['token', 'status', '--json'], env, dir);
    expect(status.code).toBe(0);
    expect(JSON.parse(status.out)).toMatchObject({ store: `redis://${redis.host}:${redis.port}/0 (prefix ex1:)` });
    expect(status.out).not.toContain(REFRESH);

    const toStdout = await cli(['token', 'export'], env, dir);
    expect(toStdout.code).toBe(0);
    expect(JSON.parse(toStdout.out)).toEqual(grant(3_000));
    expect(toStdout.err).toMatch(/keep it secret/);

    const toFile = await cli(['token', 'export', '--out', 'grant.json'], env, dir);
    expect(toFile.code).toBe(0);
    expect(toFile.out).toBe('');
    expect(JSON.parse(readFileSync(path.join(dir, 'grant.json'), 'utf8'))).toEqual(grant(3_000));
    expect(statSync(path.join(dir, 'grant.json')).mode & 0o777).toBe(0o600);
    const over = await cli(['token', 'export', '--out', 'grant.json'], env, dir);
    expect(over.code).toBe(1);
    expect(over.err).toMatch(/grant\.json exists; export writes only a new file/);

    const none = await cli(['token', 'export'], { TOKEN_STORE: path.join(dir, 'empty.json') }, dir);
    expect(none.code).toBe(1);
    expect(none.out).toBe('');
  });
});

describe('parseArgs for token export and import', () => {
  it('reads their options', () => {
    expect(parseArgs(['token', 'export', '--out', 'g.json'])).toEqual({
      kind: 'token-export',
      configFile: undefined,
      out: 'g.json',
    });
    expect(parseArgs(['token', 'import', '--from', '-', '--force', '--config', 'c.properties'])).toEqual({
      kind: 'token-import',
      configFile: 'c.properties',
      from: '-',
      force: true,
    });
  });

  it.each([
    [['token', 'import'], /--from is required/],
    [['token', 'export', '--from', 'x'], /unknown option "--from" for keap-proxy token export/],
    [['token', 'import', '--from', 'x', '--json'], /unknown option "--json" for keap-proxy token import/],
    [['token', 'copy'], /did you mean "token status", "token export" or "token import"/],
  ])('%o is refused', (argv, message) => {
    expect(() => parseArgs(argv)).toThrow(UsageError);
    expect(() => parseArgs(argv)).toThrow(message);
  });
});
