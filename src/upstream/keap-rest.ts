// The REST calls the proxy makes itself to answer a translated XML-RPC call. Each goes the way
// every request goes: paced by the account's pacer (one XML-RPC call may cost several REST
// calls, each counted), with the account's credential, one refresh and replay on Apigee's
// token 401, Keap's 429 absorbed within RATE_LIMIT_REPLAYS and the request's deadline, Keap's
// quota headers observed, over the forwarder's connections. Each call is listed on the
// exchange for its log line.
import http, { type IncomingMessage } from 'node:http';
import https from 'node:https';
import { classifyUnauthorized, parseFault } from '../keap/apigee.js';
import { parseQuotaHeaders } from '../keap/keap-quota.js';
import type { RestAnswer, RestCaller, RestMethod } from '../keap/translate/rest.js';
import { DailyQuotaSpent } from '../pacing/pacing-errors.js';
import { accountOf, clientSignal, type Exchange } from '../pipeline/exchange.js';
import { judgeKeyBy } from './judge-key.js';
import { RateLimitedByKeap, rateLimitWait, type RateLimitReplayPolicy } from './back-off-on-rate-limit.js';
import { UpstreamError, type Forwarder } from './forwarder.js';
import type { Metrics } from '../observability/metrics.js';

/** The most of a REST answer a translation reads: a page of 1000 contacts is a few MiB. */
const MAX_ANSWER_BYTES = 32 * 1024 * 1024;

export function restCallerFor(
  ex: Exchange,
  forwarder: Forwarder,
  policy: RateLimitReplayPolicy,
  metrics: Metrics,
): RestCaller {
  return {
    async call(method: RestMethod, path: string, body?: unknown): Promise<RestAnswer> {
      const account = accountOf(ex);
      let refreshed = false;
      let first = true;
      for (;;) {
        if (account.pacer.enabled) {
          const waited = performance.now();
          await account.pacer.acquire(ex.deadline, first ? 'new' : 'replay', clientSignal(ex));
          metrics.queueWait(account.id, account.label(), (performance.now() - waited) / 1000);
        }
        first = false;
        if (ex.clientGone) throw new UpstreamError('client_closed');
        const credential = ex.credential ?? (await account.credentials.get());
        ex.credential = credential;
        ex.attempts += 1;
        const started = performance.now();
        const res = await send(forwarder, method, path, body, credential, ex.id);
        metrics.upstreamDone('xmlrpc', (performance.now() - started) / 1000);
        (ex.restCalls ??= []).push(`${method} ${path.split('?', 1)[0]} ${res.status}`);
        const report = parseQuotaHeaders(res.headers);
        if (report !== undefined) account.pacer.observe(report);
        // Key mode: every answer says whether the gateway takes the key (judge-key.ts's rule).
        if (credential.kind === 'key') await judgeKeyBy(account, credential, res.status, res.body);
        if (res.status === 401 && credential.kind === 'bearer' && !refreshed) {
          const fault = parseFault(res.body);
          if (classifyUnauthorized(fault) === 'token') {
            refreshed = true;
            await account.credentials.invalidate(credential);
            ex.credential = await account.credentials.get();
            continue;
          }
        }
        if (res.status === 429) {
          ex.rateLimited += 1;
          const wait = rateLimitWait(
            res.headers['retry-after'],
            parseFault(res.body),
            report,
            ex.rateLimited,
            Date.now(),
            policy,
          );
          const seconds = Math.max(1, Math.ceil(wait.ms / 1000));
          if (wait.dailyQuotaSpent) {
            account.pacer.exhaustDay(wait.resetsAt);
            throw new DailyQuotaSpent(wait.resetsAt, seconds);
          }
          if (wait.spikeArrest) account.pacer.spikeArrested(wait.retryAfterMs, wait.ms);
          else account.pacer.backOff(wait.ms);
          if (ex.attempts >= policy.maxAttempts) throw new RateLimitedByKeap('attempts', seconds);
          if (Date.now() + wait.ms > ex.deadline) throw new RateLimitedByKeap('deadline', seconds);
          // With a pacer its queue waits (or, after a spike arrest, its pace came down and this call waits its least wait alone).
          if (!account.pacer.enabled) await new Promise((r) => setTimeout(r, wait.ms));
          else if (wait.spikeArrest) await new Promise((r) => setTimeout(r, wait.floorMs));
          continue;
        }
        return { status: res.status, body: json(res.body) };
      }
    },
  };
}

interface Raw {
  status: number;
  headers: IncomingMessage['headers'];
  body: Buffer;
}

function send(
  forwarder: Forwarder,
  method: RestMethod,
  path: string,
  body: unknown,
  credential: { kind: 'bearer'; token: string } | { kind: 'key'; key: string },
  requestId: string,
): Promise<Raw> {
  const target = forwarder.options.target;
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  const headers: http.OutgoingHttpHeaders = {
    accept: 'application/json',
    'x-request-id': requestId,
    ...(credential.kind === 'bearer'
      ? { authorization: `Bearer ${credential.token}` }
      : { 'x-keap-api-key': credential.key }),
    ...(payload !== undefined ? { 'content-type': 'application/json', 'content-length': payload.length } : {}),
  };
  const base = target.pathname.replace(/\/$/, '');
  const request = target.protocol === 'https:' ? https.request : http.request;
  return new Promise((resolve, reject) => {
    const req = request(
      {
        protocol: target.protocol,
        host: target.hostname,
        port: target.port,
        method,
        path: base + path,
        headers,
        agent: forwarder.agent,
      },
      (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > MAX_ANSWER_BYTES) {
            req.destroy();
            reject(new UpstreamError('unreachable'));
            return;
          }
          chunks.push(c);
        });
        res.once('end', () =>
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }),
        );
        res.once('error', () => reject(new UpstreamError('unreachable')));
      },
    );
    req.setTimeout(forwarder.options.timeoutMs, () => {
      req.destroy();
      reject(new UpstreamError('timeout'));
    });
    req.once('error', () => reject(new UpstreamError('unreachable')));
    req.end(payload);
  });
}

function json(body: Buffer): unknown {
  if (body.length === 0) return undefined;
  try {
    return JSON.parse(body.toString('utf8')) as unknown;
  } catch {
    return undefined;
  }
}
