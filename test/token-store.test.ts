// FileTokenStore on a real filesystem: locks that are symlinks or have no readable age,
// writes that fail half-way, and directories and files other users could open.
import { describe, it, expect, afterEach } from 'vitest';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, statSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import ts from 'typescript';
import { FileTokenStore, TokenStoreError, type TokenStoreWarning } from '../src/token-store.js';
import type { Grant } from '../src/grant.js';
import { KeapSimulator } from './simulator/keap-simulator.js';
import { loadConfig } from '../src/config.js';
import { runAuth } from '../src/auth-command.js';
import { harnessPerTest, oauthEnv, Out, tempDir } from './harness.js';

const REFRESH = 'refresh-token-that-must-not-show';
const posix = process.platform !== 'win32';

function grant(extra: Partial<Grant> = {}): Grant {
  return { accessToken: 'access-token', refreshToken: REFRESH, tokenType: 'bearer', scope: 'full|ab123.infusionsoft.com', accessExpiresAt: 2e12, issuedAt: 1e12, refreshIssuedAt: 1e12, ...extra };
}

/** A store in a fresh 0700 directory, and that directory. */
function newStore(options: ConstructorParameters<typeof FileTokenStore>[1] = {}): { store: FileTokenStore; dir: string; file: string } {
  const dir = path.join(tempDir(), 'store');
  mkdirSync(dir, { mode: 0o700 });
  const file = path.join(dir, 'tokens.json');
  return { store: new FileTokenStore(file, options), dir, file };
}

const tmpFiles = (dir: string): string[] => readdirSync(dir).filter((n) => n.endsWith('.tmp'));
const mode = (p: string): number => statSync(p).mode & 0o777;

// A staleLockMs far below lockTimeoutMs: a lock that never turns stale fails the test by
// timing out, however slow the machine; none of these tests measures how fast it went.
const QUICK_STALE = { staleLockMs: 50, lockTimeoutMs: 15_000 };

describe('the lock', () => {
  it('a dangling symlink at the lock path turns stale by its own age; its target is never created', async () => {
    const { store, file } = newStore(QUICK_STALE);
    const target = path.join(path.dirname(file), 'target-must-not-exist');
    symlinkSync(target, `${file}.lock`);
    let lockWhileHeld: ReturnType<typeof lstatSync> | undefined;
    expect(await store.withLock(async () => ((lockWhileHeld = lstatSync(`${file}.lock`)), 'ran'))).toBe('ran');
    expect(lockWhileHeld?.isFile()).toBe(true);
    expect(existsSync(target)).toBe(false);
    expect(existsSync(`${file}.lock`)).toBe(false);
  });

  it('a symlink at the lock path to a real file is removed, never followed: the file keeps its content', async () => {
    const { store, file } = newStore(QUICK_STALE);
    const target = path.join(tempDir(), 'precious');
    writeFileSync(target, 'keep me\n');
    symlinkSync(target, `${file}.lock`);
    await store.withLock(async () => {
      expect(lstatSync(`${file}.lock`).isSymbolicLink()).toBe(false);
      expect(readFileSync(target, 'utf8')).toBe('keep me\n');
    });
    expect(readFileSync(target, 'utf8')).toBe('keep me\n');
  });

  it('a lock whose age cannot be determined (mtime an hour ahead) is stale once watched for staleLockMs', async () => {
    const { store, file } = newStore(QUICK_STALE);
    writeFileSync(`${file}.lock`, '999999 from a host whose clock runs ahead\n');
    const ahead = new Date(Date.now() + 3_600_000);
    utimesSync(`${file}.lock`, ahead, ahead);
    expect(await store.withLock(async () => 'ran')).toBe('ran');
  });

  it.each([
    ['a fresh lock', 0],
    ['a lock with an mtime ahead of our clock', 3_600_000],
  ])('%s held by someone else is waited for, not stolen, and the wait ends in a clear error', async (_title, aheadMs) => {
    const { store, file } = newStore({ staleLockMs: 600_000, lockTimeoutMs: 100 });
    writeFileSync(`${file}.lock`, '999999 live holder\n');
    const when = new Date(Date.now() + aheadMs);
    utimesSync(`${file}.lock`, when, when);
    const err = await store.withLock(async () => 'ran').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TokenStoreError);
    expect((err as Error).message).toMatch(/token store lock .*tokens\.json\.lock is held by another process; if none runs, remove the file/);
    expect(readFileSync(`${file}.lock`, 'utf8')).toBe('999999 live holder\n');
  });
});

/** Compiles src/<entry> and the modules it imports to plain JS in `outDir`, for a child process (Node 20 runs no TypeScript). */
function compileForChild(entry: string, outDir: string): void {
  const todo = [entry];
  const done = new Set<string>();
  while (todo.length > 0) {
    const name = todo.pop() as string;
    if (done.has(name)) continue;
    done.add(name);
    const source = readFileSync(path.join(import.meta.dirname, '..', 'src', name), 'utf8');
    const { outputText } = ts.transpileModule(source, { compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 } });
    writeFileSync(path.join(outDir, name.replace(/\.ts$/, '.js')), outputText);
    for (const m of source.matchAll(/from '\.\/([\w-]+)\.js'/g)) todo.push(`${m[1]}.ts`);
  }
  writeFileSync(path.join(outDir, 'package.json'), '{"type":"module"}\n');
}

describe('a failed save', () => {
  // No tmpfs can be filled here, so the write runs in a child process under a file-size
  // limit (RLIMIT_FSIZE, `ulimit -f`): its write fails with EFBIG after the temp file exists,
  // through the same code path a full disk (ENOSPC) takes.
  it.runIf(posix)('a write that fails after the temp file exists (EFBIG under `ulimit -f`) leaves no temp file and the old grant intact', async () => {
    const { store, dir, file } = newStore();
    await store.save(grant());
    const before = readFileSync(file, 'utf8');
    const code = tempDir();
    compileForChild('token-store.ts', code);
    writeFileSync(
      path.join(code, 'child.js'),
      `import { FileTokenStore } from './token-store.js';
const big = { accessToken: 'a', refreshToken: ${JSON.stringify(REFRESH)}, tokenType: 'bearer', scope: 'x'.repeat(256 * 1024), accessExpiresAt: 2e12, issuedAt: 1e12, refreshIssuedAt: 1e12 };
try {
  await new FileTokenStore(process.argv[2]).save(big);
  console.log(JSON.stringify({ saved: true }));
} catch (err) {
  console.log(JSON.stringify({ name: err.name, message: err.message }));
}
`,
    );
    // 64 blocks: 32 KiB or 64 KiB by the shell's unit, far below the grant, far above Node's needs.
    const child = spawnSync('/bin/sh', ['-c', 'ulimit -f 64 && exec "$0" "$@"', process.execPath, path.join(code, 'child.js'), file], { encoding: 'utf8' });
    expect(child.status, child.stderr).toBe(0);
    const result = JSON.parse(child.stdout) as { name: string; message: string };
    expect(result.name).toBe('TokenStoreError');
    expect(result.message).toBe(`token store ${file} cannot be written (EFBIG); check free space and permissions in ${dir}`);
    expect(result.message).not.toContain(REFRESH);
    expect(tmpFiles(dir)).toEqual([]);
    expect(readFileSync(file, 'utf8')).toBe(before);
  });

  it('a rename that fails (the store path is a directory) leaves no temp file', async () => {
    const { store, dir, file } = newStore();
    mkdirSync(file);
    writeFileSync(path.join(file, 'occupant'), 'x');
    const err = await store.save(grant()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TokenStoreError);
    expect((err as Error).message).toMatch(new RegExp(`^token store ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} cannot be written \\((EISDIR|ENOTEMPTY|EEXIST|EPERM)\\)`));
    expect(tmpFiles(dir)).toEqual([]);
  });

  it('a grant that cannot be serialized (a BigInt) is refused before any temp file exists, naming no content', async () => {
    const { store, dir } = newStore();
    const bad = { ...grant(), accessExpiresAt: 10n } as unknown as Grant;
    const err = await store.save(bad).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TokenStoreError);
    expect((err as Error).message).toMatch(/cannot be written: the grant cannot be serialized \(TypeError\)$/);
    expect((err as Error).message).not.toContain(REFRESH);
    expect(readdirSync(dir)).toEqual([]);
  });
});

describe.runIf(posix)('permissions', () => {
  it.each(['save', 'withLock'] as const)('a store directory of ours with mode 0755 is tightened to 0700 on the first %s, with a warning', async (first) => {
    const warnings: TokenStoreWarning[] = [];
    const { store, dir } = newStore({ onWarning: (w) => warnings.push(w) });
    chmodSync(dir, 0o755);
    if (first === 'save') await store.save(grant());
    else await store.withLock(async () => undefined);
    expect(mode(dir)).toBe(0o700);
    expect(warnings).toEqual([{ event: 'token_store_permissions', path: dir, mode: '0755', action: 'tightened', message: `token store directory ${dir} has mode 0755: other users can open it; changed to 0700` }]);
    // Once per store, not on every use.
    await store.withLock(() => store.save(grant()));
    expect(warnings).toHaveLength(1);
  });

  it('a loose directory that holds other files is reported, never locked down under them', async () => {
    const warnings: TokenStoreWarning[] = [];
    const { store, dir } = newStore({ onWarning: (w) => warnings.push(w) });
    writeFileSync(path.join(dir, 'someone-elses.txt'), 'x');
    chmodSync(dir, 0o755);
    await store.save(grant());
    expect(mode(dir)).toBe(0o755);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatchObject({ event: 'token_store_permissions', path: dir, mode: '0755', action: 'left_as_is' });
    expect(warnings[0]?.message).toBe(`token store directory ${dir} has mode 0755: other users can open it; it holds other files too, so it is left as is: run \`chmod 700 ${dir}\`, or point TOKEN_STORE into a directory of its own`);
  });

  it('a store file with mode 0644 is reported on load, once; the next save makes it 0600', async () => {
    const warnings: TokenStoreWarning[] = [];
    const { store, file } = newStore({ onWarning: (w) => warnings.push(w) });
    writeFileSync(file, JSON.stringify(grant()), { mode: 0o644 });
    chmodSync(file, 0o644);
    expect(await store.load()).toEqual(grant());
    await store.load();
    expect(warnings).toEqual([
      {
        event: 'token_store_permissions',
        path: file,
        mode: '0644',
        action: 'left_as_is',
        message: `token store ${file} has mode 0644: other users may read the grant; it is rewritten with mode 0600 at the next refresh, or run \`chmod 600 ${file}\` now`,
      },
    ]);
    await store.save(grant());
    expect(mode(file)).toBe(0o600);
    await store.load();
    expect(warnings).toHaveLength(1);
    for (const w of warnings) expect(JSON.stringify(w)).not.toContain(REFRESH);
  });
});

describe.runIf(posix)('the warning reaches the operator', () => {
  const harness = harnessPerTest(afterEach);
  let sim: KeapSimulator | undefined;
  afterEach(async () => {
    await sim?.close();
    sim = undefined;
  });

  /** A store path in a directory that exists with mode 0755, as an operator's `mkdir` leaves it. */
  function looseStorePath(): string {
    const dir = path.join(tempDir(), 'loose');
    mkdirSync(dir);
    chmodSync(dir, 0o755);
    return path.join(dir, 'tokens.json');
  }

  it('the proxy logs it as a warn line with event token_store_permissions', async () => {
    const file = looseStorePath();
    const h = await harness({ mode: 'oauth', env: { TOKEN_STORE: file } });
    expect(mode(path.dirname(file))).toBe(0o700);
    expect(h.logs.entries.filter((e) => e.event === 'token_store_permissions')).toEqual([
      expect.objectContaining({ level: 'warn', path: path.dirname(file), mode: '0755', action: 'tightened', msg: expect.stringContaining('changed to 0700') }),
    ]);
  });

  it('`keap-proxy auth` prints it', async () => {
    sim = await KeapSimulator.start();
    const dir = tempDir();
    const redirect = 'https://app.example.com/keap/callback';
    const config = loadConfig({ env: { ...oauthEnv(sim, dir), KEAP_REFRESH_TOKEN: '', KEAP_REDIRECT_URI: redirect, TOKEN_STORE: looseStorePath() }, cwd: dir });
    const out = new Out();
    await runAuth({ config, out, code: sim.issueAuthorizationCode(redirect) });
    expect(out.text).toContain(`Warning: token store directory ${path.dirname(config.tokenStore.path)} has mode 0755: other users can open it; changed to 0700\n`);
  });
});
