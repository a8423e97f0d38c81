// Where log lines go: stdout (or a file), in batches. A busy proxy logs a line per request;
// one write per line would be one thread-pool round trip per request, so lines wait in an
// array and leave together once enough are waiting (32 KiB), or every 250 ms on a quiet proxy.
//
// Ours rather than sonic-boom (pino's destination, `pino.destination()`): sonic-boom appends
// each line to one growing string and takes its byte length on every write, which flattens
// the string each time (quadratic in the batch), then copies the whole batch into a Buffer
// after each write. An array joined once per batch costs a fraction of that. Measured head
// to head in one run (bench/log-writer.ts: `npm run build && BENCH_LOG_LINES=200000
// BENCH_LOG_ROUNDS=20 node --expose-gc dist/bench/log-writer.js`, and again with
// BENCH_LOG_DEST=file), 200 000 lines per measurement through pino 10.4.0, Node 20.20,
// 2-core VM, 30 Nov 2026; lines/s, median of 20 interleaved rounds, and each pino.destination
// as the median of its per-round ratios to LogWriter:
//
//                          LogWriter   minLength 4096   minLength 16000   sync (default)
//   /dev/null, request       476 k          0.67x             0.69x            0.64x
//   /dev/null, info()        543 k          0.55x             0.55x            0.56x
//   file,      request       477 k          0.69x             0.63x            0.64x
//   file,      info()        603 k          0.62x             0.61x            0.55x
//
// ("request": the per-request line through RequestLog, which LogWriter formats with its
// batch; "info()": a line made by pino's own serializer.) Single rounds spread widely on the
// VM (LogWriter's request figure from 264 k to 598 k between its quartiles), but every median
// ratio is 0.55x to 0.69x, far beyond a 5% noise bar: LogWriter stays. Neither this module
// nor log.ts reads pino's private state (pino.symbols); what they count on pino for (one
// write() per whole line, logger.flush(cb) calling the destination's flush(cb), bindings())
// is pinned by test/log-writer-pino.test.ts, which fails when a pino release changes it.
//
// A line may also be handed over unformatted (writeDeferred): an item and the function that
// formats it, called when its batch is written. The per-request line is made that way: it
// keeps its place among the other lines, and formatting a batch of them together, in a tight
// loop, measured about 2% cheaper than formatting each on its request's path.
import fs from 'node:fs';

export interface LogWriterOptions {
  /** A file descriptor (1: stdout) or a file path, opened for appending. */
  dest: number | string;
  /** Characters waiting before a write starts. */
  minLength?: number;
  /** The longest a waiting line waits, in ms. */
  flushIntervalMs?: number;
  /**
   * Characters that may wait while the destination does not take them (a stalled pipe);
   * lines beyond are dropped and counted, so a stuck log reader cannot fill the heap.
   */
  maxWaiting?: number;
}

/** What a deferred item is taken to weigh until it is formatted (a request line is about this long). */
const DEFERRED_LENGTH = 256;

/** How long to wait before trying a non-blocking pipe again after EAGAIN. */
const EAGAIN_RETRY_MS = 20;

export class LogWriter {
  /** Lines dropped because the destination failed or fell too far behind. */
  dropped = 0;
  private readonly fd: number;
  private readonly ownsFd: boolean;
  private readonly minLength: number;
  private readonly maxWaiting: number;
  /** Lines, or items to format (where `formats` has the function), in order. */
  private lines: unknown[] = [];
  private formats: (((item: never) => string) | undefined)[] = [];
  /** Characters in `lines` (deferred items count as DEFERRED_LENGTH). */
  private waiting = 0;
  private writing = false;
  private closed = false;
  /** Lines taken so far, and lines whose write has finished (or failed). */
  private accepted = 0;
  private done = 0;
  /** Lines in the batch being written. */
  private batch = 0;
  /** flush() callbacks, each waiting for the lines taken before it. */
  private flushed: { upTo: number; cb: () => void }[] = [];
  private readonly interval: NodeJS.Timeout;

  constructor(options: LogWriterOptions) {
    this.ownsFd = typeof options.dest === 'string';
    this.fd = typeof options.dest === 'string' ? fs.openSync(options.dest, 'a', 0o600) : options.dest;
    this.minLength = options.minLength ?? 8192;
    this.maxWaiting = options.maxWaiting ?? 16 * 1024 * 1024;
    // One timer for the writer's life, not one per batch; it never keeps the process alive.
    this.interval = setInterval(flushWaiting, options.flushIntervalMs ?? 250, this);
    this.interval.unref();
  }

  /** Takes one line (pino hands over whole lines); false when it was dropped. */
  write(line: string): boolean {
    return this.take(line, undefined, line.length);
  }

  /** Takes a line to be made by `format(item)` when its batch is written; false when it was dropped. */
  writeDeferred<T>(format: (item: T) => string, item: T): boolean {
    return this.take(item, format, DEFERRED_LENGTH);
  }

  private take(item: unknown, format: ((item: never) => string) | undefined, length: number): boolean {
    if (this.closed || this.waiting + length > this.maxWaiting) {
      this.dropped += 1;
      return false;
    }
    this.lines.push(item);
    this.formats.push(format);
    this.waiting += length;
    this.accepted += 1;
    if (!this.writing && this.waiting >= this.minLength) this.writeWaiting();
    return true;
  }

  /** Starts writing what waits now; `cb` runs once every line taken so far has been written. */
  flush(cb?: () => void): void {
    if (cb !== undefined) {
      if (this.done === this.accepted) {
        process.nextTick(cb);
        return;
      }
      this.flushed.push({ upTo: this.accepted, cb });
    }
    this.flushIfIdle();
  }

  /**
   * Writes what waits synchronously, for the last lines before the process exits. A batch
   * already on its way is left to the thread pool; its lines may land after these.
   */
  flushSync(): void {
    if (this.waiting === 0) return;
    this.done += this.lines.length;
    let data: Buffer | undefined = Buffer.from(this.takeWaiting());
    for (let tries = 0; data !== undefined && data.length > 0 && tries < 100; tries++) {
      try {
        data = data.subarray(fs.writeSync(this.fd, data));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') data = undefined;
      }
    }
  }

  /** Writes everything that waits, then stops; a file it opened is closed. */
  close(): Promise<void> {
    return new Promise((resolve) => {
      this.flush(() => {
        this.closed = true;
        clearInterval(this.interval);
        if (this.ownsFd) fs.close(this.fd, () => resolve());
        else resolve();
      });
    });
  }

  /** Starts a batch when lines wait and none is on its way (the interval's tick, and flush()). */
  flushIfIdle(): void {
    if (!this.writing && this.waiting > 0) this.writeWaiting();
  }

  private takeWaiting(): string {
    const lines = this.lines;
    const formats = this.formats;
    for (let i = 0; i < lines.length; i++) {
      const format = formats[i] as ((item: unknown) => string) | undefined;
      if (format === undefined) continue;
      try {
        lines[i] = format(lines[i]);
      } catch {
        // A formatter's bug costs its line, never the process.
        lines[i] = '';
        this.dropped += 1;
      }
    }
    const data = lines.length === 1 ? (lines[0] as string) : lines.join('');
    this.lines = [];
    this.formats = [];
    this.waiting = 0;
    return data;
  }

  private writeWaiting(): void {
    this.writing = true;
    this.batch = this.lines.length;
    this.send(this.takeWaiting());
  }

  /** Writes `data` whole: a string in one go (nearly always), the rest of a short write as bytes. */
  private send(data: string | Buffer): void {
    const done = (err: NodeJS.ErrnoException | null, written: number): void => {
      if (err !== null) {
        if (err.code === 'EAGAIN') {
          setTimeout(() => this.send(data), EAGAIN_RETRY_MS).unref();
          return;
        }
        // EPIPE, EBADF, ENOSPC, …: this batch is lost (never the process); later ones are tried again.
        this.dropped += this.batch;
        this.settle();
        return;
      }
      const bytes = typeof data === 'string' ? Buffer.byteLength(data) : data.length;
      if (written < bytes) {
        this.send((typeof data === 'string' ? Buffer.from(data) : data).subarray(written));
        return;
      }
      this.settle();
    };
    if (typeof data === 'string') fs.write(this.fd, data, null, 'utf8', done);
    else fs.write(this.fd, data, 0, data.length, null, done);
  }

  /** One batch finished: answer the flushes it completes, and start the next batch if one is due. */
  private settle(): void {
    this.writing = false;
    this.done += this.batch;
    this.batch = 0;
    while (this.flushed.length > 0 && (this.flushed[0] as { upTo: number }).upTo <= this.done)
      (this.flushed.shift() as { cb: () => void }).cb();
    if (this.waiting >= this.minLength || (this.waiting > 0 && this.flushed.length > 0)) this.writeWaiting();
  }
}

function flushWaiting(writer: LogWriter): void {
  writer.flushIfIdle();
}
