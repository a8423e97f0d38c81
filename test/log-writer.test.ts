import { describe, it, expect, afterEach } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { LogWriter } from '../src/observability/log-writer.js';
import { createLogger } from '../src/observability/log.js';
import { loadConfig } from '../src/config/config.js';
import { startProxy } from '../src/http/server.js';
import { KeapSimulator } from './simulator/keap-simulator.js';
import { keyEnv, metric, send, tempDir } from './harness.js';

const fds: number[] = [];
afterEach(() => {
  for (const fd of fds.splice(0)) fs.closeSync(fd);
});

function tempFile(): string {
  return path.join(tempDir(), 'out.log');
}

/** A FIFO with both ends open non-blocking, as a container runtime's stdout pipe can be. */
function nonBlockingPipe(): { read: number; write: number } {
  const fifo = tempFile() + '.fifo';
  expect(spawnSync('mkfifo', [fifo]).status).toBe(0);
  const read = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  const write = fs.openSync(fifo, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
  fds.push(read, write);
  return { read, write };
}

/** The write end of a pipe whose reader is gone: every write fails with EPIPE. */
function pipeWithoutReader(): number {
  const pipe = nonBlockingPipe();
  fs.closeSync(pipe.read);
  fds.splice(fds.indexOf(pipe.read), 1);
  return pipe.write;
}

/** Reads the pipe until what came satisfies `done` (a hang guard gives up after some 10 s); what came, as text. */
async function drain(fd: number, done: (got: Buffer) => boolean): Promise<string> {
  const chunks: Buffer[] = [];
  const buf = Buffer.alloc(65536);
  for (let idle = 0; idle < 2000;) {
    const got = Buffer.concat(chunks);
    if (done(got)) return got.toString('utf8');
    try {
      const n = fs.readSync(fd, buf);
      chunks.push(Buffer.from(buf.subarray(0, n)));
      idle = 0;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') throw err;
      idle += 1;
      await sleep(5);
    }
  }
  throw new Error('timed out draining the pipe');
}

const line = (i: number, pad = ''): string => `{"n":${i},"text":"zażółć 😀 ${pad}"}\n`;

describe('LogWriter', () => {
  it('holds lines until a batch is due, then writes them in order', async () => {
    const file = tempFile();
    const w = new LogWriter({ dest: file, minLength: 8192, flushIntervalMs: 60_000 });
    for (let i = 0; i < 3; i++) expect(w.write(line(i))).toBe(true);
    await sleep(30);
    expect(fs.readFileSync(file, 'utf8')).toBe('');
    await new Promise<void>((done) => w.flush(done));
    expect(fs.readFileSync(file, 'utf8')).toBe(line(0) + line(1) + line(2));
    await w.close();
  });

  it('writes on its own once minLength characters wait, and within flushIntervalMs on a quiet log', async () => {
    const byLength = tempFile();
    const a = new LogWriter({ dest: byLength, minLength: 100, flushIntervalMs: 60_000 });
    const short = line(0);
    a.write(short);
    await sleep(30);
    expect(fs.readFileSync(byLength, 'utf8'), 'under minLength: waits').toBe('');
    const long = line(1, 'x'.repeat(100));
    a.write(long);
    await expect.poll(() => fs.readFileSync(byLength, 'utf8'), { timeout: 2000 }).toBe(short + long);
    await a.close();

    const byTime = tempFile();
    const b = new LogWriter({ dest: byTime, minLength: 8192, flushIntervalMs: 20 });
    b.write(line(7));
    await expect.poll(() => fs.readFileSync(byTime, 'utf8'), { timeout: 2000 }).toBe(line(7));
    await b.close();
  });

  it('loses and reorders nothing over many batches with multi-byte text, and close() writes the rest', async () => {
    const file = tempFile();
    const w = new LogWriter({ dest: file });
    const all: string[] = [];
    for (let i = 0; i < 20_000; i++) {
      const l = line(i, 'é'.repeat(i % 50));
      all.push(l);
      w.write(l);
      if (i % 1000 === 0) await sleep(1);
    }
    await w.close();
    expect(fs.readFileSync(file, 'utf8')).toBe(all.join(''));
    expect(w.dropped).toBe(0);
    expect(w.write(line(0)), 'a closed writer takes nothing').toBe(false);
  });

  it('finishes short writes and waits out EAGAIN on a non-blocking pipe, in order', async () => {
    const pipe = nonBlockingPipe();
    const w = new LogWriter({ dest: pipe.write, minLength: 1000, flushIntervalMs: 10 });
    const all: string[] = [];
    // Far more than a pipe holds (64 KiB), written before anyone reads.
    for (let i = 0; i < 6000; i++) {
      all.push(line(i, 'y'.repeat(30)));
      w.write(all[i] as string);
    }
    await sleep(50);
    const expected = all.join('');
    const bytes = Buffer.byteLength(expected);
    const text = await drain(pipe.read, (got) => got.length >= bytes);
    expect(text).toBe(expected);
    expect(w.dropped).toBe(0);
    await w.close();
  });

  it('drops and counts lines beyond maxWaiting while the reader is stuck, and keeps order for the rest', async () => {
    const pipe = nonBlockingPipe();
    const w = new LogWriter({ dest: pipe.write, minLength: 1000, flushIntervalMs: 10, maxWaiting: 20_000 });
    let refused = 0;
    const total = 10_000;
    for (let i = 0; i < total; i++) if (!w.write(line(i))) refused++;
    expect(refused).toBeGreaterThan(0);
    expect(w.dropped).toBe(refused);
    // Until every line is accounted for: written (whole) or counted as dropped.
    const lines = (got: Buffer): number => got.toString('utf8').split('\n').length - 1;
    const got = await drain(pipe.read, (got) => lines(got) + w.dropped >= total);
    const numbers = got
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => (JSON.parse(l) as { n: number }).n);
    expect(numbers.length + w.dropped).toBe(total);
    for (let i = 1; i < numbers.length; i++) expect(numbers[i]).toBeGreaterThan(numbers[i - 1] as number);
    await w.close();
  });

  it('survives a destination that fails (reader gone: EPIPE): the batch is counted as dropped and flush still answers', async () => {
    const w = new LogWriter({ dest: pipeWithoutReader(), minLength: 8192, flushIntervalMs: 60_000 });
    for (let i = 0; i < 5; i++) w.write(line(i));
    await new Promise<void>((done) => w.flush(done));
    expect(w.dropped).toBe(5);
    w.write(line(5));
    await new Promise<void>((done) => w.flush(done));
    expect(w.dropped).toBe(6);
    await w.close();
  });

  it('writes deferred lines in their place, formatted at write time; a formatter that throws costs only its line', async () => {
    const file = tempFile();
    const w = new LogWriter({ dest: file, minLength: 8192, flushIntervalMs: 60_000 });
    const seen: number[] = [];
    const format = (n: number): string => {
      seen.push(n);
      if (n === 3) throw new Error('formatter bug');
      return line(n);
    };
    w.write(line(0));
    for (const n of [1, 2, 3, 4]) w.writeDeferred(format, n);
    w.write(line(5));
    expect(seen, 'nothing is formatted before its batch is written').toEqual([]);
    await w.close();
    expect(fs.readFileSync(file, 'utf8')).toBe(line(0) + line(1) + line(2) + line(4) + line(5));
    expect(w.dropped).toBe(1);
  });

  it('flushSync writes what waits before returning, for the last lines at exit', async () => {
    const file = tempFile();
    const w = new LogWriter({ dest: file, minLength: 8192, flushIntervalMs: 60_000 });
    w.write(line(1));
    w.write(line(2));
    w.flushSync();
    expect(fs.readFileSync(file, 'utf8')).toBe(line(1) + line(2));
    await w.close();
  });

  it('a proxy whose log reader is gone keeps serving, and /metrics counts the lines it could not write', async () => {
    const writer = new LogWriter({ dest: pipeWithoutReader(), minLength: 1, flushIntervalMs: 10 });
    const sim = await KeapSimulator.start();
    const proxy = await startProxy(loadConfig({ env: { ...keyEnv(sim), LOG_LEVEL: 'info' }, cwd: tempDir() }), {
      logger: createLogger('info', writer),
    });
    try {
      for (let i = 0; i < 3; i++) expect((await send(proxy.url, 'GET', '/crm/rest/v1/contacts')).status).toBe(200);
      await new Promise<void>((done) => writer.flush(done));
      const dropped = await metric(proxy.url, 'keap_proxy_log_lines_dropped_total');
      expect(dropped).toBeGreaterThanOrEqual(3);
      expect(dropped).toBe(writer.dropped);
    } finally {
      await proxy.close();
      await sim.close();
    }
  });
});
