// The response side's shape: handlers composed around one send, innermost first, each replay
// passing through the handlers inside the one that asked for it; and the one edge where the
// domain errors of pacing, tokens and the upstream become HTTP answers.
import { describe, it, expect } from 'vitest';
import type { IncomingMessage } from 'node:http';
import type { Exchange } from '../src/pipeline/exchange.js';
import { composeResponseSide, type Dispatch, type ResponseHandler } from '../src/upstream/response-handlers.js';
import { answerFor, outcomeOf } from '../src/http/error-answers.js';
import { DailyQuotaSpent, DeadlineExceeded, QueueFull, WaitAbandoned } from '../src/pacing/pacing-errors.js';
import { NoCredential } from '../src/tokens/credentials.js';
import { UnusableResponse, UpstreamError } from '../src/upstream/forwarder.js';
import { RateLimitedByKeap } from '../src/upstream/back-off-on-rate-limit.js';
import { HttpError } from '../src/http/http-error.js';

/** Stand-ins for Keap's answers: the composition reads nothing of them but what the handlers below read. */
const answer = (statusCode: number, n: number): IncomingMessage => ({ statusCode, n }) as unknown as IncomingMessage;
const nOf = (res: IncomingMessage): number => (res as unknown as { n: number }).n;

/** A send that answers with the given statuses in turn, recording each send. */
function scriptedSend(statuses: number[], log: string[]): Dispatch {
  let sent = 0;
  return () => {
    const status = statuses[sent] ?? 200;
    sent += 1;
    log.push(`send#${sent}:${status}`);
    return Promise.resolve(answer(status, sent));
  };
}

/** A handler that records what it saw and, on `status`, replays once through `resend`. */
function replaysOn(name: string, status: number, log: string[]): ResponseHandler {
  const replayed = new WeakSet<object>();
  return (ex, res, resend) => {
    log.push(`${name} saw #${nOf(res)}`);
    if (res.statusCode !== status || replayed.has(ex)) return res;
    replayed.add(ex);
    return resend(ex);
  };
}

describe('composeResponseSide', () => {
  it('runs handlers innermost first and relays the last answer, once', async () => {
    const log: string[] = [];
    const relayed: number[] = [];
    const stage = composeResponseSide(
      scriptedSend([200], log),
      [replaysOn('inner', 401, log), replaysOn('outer', 429, log)],
      (_ex, res) => relayed.push(nOf(res)),
    );
    await stage({} as Exchange);
    expect(log).toEqual(['send#1:200', 'inner saw #1', 'outer saw #1']);
    expect(relayed).toEqual([1]);
  });

  it("passes a replay's answer through the handlers inside the one that asked for it, then on outwards", async () => {
    const log: string[] = [];
    const relayed: number[] = [];
    const observe: ResponseHandler = (_ex, res) => {
      log.push(`observe saw #${nOf(res)}`);
      return res;
    };
    const stage = composeResponseSide(
      // 429 first: the outer handler replays; the replay meets a 401, which the middle one replays.
      scriptedSend([429, 401, 200], log),
      [observe, replaysOn('middle', 401, log), replaysOn('outer', 429, log)],
      (_ex, res) => relayed.push(nOf(res)),
    );
    await stage({} as Exchange);
    expect(log).toEqual([
      'send#1:429',
      'observe saw #1',
      'middle saw #1',
      'outer saw #1',
      'send#2:401',
      'observe saw #2',
      'middle saw #2',
      'send#3:200',
      'observe saw #3',
    ]);
    expect(relayed).toEqual([3]);
  });

  it("a handler's error ends the exchange: nothing is relayed", async () => {
    const log: string[] = [];
    const relayed: number[] = [];
    const refusing: ResponseHandler = (_ex, res) => {
      if (res.statusCode === 429) throw new RateLimitedByKeap('attempts', 3);
      return res;
    };
    const stage = composeResponseSide(scriptedSend([429], log), [refusing], (_ex, res) => relayed.push(nOf(res)));
    await expect(stage({} as Exchange)).rejects.toBeInstanceOf(RateLimitedByKeap);
    expect(relayed).toEqual([]);
  });
});

describe('composeResponseSide: a handler that answers the client itself', () => {
  it("returns 'done': nothing is relayed, and no handler outside it sees the response", async () => {
    const log: string[] = [];
    const relayed: number[] = [];
    const answering: ResponseHandler = (_ex, res) => {
      log.push(`answering saw #${nOf(res)}`);
      return res.statusCode === 410 ? Promise.resolve('done' as const) : res;
    };
    const outer: ResponseHandler = (_ex, res) => {
      log.push(`outer saw #${nOf(res)}`);
      return res;
    };
    const stage = composeResponseSide(
      scriptedSend([410, 200], log),
      [replaysOn('inner', 401, log), answering, outer],
      (_ex, res) => relayed.push(nOf(res)),
    );
    await stage({} as Exchange);
    expect(log).toEqual(['send#1:410', 'inner saw #1', 'answering saw #1']);
    expect(relayed).toEqual([]);
    await stage({} as Exchange);
    expect(log.slice(3)).toEqual(['send#2:200', 'inner saw #2', 'answering saw #2', 'outer saw #2']);
    expect(relayed).toEqual([2]);
  });

  it("inside a replay, 'done' is a composition mistake: the exchange fails, nothing is relayed", async () => {
    const log: string[] = [];
    const relayed: number[] = [];
    const answering: ResponseHandler = (_ex, res) => (res.statusCode === 410 ? 'done' : res);
    const stage = composeResponseSide(
      scriptedSend([429, 410], log),
      [answering, replaysOn('outer', 429, log)],
      (_ex, res) => relayed.push(nOf(res)),
    );
    await expect(stage({} as Exchange)).rejects.toThrow(/answered inside a replay/);
    expect(relayed).toEqual([]);
  });
});

describe('the error edge (http/error-answers.ts)', () => {
  const limits = { maxBodyBytes: 1234 };
  const cases: [string, unknown, number, string, string | undefined][] = [
    ['a full queue', new QueueFull(10, 3), 503, 'queue_full', '3'],
    ['a spent daily quota', new DailyQuotaSpent(Date.UTC(2026, 11, 1), 60), 429, 'daily_quota_exhausted', '60'],
    ['a deadline the queue cannot meet', new DeadlineExceeded(2), 429, 'rate_limited', '2'],
    ['a wait the client gave up', new WaitAbandoned(), 499, 'client_closed', undefined],
    [
      'no token',
      new NoCredential('token_unavailable', 'No valid Keap access token right now.', 5),
      503,
      'token_unavailable',
      '5',
    ],
    [
      'a grant that needs authorization',
      new NoCredential('reauthorization_required', 'run keap-proxy auth', 60),
      503,
      'reauthorization_required',
      '60',
    ],
    ['Keap kept saying 429', new RateLimitedByKeap('attempts', 4), 429, 'rate_limited', '4'],
    ['an upstream timeout', new UpstreamError('timeout'), 504, 'upstream_timeout', undefined],
    ['an unreachable upstream', new UpstreamError('unreachable'), 502, 'upstream_unreachable', undefined],
    ['a body past MAX_BODY_BYTES', new UpstreamError('body_too_large'), 413, 'body_too_large', undefined],
    ['a response Node cannot write', new UnusableResponse('bad header'), 502, 'upstream_bad_response', undefined],
  ];
  for (const [what, err, status, code, retryAfter] of cases) {
    it(`${what}: ${status} ${code}`, () => {
      const answer = answerFor(err, limits);
      expect(answer).toBeInstanceOf(HttpError);
      expect(answer?.status).toBe(status);
      expect(answer?.code).toBe(code);
      expect(answer?.headers['retry-after']).toBe(retryAfter);
      expect(answer?.message.length).toBeGreaterThan(10);
    });
  }

  it('names MAX_BODY_BYTES and its value in the 413', () => {
    expect(answerFor(new UpstreamError('body_too_large'), limits)?.message).toContain('1234 bytes (MAX_BODY_BYTES)');
  });

  it('an HttpError passes as it is; anything else is not an answer (the pipeline logs it and answers 500)', () => {
    const own = new HttpError(400, 'x', 'y');
    expect(answerFor(own, limits)).toBe(own);
    expect(answerFor(new TypeError('bug'), limits)).toBeUndefined();
  });

  it('the request log learns why an upstream attempt ended', () => {
    expect(outcomeOf(new UpstreamError('timeout'))).toBe('timeout');
    expect(outcomeOf(new UnusableResponse('bad'))).toBe('unusable_response');
    expect(outcomeOf(new QueueFull(1, 1))).toBeUndefined();
  });
});
