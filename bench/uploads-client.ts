// The uploads scenario's client, forked as a child process by run.ts (which imports only its
// types), so it shares neither an event loop nor a heap with the server it measures.
//
// It starts `connections` POSTs at once, each on a connection of its own, each declaring its
// body with Content-Length. The body is one Buffer made once and written by every request
// (a socket keeps a reference, not a copy), so the client holds `bytes` however many
// connections there are.
//
// Protocol: the parent sends one UploadsRequest over IPC; the child answers 'done' (or
// 'failed') and exits.
import http from 'node:http';

export interface UploadsRequest {
  url: string;
  headers: Record<string, string>;
  connections: number;
  /** Body size of every upload. */
  bytes: number;
  /** Seconds an upload may take before it is abandoned and counted as a timeout. */
  timeoutSeconds: number;
}

/** What each upload came to. */
export interface UploadsSample {
  /** Answers by status code. */
  statusCodes: Record<string, number>;
  /** Answers by the `error` field of their JSON body (keap-proxy's refusals carry one), e.g. body_budget_exhausted. */
  errorCodes: Record<string, number>;
  /** Uploads that got no answer: connection errors by code (ECONNRESET, EPIPE, ...) and 'timeout'. */
  failures: Record<string, number>;
  /** Milliseconds from the start to the answer's end, by status code: fastest, median and slowest. */
  answerMs: Record<string, { min: number; p50: number; max: number }>;
  /** From the first upload's start to the last one's end. */
  durationMs: number;
}

export type UploadsMessage = { type: 'done'; sample: UploadsSample } | { type: 'failed'; error: string };

interface Outcome {
  status?: number;
  errorCode?: string;
  failure?: string;
  ms: number;
}

function upload(req: UploadsRequest, body: Buffer, startedAt: number): Promise<Outcome> {
  return new Promise((resolve) => {
    let settled = false;
    const finish = (o: Omit<Outcome, 'ms'>): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({ ...o, ms: performance.now() - startedAt });
    };
    const request = http.request(req.url, {
      method: 'POST',
      // A connection of its own for every upload: no pooling, no queueing in the client.
      agent: false,
      headers: { ...req.headers, 'content-type': 'application/octet-stream', 'content-length': String(body.length) },
    });
    const timer = setTimeout(() => {
      finish({ failure: 'timeout' });
      request.destroy();
    }, req.timeoutSeconds * 1000);
    request.on('response', (res) => {
      const parts: Buffer[] = [];
      res.on('data', (chunk: Buffer) => parts.push(chunk));
      res.on('end', () => {
        let errorCode: string | undefined;
        if (res.statusCode !== 200) {
          try {
            const parsed = JSON.parse(Buffer.concat(parts).toString('utf8')) as { error?: unknown };
            if (typeof parsed.error === 'string') errorCode = parsed.error;
          } catch {
            // Not JSON: the status code says all there is.
          }
        }
        finish({ status: res.statusCode ?? 0, ...(errorCode !== undefined ? { errorCode } : {}) });
      });
      // An answer cut short still is that answer: a refusal's connection may close under it.
      res.on('error', () => finish({ status: res.statusCode ?? 0 }));
    });
    // A refusal that closes the connection while the body is still going out can surface as a
    // write error after the answer came in; finish() keeps the answer. Before it, it is the outcome.
    request.on('error', (err: NodeJS.ErrnoException) => finish({ failure: err.code ?? err.message }));
    request.end(body);
  });
}

async function run(req: UploadsRequest): Promise<UploadsSample> {
  // Not zeros (a compressing link would make light of them), not random (that would be a second 8 MiB to make).
  const body = Buffer.alloc(req.bytes, 'keap-proxy bench upload ');
  const startedAt = performance.now();
  const outcomes = await Promise.all(Array.from({ length: req.connections }, () => upload(req, body, startedAt)));
  const durationMs = performance.now() - startedAt;
  const count = (into: Record<string, number>, key: string): void => {
    into[key] = (into[key] ?? 0) + 1;
  };
  const statusCodes: Record<string, number> = {};
  const errorCodes: Record<string, number> = {};
  const failures: Record<string, number> = {};
  const times: Record<string, number[]> = {};
  for (const o of outcomes) {
    if (o.status !== undefined) {
      count(statusCodes, String(o.status));
      (times[String(o.status)] ??= []).push(o.ms);
    }
    if (o.errorCode !== undefined) count(errorCodes, o.errorCode);
    if (o.failure !== undefined) count(failures, o.failure);
  }
  const answerMs: UploadsSample['answerMs'] = {};
  for (const [status, ms] of Object.entries(times)) {
    ms.sort((a, b) => a - b);
    answerMs[status] = {
      min: ms[0] as number,
      p50: ms[Math.floor((ms.length - 1) / 2)] as number,
      max: ms[ms.length - 1] as number,
    };
  }
  return { statusCodes, errorCodes, failures, answerMs, durationMs };
}

// Only act as the child when started with an IPC channel (fork), so importing this module
// for its types has no side effect.
if (process.send !== undefined) {
  process.once('message', (msg: UploadsRequest) => {
    void run(msg)
      .then((sample): UploadsMessage => ({ type: 'done', sample }))
      .catch((err: unknown): UploadsMessage => ({
        type: 'failed',
        error: err instanceof Error ? err.message : String(err),
      }))
      .then((reply) => process.send?.(reply, undefined, undefined, () => process.exit(0)));
  });
}
