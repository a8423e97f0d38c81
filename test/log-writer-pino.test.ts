// What LogWriter and RequestLog count on pino for, through pino's public surface only. These
// fail when a pino release changes one of them, before a proxy loses or garbles lines:
// - every log call reaches the destination as one write() of one whole line, before it returns
//   (LogWriter weighs lines by their length; RequestLog's lines keep their place among pino's);
// - logger.flush(cb) calls the destination's flush(cb) (the proxy's shutdown waits on it);
// - logger.bindings() holds the base fields that pino writes after "time" (RequestLog's
//   template writes them there; logs.test.ts checks the template's line against pino's own).
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { LogWriter } from '../src/observability/log-writer.js';
import { createLogger, logWriterOf, RequestLog } from '../src/observability/log.js';
import { LogCapture, tempDir } from './harness.js';

/** A LogWriter that also keeps every write() call it was given, to see how pino calls it. */
class RecordingWriter extends LogWriter {
  readonly calls: unknown[] = [];
  override write(line: string): boolean {
    this.calls.push(line);
    return super.write(line);
  }
}

function quietWriter(): { writer: RecordingWriter; file: string } {
  const file = path.join(tempDir(), 'out.log');
  // Nothing is written unless flushed: the batch is never full and the interval never comes.
  return { writer: new RecordingWriter({ dest: file, minLength: 64 * 1024 * 1024, flushIntervalMs: 3_600_000 }), file };
}

describe('what the log writer counts on pino for', () => {
  it('each log call is one write() of one whole line, a string, made before the call returns', async () => {
    const { writer, file } = quietWriter();
    const logger = createLogger('trace', writer);
    const calls: (() => void)[] = [
      () => logger.info('plain message'),
      () => logger.warn({ event: 'x', n: 1, nested: { a: [1, 2] } }, 'with fields'),
      () => logger.error({ err: new Error('boom\nsecond line') }, 'an error, its stack on many lines'),
      () => logger.debug({ text: 'line\nbreak "quoted" zażółć 😀' }, 'multi\nline message'),
      () => logger.info({ big: 'x'.repeat(200_000) }, 'longer than any batch'),
      () => logger.trace({ authorization: 'Bearer secret' }, 'redacted'),
    ];
    for (const [i, call] of calls.entries()) {
      call();
      expect(writer.calls, `after call ${i}`).toHaveLength(i + 1);
      const line = writer.calls[i];
      expect(typeof line).toBe('string');
      expect((line as string).endsWith('\n')).toBe(true);
      expect((line as string).slice(0, -1)).not.toContain('\n');
      expect(() => JSON.parse(line as string) as unknown).not.toThrow();
    }
    await writer.close();
    expect(readFileSync(file, 'utf8')).toBe(writer.calls.join(''));
  });

  it("logger.flush(cb) reaches the writer's flush: cb runs once every line is written", async () => {
    const { writer, file } = quietWriter();
    const logger = createLogger('info', writer);
    for (let i = 0; i < 3; i++) logger.info({ i }, 'waiting for a flush');
    expect(readFileSync(file, 'utf8')).toBe('');
    await new Promise<void>((done) => logger.flush(() => done()));
    expect(readFileSync(file, 'utf8')).toBe(writer.calls.join(''));
    expect(writer.calls).toHaveLength(3);
    await writer.close();
  });

  it('logger.bindings() gives the base fields, in the order pino writes them after "time"', () => {
    const capture = new LogCapture();
    const logger = createLogger('info', capture);
    expect(logger.bindings()).toEqual({ name: 'keap-proxy' });
    logger.info('shape');
    expect(capture.lines[0]).toMatch(/^\{"level":"info","time":\d+,"name":"keap-proxy","msg":"shape"\}$/);
  });

  it('RequestLog and logWriterOf know the destination of a logger made by createLogger, and refuse any other', () => {
    const { writer } = quietWriter();
    const logger = createLogger('info', writer);
    expect(logWriterOf(logger)).toBe(writer);
    expect(logWriterOf(createLogger('info', new LogCapture()))).toBeUndefined();
    const child = logger.child({ component: 'x' });
    expect(logWriterOf(child)).toBeUndefined();
    expect(() => new RequestLog(child)).toThrow(/not made by createLogger/);
    void writer.close();
  });
});
