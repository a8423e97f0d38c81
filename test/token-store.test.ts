// FileTokenStore on a real filesystem: locks that are symlinks or have no readable age,
// writes that fail half-way, and directories and files other users could open.
import { describe, it, expect, afterEach } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  statSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { stat } from 'node:fs/promises';
import path from 'node:path';
import ts from 'typescript';
import { FileTokenStore, TokenStoreError, type TokenStoreWarning } from '../src/tokens/token-store.js';
import type { Grant } from '../src/tokens/grant.js';
import { testGrant } from './grants.js';
import { KeapSimulator } from './simulator/keap-simulator.js';
import { loadConfig } from '../src/config/config.js';
import { storeFile } from './store-path.js';
import { runAuth } from '../src/cli/auth-command.js';
import { harnessPerTest, oauthEnv, Out, tempDir } from './harness.js';

const REFRESH = 'refresh-token-that-must-not-show';
const posix = process.platform !== 'win32';

function grant(extra: Partial<Grant> = {}): Grant {
  return testGrant({ refreshToken: REFRESH, ...extra });
}

/** A store in a fresh 0700 directory, and that directory. */
function newStore(options: ConstructorParameters<typeof FileTokenStore>[1] = {}): {
  store: FileTokenStore;
  dir: string;
  file: string;
} {
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
  ])(
    '%s held by someone else is waited for, not stolen, and the wait ends in a clear error',
    async (_title, aheadMs) => {
      const { store, file } = newStore({ staleLockMs: 600_000, lockTimeoutMs: 100 });
      writeFileSync(`${file}.lock`, '999999 live holder\n');
      const when = new Date(Date.now() + aheadMs);
      utimesSync(`${file}.lock`, when, when);
      const err = await store.withLock(async () => 'ran').catch((e: unknown) => e);
      expect(err).toBeInstanceOf(TokenStoreError);
      expect((err as Error).message).toMatch(
        /token store lock .*tokens\.json\.lock is held by another process; if none runs, remove the file/,
      );
      expect(readFileSync(`${file}.lock`, 'utf8')).toBe('999999 live holder\n');
    },
  );
});

/** A lock left by a holder that died an hour ago; created with O_EXCL, so never over a live lock. False when a lock is there. */
function plantStaleLock(lock: string): boolean {
  try {
    writeFileSync(lock, '999999 died holding it\n', { flag: 'wx' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  }
  const past = new Date(Date.now() - 3_600_000);
  utimesSync(lock, past, past);
  return true;
}

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

// The planted locks are an hour old, so they are stale at once; a live lock (held for a few
// ticks, however busy the machine) is never taken for abandoned. Nothing here waits for time.
const CONTENDED = { staleLockMs: 600_000, lockTimeoutMs: 60_000 };

describe('the lock under contention', () => {
  it.each([2, 3])(
    '%i stores on one file, a stale lock planted before each of 50 rounds: never two inside at once',
    async (n) => {
      const { dir, file } = newStore();
      const warnings: TokenStoreWarning[] = [];
      const stores = Array.from(
        { length: n },
        () => new FileTokenStore(file, { ...CONTENDED, onWarning: (w) => warnings.push(w) }),
      );
      const events: string[] = [];
      let inside = 0;
      let most = 0;
      const critical = (who: string) => async (): Promise<void> => {
        events.push(`enter ${who}`);
        inside += 1;
        most = Math.max(most, inside);
        await tick();
        await tick();
        inside -= 1;
        events.push(`exit ${who}`);
      };
      for (let round = 0; round < 50; round++) {
        expect(plantStaleLock(`${file}.lock`)).toBe(true);
        await Promise.all(
          stores.map(async (store, i) => {
            // Staggered by a different number of filesystem round trips each round, so the stores
            // meet the stale lock at varied points of each other's takeover.
            for (let k = 0; k < ((round >> i) ^ (round * 7 + i)) % 6; k++) await stat(dir);
            await store.withLock(critical(`${round}.${i}`));
          }),
        );
      }
      expect(most).toBe(1);
      expect(events).toHaveLength(50 * n * 2);
      for (let i = 0; i < events.length; i += 2) expect(events[i + 1]).toBe(events[i]?.replace('enter', 'exit'));
      expect(warnings).toEqual([]);
      // No lock, takeover mutex or side file left behind.
      expect(readdirSync(dir)).toEqual([]);
    },
  );

  it("a release after a takeover leaves the new owner's lock in place, and warns", async () => {
    const { file } = newStore();
    const lock = `${file}.lock`;
    const aWarnings: TokenStoreWarning[] = [];
    const bWarnings: TokenStoreWarning[] = [];
    const a = new FileTokenStore(file, { ...CONTENDED, onWarning: (w) => aWarnings.push(w) });
    const b = new FileTokenStore(file, { ...CONTENDED, onWarning: (w) => bWarnings.push(w) });
    let aLock = '';
    let bLock = '';
    let bEntered!: () => void;
    const entered = new Promise<void>((r) => (bEntered = r));
    let bMayLeave!: () => void;
    const leave = new Promise<void>((r) => (bMayLeave = r));
    let bDone: Promise<void> | undefined;
    await a.withLock(async () => {
      aLock = readFileSync(lock, 'utf8');
      // a stalls: its lock looks abandoned (an hour old) to b, which takes it over.
      const past = new Date(Date.now() - 3_600_000);
      utimesSync(lock, past, past);
      bDone = b.withLock(async () => {
        bLock = readFileSync(lock, 'utf8');
        bEntered();
        await leave;
      });
      await entered;
    });
    expect(bLock).not.toBe(aLock);
    // a's release found b's lock, not its own, and left it.
    expect(readFileSync(lock, 'utf8')).toBe(bLock);
    expect(aWarnings).toEqual([
      {
        event: 'token_store_lock_lost',
        path: lock,
        heldMs: expect.any(Number),
        message: expect.stringMatching(
          new RegExp(
            `^token store lock ${lock.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} was taken over by another process while this one held it for \\d+ ms .*the other process's lock was left in place`,
          ),
        ),
      },
    ]);
    bMayLeave();
    await bDone;
    expect(existsSync(lock)).toBe(false);
    expect(bWarnings).toEqual([]);
  });

  it('each acquisition writes its own random owner token into the lock', async () => {
    const { store, file } = newStore();
    const seen: string[] = [];
    for (let i = 0; i < 2; i++) await store.withLock(async () => void seen.push(readFileSync(`${file}.lock`, 'utf8')));
    for (const content of seen) expect(content).toMatch(new RegExp(`^${process.pid} \\S+Z [0-9a-f]{32}\n$`));
    expect(seen[0]).not.toBe(seen[1]);
  });

  it("a holder keeps its lock's mtime fresh, so a long hold does not look abandoned", async () => {
    const { store, file } = newStore({ staleLockMs: 300, lockTimeoutMs: 15_000 });
    const lock = `${file}.lock`;
    await store.withLock(async () => {
      const past = new Date(Date.now() - 3_600_000);
      utimesSync(lock, past, past);
      await expect
        .poll(() => lstatSync(lock).mtimeMs, { timeout: 15_000, interval: 20 })
        .toBeGreaterThan(Date.now() - 60_000);
    });
  });

  it('a takeover mutex left by a process that died taking a lock over turns stale too', async () => {
    const { store, dir, file } = newStore(CONTENDED);
    plantStaleLock(`${file}.lock`);
    plantStaleLock(`${file}.lock.takeover`);
    expect(await store.withLock(async () => 'ran')).toBe('ran');
    expect(readdirSync(dir)).toEqual([]);
  });

  it('while another process is taking the stale lock over (a fresh mutex), it is not taken over twice', async () => {
    const { store, file } = newStore({ staleLockMs: 600_000, lockTimeoutMs: 100 });
    plantStaleLock(`${file}.lock`);
    writeFileSync(`${file}.lock.takeover`, '999999 taking over\n');
    const err = await store.withLock(async () => 'ran').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TokenStoreError);
    expect(readFileSync(`${file}.lock`, 'utf8')).toBe('999999 died holding it\n');
    expect(readFileSync(`${file}.lock.takeover`, 'utf8')).toBe('999999 taking over\n');
  });

  it('a directory at the lock path is a clear error at once', async () => {
    const { store, file } = newStore(CONTENDED);
    mkdirSync(`${file}.lock`);
    const err = await store.withLock(async () => 'ran').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TokenStoreError);
    expect((err as Error).message).toBe(`token store lock ${file}.lock is a directory; remove it by hand`);
  });

  // OS processes, each its own event loop and file descriptors: an O_EXCL marker file is
  // created on entering and removed on leaving, so entering while the other is inside fails.
  it.runIf(posix)(
    'three processes taking one lock 150 times each, each planting a stale lock before each round: never two inside at once',
    async () => {
      const { dir, file } = newStore();
      const code = tempDir();
      compileForChild('tokens/token-store.ts', code);
      writeFileSync(
        path.join(code, 'contend.js'),
        `import { closeSync, openSync, unlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { FileTokenStore } from './tokens/token-store.js';
const [file, rounds] = process.argv.slice(2);
const warnings = [];
const store = new FileTokenStore(file, { staleLockMs: 600000, lockTimeoutMs: 120000, onWarning: (w) => warnings.push(w.event) });
const tick = () => new Promise((r) => setImmediate(r));
let overlaps = 0;
let planted = 0;
// A planted lock is fresh until aged: one that vanished first was removed by someone not its owner.
let vanished = 0;
process.stdout.write('ready\\n');
await new Promise((r) => process.stdin.once('data', r));
for (let i = 0; i < Number(rounds); i++) {
  // A holder that died: created only where no lock is, then aged an hour.
  {
    try {
      writeFileSync(file + '.lock', '999999 died holding it\\n', { flag: 'wx' });
      planted += 1;
      const past = new Date(Date.now() - 3600000);
      utimesSync(file + '.lock', past, past);
    } catch (err) {
      if (err.code === 'ENOENT') vanished += 1;
      else if (err.code !== 'EEXIST') throw err;
    }
  }
  await store.withLock(async () => {
    let fd;
    try {
      fd = openSync(file + '.inside', 'wx');
    } catch (err) {
      if (err.code !== 'EEXIST') throw err;
      overlaps += 1;
    }
    await tick();
    await tick();
    if (fd !== undefined) {
      closeSync(fd);
      unlinkSync(file + '.inside');
    }
  });
}
process.stdout.write(JSON.stringify({ overlaps, planted, vanished, warnings }) + '\\n');
`,
      );
      const children = [0, 1, 2].map(() => {
        const child = spawn(process.execPath, [path.join(code, 'contend.js'), file, '150'], {
          stdio: ['pipe', 'pipe', 'pipe'],
        });
        let out = '';
        let err = '';
        child.stdout.on('data', (c: Buffer) => (out += c.toString()));
        child.stderr.on('data', (c: Buffer) => (err += c.toString()));
        const ready = new Promise<void>((resolve, reject) => {
          child.stdout.on('data', () => out.startsWith('ready\n') && resolve());
          child.once('exit', () => reject(new Error(`child exited before it was ready: ${err}`)));
        });
        const done = new Promise<{ code: number | null; out: string; err: string }>((resolve) =>
          child.once('exit', (code) => resolve({ code, out, err })),
        );
        return { child, ready, done };
      });
      // All go at once, so their rounds interleave.
      await Promise.all(children.map((c) => c.ready));
      for (const c of children) c.child.stdin.end('go\n');
      const results = await Promise.all(children.map((c) => c.done));
      let planted = 0;
      for (const r of results) {
        expect(r.code, r.err).toBe(0);
        const result = JSON.parse(r.out.split('\n').at(-2) ?? '') as {
          overlaps: number;
          planted: number;
          vanished: number;
          warnings: string[];
        };
        expect(result.overlaps).toBe(0);
        expect(result.vanished).toBe(0);
        expect(result.warnings).toEqual([]);
        planted += result.planted;
      }
      // Stale locks were there to be taken over.
      expect(planted).toBeGreaterThan(0);
      expect(readdirSync(dir)).toEqual([]);
    },
    60_000,
  );
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
    const { outputText } = ts.transpileModule(source, {
      compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
    });
    mkdirSync(path.join(outDir, path.dirname(name)), { recursive: true });
    writeFileSync(path.join(outDir, name.replace(/\.ts$/, '.js')), outputText);
    // Relative imports, resolved from this module's folder (src/ is laid out in folders).
    for (const m of source.matchAll(/from '(\.{1,2}\/[\w/-]+)\.js'/g))
      todo.push(path.posix.join(path.posix.dirname(name), `${m[1]}.ts`));
  }
  writeFileSync(path.join(outDir, 'package.json'), '{"type":"module"}\n');
}

describe('a failed save', () => {
  // No tmpfs can be filled here, so the write runs in a child process under a file-size
  // limit (RLIMIT_FSIZE, `ulimit -f`): its write fails with EFBIG after the temp file exists,
  // through the same code path a full disk (ENOSPC) takes.
  it.runIf(posix)(
    'a write that fails after the temp file exists (EFBIG under `ulimit -f`) leaves no temp file and the old grant intact',
    async () => {
      const { store, dir, file } = newStore();
      await store.save(grant());
      const before = readFileSync(file, 'utf8');
      const code = tempDir();
      compileForChild('tokens/token-store.ts', code);
      writeFileSync(
        path.join(code, 'child.js'),
        `import { FileTokenStore } from './tokens/token-store.js';
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
      const child = spawnSync(
        '/bin/sh',
        ['-c', 'ulimit -f 64 && exec "$0" "$@"', process.execPath, path.join(code, 'child.js'), file],
        { encoding: 'utf8' },
      );
      expect(child.status, child.stderr).toBe(0);
      const result = JSON.parse(child.stdout) as { name: string; message: string };
      expect(result.name).toBe('TokenStoreError');
      expect(result.message).toBe(
        `token store ${file} cannot be written (EFBIG); check free space and permissions in ${dir}`,
      );
      expect(result.message).not.toContain(REFRESH);
      expect(tmpFiles(dir)).toEqual([]);
      expect(readFileSync(file, 'utf8')).toBe(before);
    },
  );

  it('a rename that fails (the store path is a directory) leaves no temp file', async () => {
    const { store, dir, file } = newStore();
    mkdirSync(file);
    writeFileSync(path.join(file, 'occupant'), 'x');
    const err = await store.save(grant()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TokenStoreError);
    expect((err as Error).message).toMatch(
      new RegExp(
        `^token store ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} cannot be written \\((EISDIR|ENOTEMPTY|EEXIST|EPERM)\\)`,
      ),
    );
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
  it.each(['save', 'withLock'] as const)(
    'a store directory of ours with mode 0755 is tightened to 0700 on the first %s, with a warning',
    async (first) => {
      const warnings: TokenStoreWarning[] = [];
      const { store, dir } = newStore({ onWarning: (w) => warnings.push(w) });
      chmodSync(dir, 0o755);
      if (first === 'save') await store.save(grant());
      else await store.withLock(async () => undefined);
      expect(mode(dir)).toBe(0o700);
      expect(warnings).toEqual([
        {
          event: 'token_store_permissions',
          path: dir,
          mode: '0755',
          action: 'tightened',
          message: `token store directory ${dir} has mode 0755: other users can open it; changed to 0700`,
        },
      ]);
      // Once per store, not on every use.
      await store.withLock(() => store.save(grant()));
      expect(warnings).toHaveLength(1);
    },
  );

  it('a loose directory that holds other files is reported, never locked down under them', async () => {
    const warnings: TokenStoreWarning[] = [];
    const { store, dir } = newStore({ onWarning: (w) => warnings.push(w) });
    writeFileSync(path.join(dir, 'someone-elses.txt'), 'x');
    chmodSync(dir, 0o755);
    await store.save(grant());
    expect(mode(dir)).toBe(0o755);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatchObject({
      event: 'token_store_permissions',
      path: dir,
      mode: '0755',
      action: 'left_as_is',
    });
    expect(warnings[0]?.message).toBe(
      `token store directory ${dir} has mode 0755: other users can open it; it holds other files too, so it is left as is: run \`chmod 700 ${dir}\`, or point TOKEN_STORE into a directory of its own`,
    );
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
      expect.objectContaining({
        level: 'warn',
        path: path.dirname(file),
        mode: '0755',
        action: 'tightened',
        msg: expect.stringContaining('changed to 0700'),
      }),
    ]);
  });

  it('`keap-proxy auth` prints it', async () => {
    sim = await KeapSimulator.start();
    const dir = tempDir();
    const redirect = 'https://app.example.com/keap/callback';
    const config = loadConfig({
      env: {
        ...oauthEnv(sim, dir),
        KEAP_REFRESH_TOKEN: '',
        KEAP_REDIRECT_URI: redirect,
        TOKEN_STORE: looseStorePath(),
      },
      cwd: dir,
    });
    const out = new Out();
    await runAuth({ config, out, code: sim.issueAuthorizationCode(redirect) });
    expect(out.text).toContain(
      `Warning: token store directory ${path.dirname(storeFile(config))} has mode 0755: other users can open it; changed to 0700\n`,
    );
  });
});
