// A Keap (Infusionsoft) API simulator: a real HTTP server on loopback, used by tests, the demo and
// the benchmark. Behaviour follows /work/shared/keap-api-notes.md (token endpoint, Apigee 401/429
// faults, quota headers, XML-RPC). Node built-ins only; the API path avoids sync I/O and needless
// JSON work (fixed bodies are pre-serialised, headers go out in one writeHead).

import {
  createServer,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import { createHash, randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import {
  QuotaTracker,
  SpikeArrest,
  unauthenticatedQuotaHeaders,
  type CredentialKind,
  type ProductLimits,
  type TenantHeaderStyle,
  type TenantLimits,
} from './quota.js';
import {
  methodResponseFault,
  methodResponseStruct,
  parseMethodCall,
  parseMethodCallValues,
  XmlParseError,
} from './xml.js';
import { runClassic } from './xmlrpc-classic.js';
import { CrmStore } from './crm.js';
import { handleRestV1 } from './rest-v1.js';
import { handleRestV2 } from './rest-v2.js';
import { AUTHORIZE_PATH, handleAuthorize, type AuthorizeApp } from './authorize-page.js';

export type { CredentialKind, ProductLimits, TenantHeaderStyle, TenantLimits } from './quota.js';
export { CrmStore, type CustomFieldMeta } from './crm.js';

// What the simulator accepts unless told otherwise: tests, the demo and the benchmark talk to it with these.
export const SIM_CLIENT_ID = 'sim-client-id';
export const SIM_CLIENT_SECRET = 'sim-client-secret';
/** A Personal Access Token, accepted in X-Keap-API-Key. */
export const SIM_API_KEY = 'KeapAK-sim-personal-access-token';
/** A legacy XML-RPC Encrypted Key, accepted as the privateKey param. */
export const SIM_LEGACY_KEY = 'sim-legacy-encrypted-key';
/** A refresh token good at start (once: Keap rotates it on use). */
export const SIM_SEED = 'sim-seed-refresh-token';
/** The default tenant's id (X-Keap-Tenant-Id, the account profile's id). */
export const SIM_TENANT_ID = 'ab123';
/** The default tenant as the proxy names it: the host in the grant's scope. */
export const SIM_TENANT = `${SIM_TENANT_ID}.infusionsoft.com`;
/** The scope every token the simulator issues carries. */
export const SIM_SCOPE = `full|${SIM_TENANT}`;

export interface SimulatorOptions {
  host?: string; // default '127.0.0.1'
  port?: number; // default 0 (ephemeral)
  clientId?: string; // default SIM_CLIENT_ID
  clientSecret?: string; // default SIM_CLIENT_SECRET
  apiKeys?: string[]; // keys accepted in X-Keap-API-Key, default [SIM_API_KEY]
  legacyKeys?: string[]; // legacy XML-RPC "Encrypted Keys" accepted as privateKey param, default [SIM_LEGACY_KEY]
  accessTokenTtlSeconds?: number; // expires_in of issued access tokens, default 86400
  seedRefreshToken?: string; // a refresh token valid at start, default SIM_SEED
  tenant?: string; // default 'ab123' (scope returned: SIM_SCOPE, 'full|ab123.infusionsoft.com')
  ratePerSecond?: number; // per-second spike limit enforced with 429s; 0 = off (default 0)
  retryAfterOn429?: boolean; // include a Retry-After header on 429s (Keap does not document one), default false
  /** Enforced daily product quota (429 QuotaViolation above it). Default: not enforced, headers show Keap's limits. */
  dailyQuota?: number;
  /** Enforced per-minute product throttle (429 QuotaViolation above it). Default: not enforced. */
  minuteQuota?: number;
  /**
   * The tenant's limits the headers report (never enforced). Default: Keap's, 10,000 a minute and
   * 250,000 a day; the benchmark raises them where a proxy's pacing must not bind.
   */
  tenantLimits?: TenantLimits;
  /**
   * How the tenant's windows are written: 'pipe' (default) both at once, `10000|250000` with
   * `minute|day`; 'scalar' one window, the minute's, `10000` with `minute`. Keap has sent both.
   */
  tenantHeaders?: TenantHeaderStyle;
  /**
   * The body of a 429: 'apigee' (default) Apigee's fault (QuotaViolation or SpikeArrestViolation);
   * 'plain' the other shape Keap's users have seen, {"code":"429","message":"Quota Exceeded",
   * "status":"Request Throttled"}, for every 429 (choice: the quota headers stay the same).
   */
  throttleBody?: ThrottleBodyStyle;
  /**
   * Whether a 401 from the gateway carries every x-keap-* quota header with an empty value (`|`
   * for the pipe-separated tenant ones), as Keap's do: default true; false sends none.
   */
  emptyQuotaHeadersOn401?: boolean;
  /**
   * What XML-RPC methods do. 'echo' (default, what the proxy's tests rely on): every method answers a
   * struct describing the call. 'keap': the classic ContactService/DataService/APIEmailService methods
   * over the shared CRM store (see xmlrpc-classic.ts); other methods fault "No such handler".
   * DataService.echo echoes in both modes.
   */
  xmlrpc?: XmlRpcMode;
  /**
   * The redirect URIs registered for the client: the authorize page (authorizeUrl) sends the
   * browser back only to one of these. Default: any absolute http(s) URI without a fragment.
   */
  redirectUris?: string[];
}

export type XmlRpcMode = 'echo' | 'keap';
export type ThrottleBodyStyle = 'apigee' | 'plain';
export type BrownoutStyle = '503' | 'hang';

/**
 * Retired XML-RPC (retireXmlRpc(true)). Keap documents no retirement answer; this is a choice: the
 * gateway still authenticates and counts the call (Apigee runs before routing), then the backend
 * answers HTTP 410 Gone with REST v2's Error shape in JSON, not an XML-RPC fault: a fault would say
 * the method ran, and Keap's official PHP SDK treats any non-200 as a transport error anyway.
 */
const XMLRPC_RETIRED_BODY = Buffer.from(
  JSON.stringify({
    code: 410,
    message: 'The XML-RPC API has been retired. Use the REST v2 API: https://developer.keap.com/docs/restv2/',
    status: 'GONE',
    details: [],
  }),
);
/**
 * A brownout answer (setXmlRpcBrownout). Keap calls brownouts "brief, intentional system slowdowns"
 * and documents no shape: a choice of HTTP 503 with the Error shape (style '503'), or no answer at
 * all until the client gives up (style 'hang').
 */
const XMLRPC_BROWNOUT_BODY = Buffer.from(
  JSON.stringify({
    code: 503,
    message: 'The XML-RPC API is temporarily unavailable (scheduled brownout). Migrate to the REST v2 API.',
    status: 'UNAVAILABLE',
    details: [],
  }),
);

export interface RecordedRequest {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  /** Kept too so tests can check header order/case/duplicates after proxying. */
  rawHeaders: string[];
  body: Buffer;
}

export interface SimulatorCounters {
  tokenCalls: number;
  refreshGrants: number;
  codeGrants: number;
  /** 400 invalid_grant answers: dead/unknown refresh tokens, and unknown/used codes or redirect mismatches. */
  invalidGrants: number;
  /** 401s from /token for bad client credentials (Keap answers those with error "invalid_grant" too). */
  invalidClients: number;
  apiCalls: number;
  unauthorized: number;
  throttled: number;
  xmlrpcCalls: number;
}

export type TokenEndpointMode = 'ok' | 'error500' | 'hang';
export type RouteHandler = (req: IncomingMessage, res: ServerResponse, body: Buffer) => void;

const EMPTY = Buffer.alloc(0);
const JSON_CT = 'application/json';
const MAX_RECORDED = 200;
const MAX_RECORDED_TOKEN = 50;
const ECHO_BASE64_MAX = 64 * 1024;
const MAX_BYTES = 256 * 1024 * 1024;
const CODE_TTL_MS = 10 * 60_000;

const fault = (faultstring: string, errorcode: string): Buffer =>
  Buffer.from(JSON.stringify({ fault: { faultstring, detail: { errorcode } } }));

// Apigee 401 bodies, pre-serialised (they are hot in token-expiry benchmarks).
const FAULT_MISSING = fault('Invalid access token', 'oauth.v2.InvalidAccessToken');
const FAULT_INVALID = fault('Invalid Access Token', 'keymanagement.service.invalid_access_token');
const FAULT_EXPIRED = fault('Access Token expired', 'keymanagement.service.access_token_expired');
const FAULT_NOT_APPROVED = fault('Access Token not approved', 'keymanagement.service.access_token_not_approved');
/** The other 429 body Keap's users have seen (throttleBody 'plain'). */
export const PLAIN_THROTTLE_BODY = Buffer.from(
  '{"code":"429","message":"Quota Exceeded","status":"Request Throttled"}',
);
/** A 401 from the application behind the gateway: no Apigee fault body. */
export const APP_UNAUTHORIZED_BODY = Buffer.from('{"message":"unauthorized by app"}');

/** Deterministic pattern for __bytes (byte i = i % 251), grown on demand and sliced per request. */
let bytesPattern = EMPTY;
function patternBytes(size: number): Buffer {
  if (bytesPattern.length < size) {
    const b = Buffer.allocUnsafe(Math.max(size, 64 * 1024));
    for (let i = 0; i < b.length; i++) b[i] = i % 251;
    bytesPattern = b;
  }
  return bytesPattern.subarray(0, size);
}

function intParam(query: string, name: string, dflt: number, min: number, max: number): number {
  const raw = new URLSearchParams(query).get(name);
  const n = raw === null ? dflt : Number(raw);
  return Number.isFinite(n) ? Math.min(max, Math.max(min, Math.floor(n))) : dflt;
}

/** Collects the request body; answers synchronously (no event-loop hop) when there is none. */
function readBody(req: IncomingMessage, done: (body: Buffer) => void): void {
  const cl = req.headers['content-length'];
  if ((cl === undefined || cl === '0') && req.headers['transfer-encoding'] === undefined) {
    done(EMPTY);
    return;
  }
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => done(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks)));
  req.on('error', () => {
    /* client went away: nothing to answer */
  });
}

interface AuthOk {
  kind: CredentialKind;
  /** Quota bucket key: one per OAuth client, one per key. */
  identity: string;
  /** Shown in QuotaViolation fault strings. */
  identifier: string;
}

export class KeapSimulator {
  readonly url: string;
  readonly tokenUrl: string;
  /** The login and consent page (Keap's is accounts.infusionsoft.com/app/oauth/authorize). */
  readonly authorizeUrl: string;
  counters: SimulatorCounters = {
    tokenCalls: 0,
    refreshGrants: 0,
    codeGrants: 0,
    invalidGrants: 0,
    invalidClients: 0,
    apiCalls: 0,
    unauthorized: 0,
    throttled: 0,
    xmlrpcCalls: 0,
  };
  /** Oldest first; the last 200 requests to API endpoints (rejected ones included). */
  lastRequests: RecordedRequest[] = [];
  /** Oldest first; the last 50 requests to /token (to check client auth style, form fields...). */
  lastTokenRequests: RecordedRequest[] = [];
  /**
   * Contacts, tags, email statuses and the contact model, shared by REST v2 (/crm/rest/v2/contacts...,
   * /tags..., /emailAddresses/{email}/status) and the classic XML-RPC methods. `crm.reset()` empties it.
   */
  readonly crm = new CrmStore();

  private readonly server: Server;
  private readonly clientId: string;
  private readonly clientSecret: string;
  private readonly apiKeys: Set<string>;
  private readonly legacyKeys: Set<string>;
  private readonly tenant: string;
  private readonly scope: string;
  private accessTokenTtlSeconds: number;
  private retryAfterOn429: boolean;
  private refreshToken: string | undefined;
  /** access token -> expiry (epoch ms). Old tokens stay valid until expiry or revokeAccessToken. */
  private readonly accessTokens = new Map<string, number>();
  /** Tokens revoked one by one: Apigee answers them access_token_not_approved. */
  private readonly revokedTokens = new Set<string>();
  private readonly codes = new Map<string, { redirectUri: string; expiresAt: number; scope: string }>();
  /** The scope of the grant the live refresh token belongs to (a code can be for another app). */
  private refreshScope: string;
  private tokenMode: TokenEndpointMode = 'ok';
  private tokenDelayMs = 0;
  private approved = true;
  private spike: SpikeArrest;
  private spikeFault: Buffer = EMPTY;
  private readonly quota: QuotaTracker;
  private readonly routes = new Map<string, RouteHandler>();
  private readonly routePaths = new Map<string, number>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private throttleBody: ThrottleBodyStyle;
  private emptyQuotaHeadersOn401: boolean;
  private xmlrpcMode: XmlRpcMode;
  private xmlrpcRetired = false;
  private brownoutFraction = 0;
  private brownoutStyle: BrownoutStyle = '503';
  private brownoutCalls = 0;
  private closed = false;
  private readonly authorizeApp: AuthorizeApp;

  static async start(opts: SimulatorOptions = {}): Promise<KeapSimulator> {
    const server = createServer({ keepAlive: true, noDelay: true, requestTimeout: 0 });
    // Long keep-alive so benchmark connections are reused; close() destroys them anyway.
    server.keepAliveTimeout = 65_000;
    server.headersTimeout = 66_000;
    const host = opts.host ?? '127.0.0.1';
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(opts.port ?? 0, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    const port = (server.address() as AddressInfo).port;
    return new KeapSimulator(server, `http://${host.includes(':') ? `[${host}]` : host}:${port}`, opts);
  }

  private constructor(server: Server, url: string, opts: SimulatorOptions) {
    this.server = server;
    this.url = url;
    this.tokenUrl = `${url}/token`;
    this.authorizeUrl = `${url}${AUTHORIZE_PATH}`;
    this.clientId = opts.clientId ?? SIM_CLIENT_ID;
    this.clientSecret = opts.clientSecret ?? SIM_CLIENT_SECRET;
    this.apiKeys = new Set(opts.apiKeys ?? [SIM_API_KEY]);
    this.legacyKeys = new Set(opts.legacyKeys ?? [SIM_LEGACY_KEY]);
    this.accessTokenTtlSeconds = opts.accessTokenTtlSeconds ?? 86_400;
    this.refreshToken = opts.seedRefreshToken ?? SIM_SEED;
    this.tenant = opts.tenant ?? SIM_TENANT_ID;
    this.scope = `full|${this.tenant}.infusionsoft.com`;
    this.refreshScope = this.scope;
    this.retryAfterOn429 = opts.retryAfterOn429 ?? false;
    this.quota = new QuotaTracker(this.tenant, opts.tenantLimits);
    this.quota.tenantHeaders = opts.tenantHeaders ?? 'pipe';
    this.throttleBody = opts.throttleBody ?? 'apigee';
    this.emptyQuotaHeadersOn401 = opts.emptyQuotaHeadersOn401 ?? true;
    this.quota.dailyOverride = opts.dailyQuota ?? null;
    this.quota.minuteOverride = opts.minuteQuota ?? null;
    this.xmlrpcMode = opts.xmlrpc ?? 'echo';
    this.spike = new SpikeArrest(0);
    this.setRatePerSecond(opts.ratePerSecond ?? 0);
    this.authorizeApp = {
      clientId: this.clientId,
      tenant: this.tenant,
      redirectUris: opts.redirectUris === undefined ? undefined : new Set(opts.redirectUris),
      issueCode: (redirectUri) => this.issueAuthorizationCode(redirectUri),
    };
    server.on('request', (req: IncomingMessage, res: ServerResponse) => this.onRequest(req, res));
  }

  // ---------------------------------------------------------------- control API

  /** Closes the listener and destroys every socket (hanging requests included) so tests end fast. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    const done = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeAllConnections();
    await done;
  }

  /** Zeroes the counters in place (references stay valid) and forgets recorded requests. */
  resetCounters(): void {
    for (const k of Object.keys(this.counters) as (keyof SimulatorCounters)[]) this.counters[k] = 0;
    this.lastRequests.length = 0;
    this.lastTokenRequests.length = 0;
  }

  currentRefreshToken(): string | undefined {
    return this.refreshToken;
  }

  /**
   * A code as Keap's authorize page would hand the browser. `tenant` (choice: Keap issues a code
   * for whichever app the person logged in to; one simulator stands for one app unless told)
   * makes the grant it exchanges to name another app in its scope (`full|<tenant>.infusionsoft.com`).
   */
  issueAuthorizationCode(redirectUri: string, opts: { tenant?: string } = {}): string {
    const code = randomBytes(16).toString('base64url');
    const scope = opts.tenant === undefined ? this.scope : `full|${opts.tenant}.infusionsoft.com`;
    this.codes.set(code, { redirectUri, expiresAt: Date.now() + CODE_TTL_MS, scope });
    return code;
  }

  /** Mints a live access token without the token endpoint (for tests that need one directly). */
  issueAccessToken(ttlSeconds = this.accessTokenTtlSeconds): string {
    const token = randomBytes(24).toString('base64url');
    this.accessTokens.set(token, Date.now() + ttlSeconds * 1000);
    return token;
  }

  expireAccessTokens(): void {
    for (const k of this.accessTokens.keys()) this.accessTokens.set(k, 0);
  }

  /** Keys accepted in X-Keap-API-Key from now on (a key Keap issued, or revoked, after the start). */
  acceptApiKey(key: string, accepted = true): void {
    if (accepted) this.apiKeys.add(key);
    else this.apiKeys.delete(key);
  }

  /**
   * Revokes one access token: Apigee then answers it `access_token_not_approved` (what it says
   * for a single revoked token, see the notes), while the app and its other tokens stay good.
   */
  revokeAccessToken(token: string): void {
    this.revokedTokens.add(token);
  }

  revokeRefreshTokens(): void {
    this.refreshToken = undefined;
  }

  setTokenEndpointMode(mode: TokenEndpointMode): void {
    this.tokenMode = mode;
  }

  /** Every token call is answered this much later (0: at once). */
  setTokenEndpointDelayMs(ms: number): void {
    this.tokenDelayMs = ms;
  }

  setAccessTokenTtlSeconds(seconds: number): void {
    this.accessTokenTtlSeconds = seconds;
  }

  /** Also restarts the sliding window, so a test gets a clean second. 0 turns spike arrest off. */
  setRatePerSecond(n: number): void {
    const rate = Math.max(0, Math.floor(n));
    this.spike = new SpikeArrest(rate);
    this.quota.spikeOverride = rate;
    this.spikeFault = fault(
      `Spike arrest violation. Allowed rate : MessageRate{messagesPerPeriod=${rate}, periodInMicroseconds=1000000, maxBurstMessageCount=${rate}.0}`,
      'policies.ratelimit.SpikeArrestViolation',
    );
  }

  setRetryAfterOn429(on: boolean): void {
    this.retryAfterOn429 = on;
  }

  /** Enforce a daily product quota of n calls (0 = every call refused); null = back to not enforced. */
  setDailyQuota(n: number | null): void {
    this.quota.dailyOverride = n;
  }

  /** Enforce a per-minute product throttle of n calls; null = back to not enforced. */
  setMinuteQuota(n: number | null): void {
    this.quota.minuteOverride = n;
  }

  /**
   * The client's or key's limits as the headers report them, in place of Keap's published ones
   * (a larger quota: one shared app reports 500,000 a day); not enforced (setDailyQuota and
   * setMinuteQuota enforce). {} goes back to the published ones.
   */
  setProductLimits(limits: Partial<ProductLimits>): void {
    this.quota.reportedLimits = { ...limits };
  }

  /** Forgets all quota usage (daily, minute, tenant). */
  resetQuotas(): void {
    this.quota.reset();
  }

  /** 'pipe' (default) or 'scalar': see SimulatorOptions.tenantHeaders. */
  setTenantHeaders(style: TenantHeaderStyle): void {
    this.quota.tenantHeaders = style;
  }

  /** 'apigee' (default) or 'plain': see SimulatorOptions.throttleBody. */
  setThrottleBody(style: ThrottleBodyStyle): void {
    this.throttleBody = style;
  }

  /** true (default): 401s carry the quota headers, empty; see SimulatorOptions.emptyQuotaHeadersOn401. */
  setEmptyQuotaHeadersOn401(on: boolean): void {
    this.emptyQuotaHeadersOn401 = on;
  }

  setApproved(approved: boolean): void {
    this.approved = approved;
  }

  /** 'echo' (default) or 'keap' (classic methods over `crm`); see SimulatorOptions.xmlrpc. */
  setXmlRpcMode(mode: XmlRpcMode): void {
    this.xmlrpcMode = mode;
  }

  /** true: every XML-RPC call (authenticated, within quota) is answered 410 Gone. */
  retireXmlRpc(retired: boolean): void {
    this.xmlrpcRetired = retired;
  }

  /**
   * A brownout: `on` true/1 = every XML-RPC call fails, false/0 = none, a fraction f in between = f of
   * calls, spread evenly and deterministically (with 0.5, the 2nd, 4th, ... calls). Style '503'
   * (default) answers 503; 'hang' never answers (the client times out).
   */
  setXmlRpcBrownout(on: boolean | number, style: BrownoutStyle = '503'): void {
    const f = typeof on === 'boolean' ? (on ? 1 : 0) : on;
    this.brownoutFraction = Math.min(1, Math.max(0, Number.isFinite(f) ? f : 0));
    this.brownoutStyle = style;
    this.brownoutCalls = 0;
  }

  /**
   * Test-specific handler for an exact path (query string ignored); method '*' matches any method.
   * For API paths it runs after auth and quotas, before built-ins. A path outside /crm/ becomes an
   * API endpoint too (e.g. a legacy '/api/xmlrpc'). A route on '/token' replaces the token endpoint.
   */
  route(method: string, path: string, handler: RouteHandler): void {
    const key = `${method.toUpperCase()} ${path}`;
    if (!this.routes.has(key)) this.routePaths.set(path, (this.routePaths.get(path) ?? 0) + 1);
    this.routes.set(key, handler);
  }

  unroute(method: string, path: string): void {
    if (this.routes.delete(`${method.toUpperCase()} ${path}`)) {
      const n = (this.routePaths.get(path) ?? 1) - 1;
      if (n <= 0) this.routePaths.delete(path);
      else this.routePaths.set(path, n);
    }
  }

  clearRoutes(): void {
    this.routes.clear();
    this.routePaths.clear();
  }

  // ---------------------------------------------------------------- dispatch

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q < 0 ? url : url.slice(0, q);
    const query = q < 0 ? '' : url.slice(q + 1);
    if (path === '/token') {
      this.counters.tokenCalls++;
      readBody(req, (body) => this.handleToken(req, res, body));
      return;
    }
    if (path === AUTHORIZE_PATH) {
      readBody(req, (body) => handleAuthorize(this.authorizeApp, req, res, body));
      return;
    }
    if (!path.startsWith('/crm/') && !this.routePaths.has(path)) {
      // Outside the API proxy base: not an API call, not authenticated.
      send(res, 404, JSON_CT, Buffer.from(JSON.stringify({ message: 'Not Found', path })));
      return;
    }
    readBody(req, (body) => this.handleApi(req, res, path, query, body));
  }

  private findRoute(method: string, path: string): RouteHandler | undefined {
    if (this.routes.size === 0) return undefined;
    return this.routes.get(`${method} ${path}`) ?? this.routes.get(`* ${path}`);
  }

  private runRoute(handler: RouteHandler, req: IncomingMessage, res: ServerResponse, body: Buffer): void {
    try {
      handler(req, res, body);
    } catch (err) {
      if (!res.headersSent) send(res, 500, JSON_CT, Buffer.from(JSON.stringify({ message: String(err) })));
      else res.destroy();
    }
  }

  // ---------------------------------------------------------------- /token

  private handleToken(req: IncomingMessage, res: ServerResponse, body: Buffer): void {
    if (this.tokenDelayMs > 0) {
      // Keap's token endpoint has been seen taking over 10 s at the top of the hour; the grant
      // rotates when the answer is made, as it would at Keap.
      const timer = setTimeout(() => {
        this.timers.delete(timer);
        this.answerToken(req, res, body);
      }, this.tokenDelayMs);
      this.timers.add(timer);
      return;
    }
    this.answerToken(req, res, body);
  }

  private answerToken(req: IncomingMessage, res: ServerResponse, body: Buffer): void {
    record(this.lastTokenRequests, MAX_RECORDED_TOKEN, req, body);
    const custom = this.findRoute(req.method ?? 'GET', '/token');
    if (custom) return this.runRoute(custom, req, res, body);
    if (this.tokenMode === 'hang') return; // never answered; close() destroys the socket
    if (this.tokenMode === 'error500') {
      return tokenJson(res, 500, { error: 'server_error', error_description: 'Internal Server Error' });
    }
    if (req.method !== 'POST') {
      res.setHeader('allow', 'POST');
      return tokenJson(res, 405, { error: 'invalid_request', error_description: 'Method Not Allowed' });
    }
    const ct = req.headers['content-type'] ?? '';
    if (!ct.toLowerCase().startsWith('application/x-www-form-urlencoded')) {
      return tokenJson(res, 400, {
        error: 'invalid_request',
        error_description: 'Content-Type must be application/x-www-form-urlencoded',
      });
    }
    const form = new URLSearchParams(body.toString('utf8'));
    if (!this.clientAuthenticated(req, form)) {
      this.counters.invalidClients++;
      return tokenJson(res, 401, {
        error: 'invalid_grant',
        error_description: 'Unable to authenticate username and password',
      });
    }
    const grant = form.get('grant_type');
    if (grant === 'refresh_token') {
      const rt = form.get('refresh_token');
      if (!rt) return tokenJson(res, 400, { error: 'invalid_request', error_description: 'Missing refresh_token' });
      if (this.refreshToken === undefined || rt !== this.refreshToken) {
        this.counters.invalidGrants++;
        return tokenJson(res, 400, { error: 'invalid_grant', error_description: 'Invalid refresh token' });
      }
      this.counters.refreshGrants++;
      return this.issueTokens(res, this.refreshScope);
    }
    if (grant === 'authorization_code') {
      const code = form.get('code') ?? '';
      const entry = this.codes.get(code);
      this.codes.delete(code); // one use, whatever the outcome
      if (!entry || entry.expiresAt < Date.now()) {
        this.counters.invalidGrants++;
        return tokenJson(res, 400, { error: 'invalid_grant', error_description: 'Invalid authorization code' });
      }
      if (form.get('redirect_uri') !== entry.redirectUri) {
        this.counters.invalidGrants++;
        return tokenJson(res, 400, { error: 'invalid_grant', error_description: 'Redirect URI mismatch' });
      }
      this.counters.codeGrants++;
      return this.issueTokens(res, entry.scope);
    }
    if (!grant) return tokenJson(res, 400, { error: 'invalid_request', error_description: 'Missing grant_type' });
    return tokenJson(res, 400, {
      error: 'unsupported_grant_type',
      error_description: `Unsupported grant_type ${grant}`,
    });
  }

  /** Basic base64(id:secret) (what Keap's SDKs send on refresh) or client_id/client_secret form fields. */
  private clientAuthenticated(req: IncomingMessage, form: URLSearchParams): boolean {
    const authz = req.headers.authorization;
    let id: string | null;
    let secret: string | null;
    const m = authz ? /^Basic\s+(\S+)\s*$/i.exec(authz) : null;
    if (m) {
      const decoded = Buffer.from(m[1]!, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      if (colon < 0) return false;
      id = decoded.slice(0, colon);
      secret = decoded.slice(colon + 1);
      if (id === this.clientId && secret === this.clientSecret) return true;
      // RFC 6749 2.3.1 form-encodes id and secret before base64; accept that spelling too.
      try {
        id = decodeURIComponent(id.replace(/\+/g, ' '));
        secret = decodeURIComponent(secret.replace(/\+/g, ' '));
      } catch {
        return false;
      }
    } else {
      id = form.get('client_id');
      secret = form.get('client_secret');
    }
    return id === this.clientId && secret === this.clientSecret;
  }

  private issueTokens(res: ServerResponse, scope: string): void {
    const access = this.issueAccessToken();
    this.refreshToken = randomBytes(24).toString('base64url'); // rotation: the previous one dies now
    this.refreshScope = scope;
    tokenJson(res, 200, {
      access_token: access,
      token_type: 'bearer',
      expires_in: this.accessTokenTtlSeconds,
      refresh_token: this.refreshToken,
      scope,
    });
  }

  // ---------------------------------------------------------------- API

  private handleApi(req: IncomingMessage, res: ServerResponse, path: string, query: string, body: Buffer): void {
    this.counters.apiCalls++;
    record(this.lastRequests, MAX_RECORDED, req, body);
    const method = req.method ?? 'GET';
    const isXmlrpc = path === '/crm/xmlrpc/v1' || path === '/crm/xmlrpc';
    if (isXmlrpc) this.counters.xmlrpcCalls++;

    // Apigee: authenticate before routing.
    const auth = this.authenticate(req, isXmlrpc && method === 'POST' ? body : undefined);
    if (Buffer.isBuffer(auth)) {
      this.counters.unauthorized++;
      // The Quota policy runs after authentication, so there is no product to report: Keap sends
      // every quota header with an empty value (unknown, never zero).
      send(res, 401, JSON_CT, auth, this.unauthenticatedHeaders());
      return;
    }

    const now = Date.now();
    const bucket = this.quota.bucket(auth.identity, auth.kind, auth.identifier);
    if (!this.spike.allow(now)) {
      const q = this.quota.apply(bucket, now, false);
      this.counters.throttled++;
      if (this.retryAfterOn429) q.headers.push('retry-after', '1');
      send(res, 429, JSON_CT, this.throttleBody === 'plain' ? PLAIN_THROTTLE_BODY : this.spikeFault, q.headers);
      return;
    }
    const q = this.quota.apply(bucket, now, true);
    if (q.violation) {
      this.counters.throttled++;
      if (this.retryAfterOn429) q.headers.push('retry-after', String(q.retryAfterSeconds));
      send(
        res,
        429,
        JSON_CT,
        this.throttleBody === 'plain'
          ? PLAIN_THROTTLE_BODY
          : fault(
              `Rate limit quota violation. Quota limit  exceeded. Identifier : ${q.identifier}`,
              'policies.ratelimit.QuotaViolation',
            ),
        q.headers,
      );
      return;
    }
    const qh = q.headers;

    const custom = this.findRoute(method, path);
    if (custom) {
      for (let i = 0; i < qh.length; i += 2) res.setHeader(qh[i]!, qh[i + 1]!);
      return this.runRoute(custom, req, res, body);
    }

    if (isXmlrpc) {
      if (this.xmlrpcRetired) return send(res, 410, JSON_CT, XMLRPC_RETIRED_BODY, qh);
      if (this.brownoutFraction > 0) {
        const n = ++this.brownoutCalls;
        if (Math.floor(n * this.brownoutFraction) > Math.floor((n - 1) * this.brownoutFraction)) {
          if (this.brownoutStyle === 'hang') return; // never answered; close() destroys the socket
          return send(res, 503, JSON_CT, XMLRPC_BROWNOUT_BODY, qh);
        }
      }
      return this.handleXmlrpc(req, res, method, body, auth.kind, qh);
    }

    if (path.startsWith('/crm/rest/v1/') || path.startsWith('/crm/rest/v2/')) {
      const rest = path.slice(13); // after '/crm/rest/vN/'
      const v1 = path[11] === '1'; // '/crm/rest/v' is 11 chars
      // One answer shape for both versions' stateful routes.
      const a = v1
        ? handleRestV1(this.crm, method, rest, query, body, this.url)
        : handleRestV2(this.crm, method, rest, query, body);
      if (a !== undefined) {
        if (a.body === undefined) {
          res.writeHead(a.status, qh); // 204: no content-type, no content-length
          res.end();
          return;
        }
        return send(res, a.status, JSON_CT, Buffer.from(JSON.stringify(a.body)), qh);
      }
      switch (rest) {
        case 'oauth/connect/userinfo':
          if (v1 && method === 'GET') return send(res, 200, JSON_CT, this.userinfoBody(), qh);
          break;
        case 'account/profile':
          if (v1 && method === 'GET') return send(res, 200, JSON_CT, this.profileBody(), qh);
          break;
        case '__stream':
          if (method === 'GET') return this.stream(res, query, qh);
          break;
        case '__hang':
          return; // never answered; close() destroys the socket
        case '__bytes':
          if (method === 'GET') {
            const size = intParam(query, 'size', 1024, 0, MAX_BYTES);
            return send(res, 200, 'application/octet-stream', patternBytes(size), qh);
          }
          break;
        case '__app401':
          // The application's own 401 (the gateway accepted the token): /crm/rest/v1/__app401
          return send(res, 401, JSON_CT, APP_UNAUTHORIZED_BODY, qh);
        case '__fault': {
          // The gateway rejecting a token it has just accepted, with any errorcode (a misbehaving
          // gateway, a revoked token, an app withdrawn): /crm/rest/v1/__fault?errorcode=...
          const errorcode = new URLSearchParams(query).get('errorcode') ?? 'keymanagement.service.invalid_access_token';
          this.counters.unauthorized++;
          return send(res, 401, JSON_CT, fault('Simulated gateway fault', errorcode), this.unauthenticatedHeaders());
        }
        case '__status': {
          // Any status code, for 5xx/4xx handling tests: /crm/rest/v1/__status?code=503
          const code = intParam(query, 'code', 200, 200, 599);
          return send(res, code, JSON_CT, Buffer.from(JSON.stringify({ status: code })), qh);
        }
        case '__delay': {
          // A normal answer after ms milliseconds: /crm/rest/v1/__delay?ms=300
          const ms = intParam(query, 'ms', 100, 0, 600_000);
          this.later(ms, () => send(res, 200, JSON_CT, Buffer.from(JSON.stringify({ delayedMs: ms })), qh));
          return;
        }
        default:
          if (rest === '__echo' || rest.startsWith('__echo/')) return this.echo(req, res, body, qh);
      }
    }
    send(res, 404, JSON_CT, Buffer.from(JSON.stringify({ message: 'Not Found', path })), qh);
  }

  /** Header credentials first; for XML-RPC without a valid header credential, a legacy privateKey param. */
  private authenticate(req: IncomingMessage, xmlrpcBody: Buffer | undefined): AuthOk | Buffer {
    const h = req.headers;
    const apiKey = h['x-keap-api-key'];
    let result: AuthOk | Buffer | undefined;
    if (typeof apiKey === 'string' && this.apiKeys.has(apiKey)) {
      result = { kind: 'api-key', identity: `key:${apiKey}`, identifier: maskKey(apiKey) };
    } else {
      const authz = h.authorization;
      if (authz !== undefined) {
        const token = authz.length > 7 && authz.slice(0, 7).toLowerCase() === 'bearer ' ? authz.slice(7).trim() : '';
        if (!token) return FAULT_MISSING;
        if (this.apiKeys.has(token)) {
          result = { kind: 'api-key', identity: `key:${token}`, identifier: maskKey(token) };
        } else {
          const exp = this.accessTokens.get(token);
          if (exp === undefined) return FAULT_INVALID;
          if (exp <= Date.now()) return FAULT_EXPIRED;
          if (this.revokedTokens.size > 0 && this.revokedTokens.has(token)) return FAULT_NOT_APPROVED;
          result = { kind: 'bearer', identity: `client:${this.clientId}`, identifier: this.clientId };
        }
      } else if (
        apiKey !== undefined &&
        !(xmlrpcBody !== undefined && typeof apiKey === 'string' && this.legacyKeys.has(apiKey))
      ) {
        return FAULT_INVALID; // an unknown key
      } else if (xmlrpcBody !== undefined) {
        // Old XML-RPC endpoints read the legacy key from the body, whatever the header says.

        let key: string | undefined;
        try {
          key = parseMethodCall(xmlrpcBody.toString('utf8')).firstParam;
        } catch {
          key = undefined;
        }
        if (key === undefined || !this.legacyKeys.has(key)) return FAULT_MISSING;
        result = { kind: 'legacy-key', identity: `legacy:${key}`, identifier: maskKey(key) };
      } else {
        return FAULT_MISSING;
      }
    }
    return this.approved ? result : FAULT_NOT_APPROVED;
  }

  private handleXmlrpc(
    _req: IncomingMessage,
    res: ServerResponse,
    method: string,
    body: Buffer,
    kind: CredentialKind,
    qh: string[],
  ): void {
    if (method !== 'POST') {
      qh.push('allow', 'POST');
      return send(res, 405, JSON_CT, Buffer.from('{"message":"Method Not Allowed"}'), qh);
    }
    let xml: string;
    try {
      const call = parseMethodCall(body.toString('utf8'));
      if (this.xmlrpcMode === 'keap' && call.methodName !== 'DataService.echo') {
        const typed = parseMethodCallValues(body.toString('utf8'));
        return send(
          res,
          200,
          'text/xml;charset=UTF-8',
          Buffer.from(runClassic(this.crm, typed.methodName, typed.params)),
          qh,
        );
      }
      xml = methodResponseStruct([
        ['methodName', 'string', call.methodName],
        ['privateKey', 'string', call.firstParam ?? ''],
        ['paramCount', 'int', call.paramCount],
        ['authenticatedBy', 'string', kind],
      ]);
    } catch (err) {
      // Keap's XML-RPC backend (Apache XML-RPC) answers parse errors with HTTP 200 and a fault.
      const reason = err instanceof XmlParseError ? err.message : String(err);
      xml = methodResponseFault(0, `Failed to parse XML-RPC request: ${reason}`);
    }
    send(res, 200, 'text/xml;charset=UTF-8', Buffer.from(xml), qh);
  }

  /** The quota headers of a 401 (a fresh list: send() appends to it), or none when switched off. */
  private unauthenticatedHeaders(): string[] | undefined {
    return this.emptyQuotaHeadersOn401 ? unauthenticatedQuotaHeaders(this.quota.tenantHeaders) : undefined;
  }

  private echo(req: IncomingMessage, res: ServerResponse, body: Buffer, qh: string[]): void {
    const payload: Record<string, unknown> = {
      method: req.method,
      url: req.url,
      headers: req.headers,
      rawHeaders: req.rawHeaders,
      bodyLength: body.length,
      bodySha256: createHash('sha256').update(body).digest('hex'),
    };
    if (body.length <= ECHO_BASE64_MAX) payload.bodyBase64 = body.toString('base64');
    send(res, 200, JSON_CT, Buffer.from(JSON.stringify(payload)), qh);
  }

  private stream(res: ServerResponse, query: string, qh: string[]): void {
    const params = new URLSearchParams(query);
    const n = Math.min(10_000, Math.max(0, Math.floor(Number(params.get('chunks') ?? 3)) || 0));
    const delay = Math.min(60_000, Math.max(0, Math.floor(Number(params.get('delayMs') ?? 50)) || 0));
    // No content-length: Node sends chunked transfer-encoding.
    res.writeHead(200, [...qh, 'content-type', 'text/plain; charset=utf-8', 'cache-control', 'no-cache']);
    let i = 0;
    const next = (): void => {
      if (res.destroyed) return;
      if (i >= n) {
        res.end();
        return;
      }
      res.write(`chunk ${i}\n`);
      i++;
      if (i >= n) res.end();
      else this.later(delay, next);
    };
    if (n === 0) res.end();
    else next();
  }

  private later(ms: number, fn: () => void): void {
    if (this.closed) return;
    const t = setTimeout(() => {
      this.timers.delete(t);
      fn();
    }, ms);
    this.timers.add(t);
  }

  private userinfoBody(): Buffer {
    return Buffer.from(
      JSON.stringify({
        email: 'sim.user@example.com',
        family_name: 'User',
        given_name: 'Sim',
        global_user_id: 12345,
        infusionsoft_id: 'sim.user@example.com',
        middle_name: null,
        preferred_name: 'Sim User',
        sub: '12345',
      }),
    );
  }

  private profileBody(): Buffer {
    return Buffer.from(
      JSON.stringify({
        id: this.tenant,
        name: 'Sim Company',
        email: 'owner@example.com',
        phone: { number: '555-0100', type: 'Work' },
        time_zone: 'UTC',
        website: `https://${this.tenant}.infusionsoft.com`,
      }),
    );
  }
}

// ---------------------------------------------------------------- helpers

function maskKey(key: string): string {
  return key.length <= 10 ? key : `${key.slice(0, 10)}…`;
}

function record(list: RecordedRequest[], max: number, req: IncomingMessage, body: Buffer): void {
  list.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, rawHeaders: req.rawHeaders, body });
  if (list.length > max) list.shift();
}

/** One writeHead with a flat header list (Node's fast path: no per-header setHeader). */
function send(res: ServerResponse, status: number, contentType: string, body: Buffer, extra?: string[]): void {
  if (res.destroyed) return;
  const headers = extra ?? [];
  headers.push('content-type', contentType, 'content-length', String(body.length));
  res.writeHead(status, headers);
  res.end(body);
}

function tokenJson(res: ServerResponse, status: number, obj: object): void {
  const body = Buffer.from(JSON.stringify(obj));
  res.setHeader('cache-control', 'no-store');
  res.setHeader('pragma', 'no-cache');
  res.writeHead(status, { 'content-type': JSON_CT, 'content-length': String(body.length) });
  res.end(body);
}
