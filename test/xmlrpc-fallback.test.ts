// XMLRPC_MODE=fallback: XML-RPC calls go to Keap's XML-RPC (the simulator's classic one) as in
// passthrough mode; when it answers as retired or browned out, the calls the proxy can translate
// are answered from REST v2, as far as running them again is safe, and the endpoint is skipped
// for XMLRPC_FALLBACK_DOWN_MS (on an injected clock here). Real simulator, real proxy, loopback.
import { describe, it, expect, afterEach } from 'vitest';
import { parseMethodResponse, writeMethodCall, type XmlRpcValue } from '../src/keap/xmlrpc-codec.js';
import { ConfigError, configSummary, loadConfig } from '../src/config/config.js';
import { judgeAnswer, XMLRPC_FALLBACK } from '../src/upstream/fall-back-to-translation.js';
import { BufferedBody } from '../src/http/body.js';
import { clientXmlRpcCall, type Exchange } from '../src/pipeline/exchange.js';
import { keepClientXmlRpcCall, rewriteXmlRpcKey } from '../src/pipeline/stages.js';
import { harnessPerTest, metric, send, SIM_API_KEY, tempDir, until, type Harness, type Reply } from './harness.js';

const startHarness = harnessPerTest(afterEach);

const s = (value: string): XmlRpcValue => ({ type: 'string', value });
const i = (value: number): XmlRpcValue => ({ type: 'int', value });
const a = (...values: string[]): XmlRpcValue => ({ type: 'array', value: values.map(s) });
const struct = (fields: Record<string, string>): XmlRpcValue => ({
  type: 'struct',
  value: new Map(Object.entries(fields).map(([k, v]) => [k, s(v)])),
});

const FIELDS = a('Id', 'FirstName', 'LastName', 'Email', 'Phone1', 'City', 'Company', 'DateCreated');
const DOWN_MS = 300_000;
/** What the app sends as privateKey: anything (the proxy holds the credential). */
const APP_KEY = 'placeholder-from-the-app';

interface Rig extends Harness {
  clock: { t: number };
}

async function fallback(env: Record<string, string> = {}): Promise<Rig> {
  const clock = { t: Date.UTC(2026, 6, 9, 12) };
  const h = await startHarness({
    mode: 'key',
    env: { XMLRPC_MODE: 'fallback', LOG_LEVEL: 'debug', ...env },
    sim: { xmlrpc: 'keap' },
    overrides: { now: () => clock.t },
  });
  h.sim.crm.createContact({
    given_name: 'Ada',
    family_name: 'Lovelace',
    job_title: 'Analyst',
    company: { company_name: 'Engines & Co' },
    email_addresses: [{ email: 'ada@example.com', field: 'EMAIL1' }],
    phone_numbers: [{ number: '555-0100', field: 'PHONE1' }],
    fax_numbers: [],
    addresses: [{ field: 'BILLING', locality: 'London', country_code: 'GBR' }],
    custom_fields: [],
  });
  return Object.assign(h, { clock });
}

function body(methodName: string, ...params: XmlRpcValue[]): string {
  return writeMethodCall({ methodName, params: [s(APP_KEY), ...params] });
}

function call(h: Harness, methodName: string, ...params: XmlRpcValue[]): Promise<Reply> {
  return send(h.proxy.url, 'POST', '/crm/xmlrpc/v1', {
    body: body(methodName, ...params),
    headers: { 'content-type': 'text/xml' },
  });
}

/** The same call to the simulator's classic XML-RPC directly: what Keap answered before it retired it. */
async function classic(h: Harness, methodName: string, ...params: XmlRpcValue[]): Promise<unknown> {
  const r = await send(h.sim.url, 'POST', '/crm/xmlrpc/v1', {
    body: body(methodName, ...params),
    headers: { 'x-keap-api-key': SIM_API_KEY },
  });
  expect(r.status).toBe(200);
  return parseMethodResponse(r.body);
}

/** What reached the simulator since the last look, `METHOD path` each, in order; then forgotten. */
function reached(h: Harness): string[] {
  const seen = h.sim.lastRequests.map((r) => `${r.method} ${r.url.split('?', 1)[0]}`);
  h.sim.resetCounters();
  return seen;
}

/** The request log line of the `n`-th call (1-based) of `method`, once written. */
function requestLine(h: Harness, method: string, n = 1): Promise<Record<string, unknown>> {
  return until(`request line ${n} of ${method}`, () =>
    h.logs.entries.filter((e) => e.event === 'request' && e.xmlrpcMethod === method).at(n - 1),
  );
}

function events(h: Harness, event: string): Record<string, unknown>[] {
  return h.logs.entries.filter((e) => e.event === event);
}

const XMLRPC = 'POST /crm/xmlrpc/v1';

describe('XMLRPC_MODE=fallback: Keap XML-RPC alive', () => {
  it('passes the call through to Keap XML-RPC, and REST is never called', async () => {
    const h = await fallback();
    const expected = await classic(h, 'ContactService.load', i(1), FIELDS);
    reached(h);
    const r = await call(h, 'ContactService.load', i(1), FIELDS);
    expect(r.status).toBe(200);
    expect(parseMethodResponse(r.body)).toEqual(expected);
    expect(reached(h)).toEqual([XMLRPC]);
    const line = await requestLine(h, 'ContactService.load');
    expect(line).toMatchObject({ status: 200, upstreamStatus: 200, attempts: 1, xmlrpcServedBy: 'keap' });
    expect(line.rest).toBeUndefined();
    expect(events(h, 'xmlrpc_endpoint_down')).toEqual([]);
    expect(await metric(h.proxy.url, 'keap_proxy_xmlrpc_calls_total', { method: 'ContactService.load' })).toBe(1);
    expect(
      await metric(h.proxy.url, 'keap_proxy_xmlrpc_calls_total', {
        method: 'ContactService.load',
        outcome: 'relayed',
      }),
    ).toBe(1);
  });
});

describe('XMLRPC_MODE=fallback: Keap XML-RPC retired (410)', () => {
  it('translates ContactService.load to the same struct; skips XML-RPC for the window; tries it again after', async () => {
    const h = await fallback();
    const expected = await classic(h, 'ContactService.load', i(1), FIELDS);
    h.sim.retireXmlRpc(true);
    reached(h);
    const start = h.clock.t;

    // 1: XML-RPC answers 410: judged down, the call translated.
    const first = await call(h, 'ContactService.load', i(1), FIELDS);
    expect(first.status).toBe(200);
    expect(first.headers['content-type']).toBe('text/xml; charset=utf-8');
    expect(parseMethodResponse(first.body)).toEqual(expected);
    expect(reached(h)).toEqual([XMLRPC, 'GET /crm/rest/v2/contacts/1']);
    expect(await requestLine(h, 'ContactService.load')).toMatchObject({
      status: 200,
      upstreamStatus: 410,
      attempts: 2,
      xmlrpcServedBy: 'translation',
      rest: 'GET /crm/rest/v2/contacts/1 200',
    });
    expect(events(h, 'xmlrpc_endpoint_down')).toEqual([
      expect.objectContaining({ level: 'warn', status: 410, until: new Date(start + DOWN_MS).toISOString() }),
    ]);

    // 2, 3: within the window, translatable calls (a write too: it never reached XML-RPC) skip it.
    h.clock.t = start + DOWN_MS - 1;
    const second = await call(h, 'ContactService.load', i(1), FIELDS);
    expect(parseMethodResponse(second.body)).toEqual(expected);
    const added = await call(h, 'ContactService.add', struct({ FirstName: 'Grace', Email: 'grace@example.com' }));
    expect(parseMethodResponse(added.body)).toEqual({ kind: 'value', value: i(2) });
    expect(reached(h)).toEqual(['GET /crm/rest/v2/contacts/1', 'POST /crm/rest/v2/contacts']);
    expect(h.sim.crm.allContacts().map((c) => c.given_name)).toEqual(['Ada', 'Grace']);
    expect(await requestLine(h, 'ContactService.load', 2)).toMatchObject({
      upstreamStatus: 200,
      attempts: 1,
      xmlrpcServedBy: 'translation',
      rest: 'GET /crm/rest/v2/contacts/1 200',
    });

    // 4: after the window the next call tries XML-RPC again; still retired: translated, no second warning.
    h.clock.t = start + DOWN_MS;
    const fourth = await call(h, 'ContactService.load', i(1), FIELDS);
    expect(parseMethodResponse(fourth.body)).toEqual(expected);
    expect(reached(h)).toEqual([XMLRPC, 'GET /crm/rest/v2/contacts/1']);
    expect(events(h, 'xmlrpc_endpoint_down').map((e) => e.level)).toEqual(['warn', 'debug']);
    expect(events(h, 'xmlrpc_endpoint_down')[1]).toMatchObject({
      until: new Date(start + 2 * DOWN_MS).toISOString(),
    });

    // 5: XML-RPC back after the next window: passed through, and its recovery logged once.
    h.sim.retireXmlRpc(false);
    h.clock.t = start + 2 * DOWN_MS;
    const fifth = await call(h, 'ContactService.load', i(1), FIELDS);
    expect(parseMethodResponse(fifth.body)).toEqual(expected);
    const sixth = await call(h, 'ContactService.load', i(1), FIELDS);
    expect(parseMethodResponse(sixth.body)).toEqual(expected);
    expect(reached(h)).toEqual([XMLRPC, XMLRPC]);
    expect(events(h, 'xmlrpc_endpoint_up')).toEqual([expect.objectContaining({ level: 'info' })]);
    expect(await requestLine(h, 'ContactService.load', 5)).toMatchObject({ xmlrpcServedBy: 'keap' });

    const byOutcome = async (outcome: string): Promise<number | undefined> =>
      metric(h.proxy.url, 'keap_proxy_xmlrpc_calls_total', { method: 'ContactService.load', outcome });
    expect([await byOutcome('translated'), await byOutcome('relayed')]).toEqual([3, 2]);
  });

  it('a call the proxy cannot translate gets Keap’s 410 as it came, and still goes to XML-RPC while it is down', async () => {
    const h = await fallback();
    h.sim.retireXmlRpc(true);
    const direct = await send(h.sim.url, 'POST', '/crm/xmlrpc/v1', {
      body: body('DataService.getAppSetting', s('Contact'), s('optiontitles')),
      headers: { 'x-keap-api-key': SIM_API_KEY },
    });
    reached(h);
    const r = await call(h, 'DataService.getAppSetting', s('Contact'), s('optiontitles'));
    expect(r.status).toBe(410);
    expect(r.headers['content-type']).toBe('application/json');
    expect(r.body).toEqual(direct.body);
    expect(reached(h)).toEqual([XMLRPC]);
    expect(await requestLine(h, 'DataService.getAppSetting')).toMatchObject({
      status: 410,
      upstreamStatus: 410,
      xmlrpcServedBy: 'keap',
    });
    // That 410 judged the endpoint down: a translatable call now skips it, an untranslatable one does not.
    expect(events(h, 'xmlrpc_endpoint_down')).toHaveLength(1);
    await call(h, 'ContactService.load', i(1), FIELDS);
    const again = await call(h, 'DataService.getAppSetting', s('Contact'), s('optiontitles'));
    expect(again.status).toBe(410);
    expect(reached(h)).toEqual(['GET /crm/rest/v2/contacts/1', XMLRPC]);
  });
});

describe('XMLRPC_MODE=fallback: brownouts and answers that are not XML-RPC', () => {
  it('a 503 brownout: ContactService.add (it did not run) is translated, the contact created once', async () => {
    const h = await fallback();
    h.sim.setXmlRpcBrownout(true, '503');
    reached(h);
    const r = await call(h, 'ContactService.add', struct({ FirstName: 'Grace', Email: 'grace@example.com' }));
    expect(parseMethodResponse(r.body)).toEqual({ kind: 'value', value: i(2) });
    expect(reached(h)).toEqual([XMLRPC, 'POST /crm/rest/v2/contacts']);
    expect(h.sim.crm.allContacts().map((c) => c.given_name)).toEqual(['Ada', 'Grace']);
    expect(await requestLine(h, 'ContactService.add')).toMatchObject({
      upstreamStatus: 503,
      xmlrpcServedBy: 'translation',
      rest: 'POST /crm/rest/v2/contacts 201',
    });
    expect(events(h, 'xmlrpc_endpoint_down')).toEqual([expect.objectContaining({ level: 'warn', status: 503 })]);
  });

  it('an HTML page with 200 (e.g. <h1>Developer Inactive</h1>) is no XML-RPC answer: translated', async () => {
    const h = await fallback();
    const expected = await classic(h, 'ContactService.findByEmail', s('ada@example.com'), a('Id', 'FirstName'));
    h.sim.route('POST', '/crm/xmlrpc/v1', (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end('<h1>Developer Inactive</h1>');
    });
    reached(h);
    const r = await call(h, 'ContactService.findByEmail', s('ada@example.com'), a('Id', 'FirstName'));
    expect(r.text()).not.toContain('Developer Inactive');
    expect(reached(h)).toEqual([XMLRPC, 'GET /crm/rest/v2/contacts']);
    expect(await requestLine(h, 'ContactService.findByEmail')).toMatchObject({
      upstreamStatus: 200,
      xmlrpcServedBy: 'translation',
    });
    expect(parseMethodResponse(r.body)).toEqual(expected);
    expect(events(h, 'xmlrpc_endpoint_down')).toEqual([expect.objectContaining({ status: 200 })]);
  });
});

describe('XMLRPC_MODE=fallback: a call Keap may have run is run again only when that is safe', () => {
  it('a timeout: a read is translated; a write (ContactService.add) is not, the client gets the timeout fault', async () => {
    const h = await fallback({ UPSTREAM_TIMEOUT_MS: '300' });
    h.sim.setXmlRpcBrownout(true, 'hang');
    reached(h);
    const start = h.clock.t;

    const read = await call(h, 'ContactService.load', i(1), FIELDS);
    expect(parseMethodResponse(read.body)).toMatchObject({ kind: 'value' });
    expect(reached(h)).toEqual([XMLRPC, 'GET /crm/rest/v2/contacts/1']);
    expect(await requestLine(h, 'ContactService.load')).toMatchObject({
      xmlrpcServedBy: 'translation',
      rest: 'GET /crm/rest/v2/contacts/1 200',
    });
    expect(events(h, 'xmlrpc_endpoint_down')).toEqual([expect.objectContaining({ level: 'warn', status: 'timeout' })]);

    // After the window, a write meets the same hang: it may still land on Keap, so it is not replayed.
    h.clock.t = start + DOWN_MS;
    const write = await call(h, 'ContactService.add', struct({ FirstName: 'Grace', Email: 'grace@example.com' }));
    expect(write.status).toBe(200);
    const fault = parseMethodResponse(write.body) as { kind: string; faultString: string };
    expect(fault.kind).toBe('fault');
    expect(fault.faultString).toContain('upstream_timeout');
    expect(reached(h)).toEqual([XMLRPC]);
    expect(h.sim.crm.allContacts().map((c) => c.given_name)).toEqual(['Ada']);
    expect(events(h, 'xmlrpc_fallback_skipped')).toEqual([
      expect.objectContaining({ xmlrpcMethod: 'ContactService.add', status: 'timeout' }),
    ]);
    expect(await requestLine(h, 'ContactService.add')).toMatchObject({ outcome: 'timeout' });

    // The same write sent again, inside the new window, never reaches XML-RPC: translated, once.
    const retried = await call(h, 'ContactService.add', struct({ FirstName: 'Grace', Email: 'grace@example.com' }));
    expect(parseMethodResponse(retried.body)).toEqual({ kind: 'value', value: i(2) });
    expect(reached(h)).toEqual(['POST /crm/rest/v2/contacts']);
  });

  it('a 500: ContactService.add gets Keap’s 500; ContactService.update (idempotent) is translated; a 502 translates only reads', async () => {
    const h = await fallback();
    let status = 500;
    h.sim.route('POST', '/crm/xmlrpc/v1', (_req, res) => {
      res.writeHead(status, { 'content-type': 'text/html' });
      res.end(`<h1>${status}</h1>`);
    });
    reached(h);
    const add = await call(h, 'ContactService.add', struct({ FirstName: 'Grace', Email: 'grace@example.com' }));
    expect(add.status).toBe(500);
    expect(add.text()).toBe('<h1>500</h1>');
    expect(reached(h)).toEqual([XMLRPC]);
    expect(h.sim.crm.allContacts()).toHaveLength(1);
    expect(await requestLine(h, 'ContactService.add')).toMatchObject({ status: 500, xmlrpcServedBy: 'keap' });

    // Every 500 retries XML-RPC only after the window: 0 ms here, so each call tries it first.
    const h0 = await fallback({ XMLRPC_FALLBACK_DOWN_MS: '0' });
    h0.sim.route('POST', '/crm/xmlrpc/v1', (_req, res) => {
      res.writeHead(status, { 'content-type': 'text/html' });
      res.end(`<h1>${status}</h1>`);
    });
    reached(h0);
    const update = await call(h0, 'ContactService.update', i(1), struct({ LastName: 'Byron' }));
    expect(parseMethodResponse(update.body)).toEqual({ kind: 'value', value: i(1) });
    expect(reached(h0)).toEqual([XMLRPC, 'GET /crm/rest/v2/contacts/1', 'PATCH /crm/rest/v2/contacts/1']);
    expect(h0.sim.crm.allContacts()[0]?.family_name).toBe('Byron');

    status = 502;
    const update502 = await call(h0, 'ContactService.update', i(1), struct({ LastName: 'King' }));
    expect(update502.status).toBe(502);
    const load502 = await call(h0, 'ContactService.load', i(1), FIELDS);
    expect(parseMethodResponse(load502.body)).toMatchObject({ kind: 'value' });
    expect(reached(h0)).toEqual([XMLRPC, XMLRPC, 'GET /crm/rest/v2/contacts/1']);
    expect(h0.sim.crm.allContacts()[0]?.family_name).toBe('Byron');
  });
});

describe('XMLRPC_MODE=fallback, key mode: the key stays out of answers and logs', () => {
  it('Keap gets the key in privateKey for the pass-through; the translation reads the app’s call', async () => {
    const h = await fallback();
    h.sim.retireXmlRpc(true);
    reached(h);
    const r = await call(h, 'ContactService.load', i(1), FIELDS);
    const notFound = await call(h, 'ContactService.load', i(99), FIELDS);
    h.clock.t += DOWN_MS;
    const update = await call(h, 'ContactService.update', i(99), struct({ LastName: 'X' }));
    // The pass-through carried the key (spliced into privateKey, and as the header); REST the header only.
    const toKeap = h.sim.lastRequests;
    expect(toKeap.map((q) => `${q.method} ${q.url}`)).toEqual([
      XMLRPC,
      'GET /crm/rest/v2/contacts/1',
      'GET /crm/rest/v2/contacts/99',
      XMLRPC,
      'GET /crm/rest/v2/contacts/99',
    ]);
    expect(toKeap[0]?.body.toString()).toContain(SIM_API_KEY);
    expect(toKeap[0]?.body.toString()).not.toContain(APP_KEY);
    for (const q of toKeap.filter((q) => q.url.startsWith('/crm/rest/'))) {
      expect(q.headers['x-keap-api-key']).toBe(SIM_API_KEY);
      expect(q.url + q.body.toString()).not.toContain(SIM_API_KEY);
    }
    for (const answer of [r, notFound, update]) {
      expect(answer.status).toBe(200);
      expect(answer.text()).not.toContain(SIM_API_KEY);
    }
    expect(parseMethodResponse(notFound.body)).toMatchObject({ kind: 'fault', faultCode: 5 });
    expect(parseMethodResponse(update.body)).toMatchObject({ kind: 'fault', faultCode: 5 });
    await requestLine(h, 'ContactService.update');
    expect(h.logs.text()).not.toContain(SIM_API_KEY);
    expect(h.logs.text()).not.toContain(APP_KEY);
  });

  it('the call a translation reads is the one the app sent, byte for byte, not the one with the key spliced in', () => {
    const sent = Buffer.from(body('ContactService.load', i(1), FIELDS));
    const ex = {
      xmlrpc: true,
      body: BufferedBody.of(sent),
      clientCall: undefined,
      clientKeyInBody: false,
      credential: { kind: 'key', key: SIM_API_KEY },
    } as unknown as Exchange;
    keepClientXmlRpcCall(ex);
    rewriteXmlRpcKey(ex);
    expect(ex.body?.whole().toString()).toContain(SIM_API_KEY);
    expect(clientXmlRpcCall(ex)).toEqual(sent);
  });
});

describe('XMLRPC_MODE=fallback: the policy and its settings', () => {
  it('judges answers: proof the call did not run, ran and over, may still run, about the request', () => {
    const cases: [number, string | undefined, string][] = [
      [200, 'text/xml;charset=UTF-8', 'xml'],
      [200, 'application/xml', 'xml'],
      [200, 'text/html', 'not_run'],
      [200, 'application/json', 'not_run'],
      [200, undefined, 'not_run'],
      [302, 'text/html', 'not_run'],
      [404, 'text/xml', 'not_run'],
      [410, 'application/json', 'not_run'],
      [503, 'application/json', 'not_run'],
      [500, 'text/xml', 'ran'],
      [502, 'text/html', 'unknown'],
      [504, 'text/html', 'unknown'],
      [400, 'text/html', 'request'],
      [401, 'application/json', 'request'],
      [429, 'application/json', 'request'],
    ];
    expect(cases.map(([status, type]) => judgeAnswer(status, type))).toEqual(cases.map((c) => c[2]));
    expect(XMLRPC_FALLBACK.downMs).toBe(DOWN_MS);
    expect(XMLRPC_FALLBACK.reads).not.toContain('ContactService.add');
    expect(XMLRPC_FALLBACK.idempotent).not.toContain('ContactService.add');
  });

  const KEY = { KEAP_API_KEY: SIM_API_KEY };

  it('XMLRPC_MODE=fallback is accepted, with XMLRPC_FALLBACK_DOWN_MS (default 300000)', () => {
    const dflt = loadConfig({ env: { ...KEY, XMLRPC_MODE: 'fallback' }, cwd: tempDir() });
    expect([dflt.accounts[0]!.xmlrpcMode, dflt.xmlrpcFallbackDownMs]).toEqual(['fallback', 300_000]);
    const set = loadConfig({ env: { ...KEY, XMLRPC_MODE: 'fallback', XMLRPC_FALLBACK_DOWN_MS: '0' }, cwd: tempDir() });
    expect(set.xmlrpcFallbackDownMs).toBe(0);
    expect(configSummary(dflt)).toMatchObject({ xmlrpcMode: 'fallback', xmlrpcFallbackDownMs: 300_000 });
  });

  it.each([
    ['XMLRPC_FALLBACK_DOWN_MS', '5m', 'XMLRPC_FALLBACK_DOWN_MS: "5m" is not a whole number from 0 to 86400000'],
    ['XMLRPC_FALLBACK_DOWN_MS', '-1', 'XMLRPC_FALLBACK_DOWN_MS: "-1" is not a whole number from 0 to 86400000'],
    [
      'XMLRPC_FALLBACK_DOWN_MS',
      '86400001',
      'XMLRPC_FALLBACK_DOWN_MS: "86400001" is not a whole number from 0 to 86400000',
    ],
    ['XMLRPC_MODE', 'fall-back', 'XMLRPC_MODE: "fall-back" is not one of passthrough, translate, fallback'],
  ])('%s=%s is refused, saying why', (name, value, message) => {
    let problems: string[] = [];
    try {
      loadConfig({ env: { ...KEY, [name]: value }, cwd: tempDir() });
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      problems = err.problems;
    }
    expect(problems).toEqual([message]);
  });
});
