// XMLRPC_MODE=translate: the same legacy calls answered by Keap's classic XML-RPC (the
// simulator's) and by the proxy's translation to REST v2 give the same answers, field for
// field; the REST calls go through the proxy's machinery and are listed on the call's log line.
import { describe, it, expect, afterEach } from 'vitest';
import { parseMethodResponse, writeMethodCall, type XmlRpcValue } from '../src/keap/xmlrpc-codec.js';
import { send, SIM_API_KEY } from './harness.js';
import { a, i, s, seedAda, translationRig } from './translation-rig.js';

const { startHarness, translating, both, runOnBoth } = translationRig(afterEach);

const FIELDS = a(
  'Id',
  'FirstName',
  'LastName',
  'Email',
  'EmailAddress2',
  'Phone1',
  'City',
  'Country',
  'Company',
  'DateCreated',
  'JobTitle',
);

describe('XMLRPC_MODE=translate, against Keap classic XML-RPC', () => {
  it('ContactService.load: the same struct, field for field; the call reaches Keap only as REST v2', async () => {
    const h = await translating();
    const xmlrpcBefore = h.sim.counters.xmlrpcCalls;
    const { keap, proxy } = await both(h, 'ContactService.load', i(1), FIELDS);
    expect(proxy).toEqual(keap);
    const members = (proxy as { value: { value: Map<string, XmlRpcValue> } }).value.value;
    expect([...members.keys()].sort()).toEqual(
      [
        'City',
        'Company',
        'Country',
        'DateCreated',
        'Email',
        'EmailAddress2',
        'FirstName',
        'Id',
        'JobTitle',
        'LastName',
        'Phone1',
      ].sort(),
    );
    expect(members.get('Id')).toEqual(i(1));
    expect(members.get('Company')).toEqual(s('Engines & Co'));
    expect(members.get('DateCreated')?.type).toBe('dateTime');
    // One XML-RPC call went to Keap: ours, directly. The proxy's went as REST.
    expect(h.sim.counters.xmlrpcCalls - xmlrpcBefore).toBe(1);
    const line = h.logs.entries.find((e) => e.event === 'request' && e.xmlrpcMethod === 'ContactService.load');
    expect(line).toMatchObject({ status: 200, rest: 'GET /crm/rest/v2/contacts/1 200' });
  });

  it('ContactService.load of a contact that does not exist: the same RecordNotFound fault', async () => {
    const h = await translating();
    const { keap, proxy } = await both(h, 'ContactService.load', i(99), FIELDS);
    expect(proxy).toEqual(keap);
    expect(proxy).toMatchObject({ kind: 'fault', faultCode: 5 });
  });

  it('ContactService.findByEmail: the same list', async () => {
    const h = await translating();
    const { keap, proxy } = await both(
      h,
      'ContactService.findByEmail',
      s('ada@example.com'),
      a('Id', 'FirstName', 'Email'),
    );
    expect(proxy).toEqual(keap);
    expect((proxy as { value: { value: unknown[] } }).value.value).toHaveLength(1);
    const none = await both(h, 'ContactService.findByEmail', s('nobody@example.com'), a('Id'));
    expect(none.proxy).toEqual(none.keap);
  });

  it('APIEmailService.getOptStatus: the same answer for an opted-in and an unknown address', async () => {
    const h = await translating();
    for (const email of ['ada@example.com', 'nobody@example.com']) {
      const { keap, proxy } = await both(h, 'APIEmailService.getOptStatus', s(email));
      expect(proxy).toEqual(keap);
    }
  });

  it('APIEmailService.optIn and optOut: the same answers and the same state afterwards', async () => {
    const script: [string, XmlRpcValue[]][] = [
      ['APIEmailService.optOut', [s('ada@example.com'), s('')]],
      ['APIEmailService.getOptStatus', [s('ada@example.com')]],
      ['APIEmailService.optIn', [s('ada@example.com'), s('')]],
      ['APIEmailService.optIn', [s('nobody@example.com'), s('')]],
      ['APIEmailService.optOut', [s('nobody@example.com'), s('why')]],
      ['APIEmailService.getOptStatus', [s('ada2@example.com')]],
    ];
    const { keap, proxy, keapSide, proxySide } = await runOnBoth(script);
    expect(proxy).toEqual(keap);
    expect(proxySide.sim.crm.emailStatus('ada@example.com')?.status).toBe(
      keapSide.sim.crm.emailStatus('ada@example.com')?.status,
    );
  });

  it('ContactService.add and update: the same ids, faults and contacts; an update merges, so a new LastName keeps the Email', async () => {
    const struct = (fields: Record<string, string>): XmlRpcValue => ({
      type: 'struct',
      value: new Map(Object.entries(fields).map(([k, v]) => [k, s(v)])),
    });
    const ALL = a('Id', 'FirstName', 'LastName', 'Email', 'EmailAddress2', 'Phone1', 'City', 'Company', 'JobTitle');
    const script: [string, XmlRpcValue[]][] = [
      ['ContactService.add', [struct({ FirstName: 'Alan', Email: 'alan@example.com', Phone1: '555-0199' })]],
      ['ContactService.update', [i(2), struct({ LastName: 'Turing' })]],
      ['ContactService.load', [i(2), ALL]],
      [
        'ContactService.update',
        [i(2), struct({ EmailAddress2: 'alan2@example.com', City: 'Wilmslow', Company: 'NPL' })],
      ],
      ['ContactService.load', [i(2), ALL]],
      ['ContactService.update', [i(2), struct({ Phone1: '' })]],
      ['ContactService.load', [i(2), ALL]],
      ['ContactService.update', [i(99), struct({ LastName: 'X' })]],
      ['ContactService.update', [i(2), struct({})]],
      ['ContactService.update', [i(2), struct({ NoSuchField: 'x' })]],
    ];
    const { keap, proxy } = await runOnBoth(script);
    expect(proxy).toEqual(keap);
    // The merge, spelled out: after the LastName update, the Email is still there.
    const afterLastName = proxy[2] as { value: { value: Map<string, XmlRpcValue> } };
    expect(afterLastName.value.value.get('LastName')).toEqual(s('Turing'));
    expect(afterLastName.value.value.get('Email')).toEqual(s('alan@example.com'));
    expect(proxy.slice(7).map((r) => (r as { faultCode: number }).faultCode)).toEqual([5, 11, 10]);
  });

  it('the documented difference: v2 refuses a contact with no email, phone or address, which XML-RPC took', async () => {
    const h = await translating();
    const noContactInfo: XmlRpcValue = { type: 'struct', value: new Map([['FirstName', s('Nobody')]]) };
    const { keap, proxy } = await both(h, 'ContactService.add', noContactInfo);
    expect(keap).toMatchObject({ kind: 'value', value: { type: 'int' } });
    expect(proxy).toMatchObject({
      kind: 'fault',
      faultCode: 12,
      faultString: expect.stringMatching(/^\[InvalidParameter\]/),
    });
  });

  it('ContactService.addToGroup and removeFromGroup: the same answers, faults and tags', async () => {
    const script: [string, XmlRpcValue[]][] = [
      ['ContactService.addToGroup', [i(1), i(1)]],
      ['ContactService.addToGroup', [i(1), i(1)]],
      ['ContactService.addToGroup', [i(1), i(2)]],
      ['ContactService.load', [i(1), a('Id', 'Groups')]],
      ['ContactService.removeFromGroup', [i(1), i(1)]],
      ['ContactService.load', [i(1), a('Id', 'Groups')]],
      ['ContactService.addToGroup', [i(1), i(404)]],
      ['ContactService.addToGroup', [i(99), i(1)]],
      ['ContactService.addToGroup', [i(99), i(404)]],
      ['ContactService.removeFromGroup', [i(1), i(404)]],
      ['ContactService.removeFromGroup', [i(99), i(1)]],
    ];
    const { keap, proxy } = await runOnBoth(script);
    expect(proxy).toEqual(keap);
    expect(proxy[3]).toMatchObject({ kind: 'value' });
    expect(proxy.slice(6).map((r) => (r as { kind: string; faultString?: string }).faultString ?? 'ok')).toEqual([
      '[RecordNotFound]Record not found for Id:404',
      '[RecordNotFound]Record not found for Id:99',
      '[RecordNotFound]Record not found for Id:99',
      'ok',
      '[RecordNotFound]Record not found for Id:99',
    ]);
  });

  it('an unknown field: the same NoFieldFound fault', async () => {
    const h = await translating();
    const { keap, proxy } = await both(h, 'ContactService.load', i(1), a('Id', 'NoSuchField'));
    expect(proxy).toEqual(keap);
    expect(proxy).toMatchObject({ kind: 'fault', faultCode: 10 });
  });

  it('a method the proxy cannot translate: a fault that names it, and nothing sent to Keap', async () => {
    const h = await translating();
    const before = { xmlrpc: h.sim.counters.xmlrpcCalls, api: h.sim.counters.apiCalls };
    const body = writeMethodCall({ methodName: 'InvoiceService.createBlankOrder', params: [s('k')] });
    const r = await send(h.proxy.url, 'POST', '/api/xmlrpc', { body });
    expect(r.status).toBe(200);
    expect(parseMethodResponse(r.body)).toMatchObject({
      kind: 'fault',
      faultCode: 3,
      faultString: expect.stringMatching(
        /^\[Unexpected\]InvoiceService\.createBlankOrder cannot be translated .*XMLRPC_MODE=passthrough.*\(keap-proxy: not_translatable\)$/,
      ),
    });
    expect(h.sim.counters.xmlrpcCalls).toBe(before.xmlrpc);
    expect(h.sim.counters.apiCalls).toBe(before.api);
  });
});

describe('translated calls go through the same machinery', () => {
  it("key mode: each REST call carries the account's key in X-Keap-API-Key, and no byte of the app's call", async () => {
    const h = await translating();
    h.sim.lastRequests.length = 0;
    const body = writeMethodCall({
      methodName: 'ContactService.update',
      params: [s('the-apps-placeholder-key'), i(1), { type: 'struct', value: new Map([['LastName', s('Byron')]]) }],
    });
    expect(parseMethodResponse((await send(h.proxy.url, 'POST', '/api/xmlrpc', { body })).body)).toEqual({
      kind: 'value',
      value: i(1),
    });
    const rest = h.sim.lastRequests;
    expect(rest.map((r) => `${r.method} ${r.url}`)).toEqual([
      'GET /crm/rest/v2/contacts/1',
      'PATCH /crm/rest/v2/contacts/1',
    ]);
    for (const r of rest) {
      expect(r.headers['x-keap-api-key']).toBe(SIM_API_KEY);
      expect(r.headers.authorization).toBeUndefined();
      expect(r.body.toString()).not.toContain('the-apps-placeholder-key');
    }
    expect(JSON.parse(rest[1]!.body.toString())).toEqual({ family_name: 'Byron' });
  });

  it("Keap's 429 on a REST call is absorbed: the call waits, is replayed, and the app sees only the answer", async () => {
    const h = await startHarness({
      mode: 'key',
      env: { XMLRPC_MODE: 'translate', LOG_LEVEL: 'info' },
      sim: { xmlrpc: 'keap' },
      overrides: {
        rateLimitReplays: {
          maxAttempts: 5,
          minDelayMs: 1,
          spike: { baseMs: 1, maxMs: 1 },
          throttle: { baseMs: 1, maxMs: 1 },
          jitter: 0,
        },
      },
    });
    seedAda(h.sim.crm);
    let throttled = 0;
    h.sim.route('GET', '/crm/rest/v2/contacts/1', (_req, res) => {
      throttled += 1;
      h.sim.unroute('GET', '/crm/rest/v2/contacts/1');
      res.writeHead(429, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify({
          fault: {
            faultstring: 'Spike arrest violation',
            detail: { errorcode: 'policies.ratelimit.SpikeArrestViolation' },
          },
        }),
      );
    });
    const body = writeMethodCall({ methodName: 'ContactService.load', params: [s('k'), i(1), a('Id', 'FirstName')] });
    const answer = parseMethodResponse((await send(h.proxy.url, 'POST', '/api/xmlrpc', { body })).body);
    expect(answer).toEqual({
      kind: 'value',
      value: {
        type: 'struct',
        value: new Map([
          ['Id', i(1)],
          ['FirstName', s('Ada')],
        ]),
      },
    });
    expect(throttled).toBe(1);
    const line = h.logs.entries.find((e) => e.event === 'request' && e.xmlrpcMethod === 'ContactService.load');
    expect(line).toMatchObject({
      status: 200,
      rest: 'GET /crm/rest/v2/contacts/1 429; GET /crm/rest/v2/contacts/1 200',
    });
  });

  it('a REST call Keap does not answer in time: the app gets a timeout fault, not a hang', async () => {
    const h = await translating(seedAda, { UPSTREAM_TIMEOUT_MS: '200' });
    h.sim.route('GET', '/crm/rest/v2/contacts/1', () => {
      // never answers
    });
    const body = writeMethodCall({ methodName: 'ContactService.load', params: [s('k'), i(1), a('Id')] });
    const r = await send(h.proxy.url, 'POST', '/api/xmlrpc', { body });
    expect(r.status).toBe(200);
    expect(parseMethodResponse(r.body)).toMatchObject({
      kind: 'fault',
      faultCode: 3,
      faultString: expect.stringMatching(/^\[Unexpected\].*\(keap-proxy: upstream_timeout\)$/),
    });
  });

  it("Keap's token 401 on a REST call: one refresh, the call replayed, the client sees only the answer", async () => {
    const h = await startHarness({
      mode: 'oauth',
      env: { XMLRPC_MODE: 'translate', LOG_LEVEL: 'info' },
      sim: { xmlrpc: 'keap' },
    });
    h.sim.crm.createContact({
      given_name: 'Grace',
      email_addresses: [{ email: 'grace@example.com', field: 'EMAIL1' }],
      phone_numbers: [],
      fax_numbers: [],
      addresses: [],
      custom_fields: [],
    });
    const body = writeMethodCall({ methodName: 'ContactService.load', params: [s('k'), i(1), a('Id', 'FirstName')] });
    expect(parseMethodResponse((await send(h.proxy.url, 'POST', '/api/xmlrpc', { body })).body)).toMatchObject({
      kind: 'value',
    });
    const refreshes = h.sim.counters.refreshGrants;
    h.sim.expireAccessTokens();
    const r = await send(h.proxy.url, 'POST', '/api/xmlrpc', { body });
    const answer = parseMethodResponse(r.body);
    expect(answer).toMatchObject({ kind: 'value' });
    expect(h.sim.counters.refreshGrants - refreshes).toBe(1);
    const lines = h.logs.entries.filter((e) => e.event === 'request' && e.xmlrpcMethod === 'ContactService.load');
    expect(lines.at(-1)).toMatchObject({
      status: 200,
      attempts: 2,
      rest: 'GET /crm/rest/v2/contacts/1 401; GET /crm/rest/v2/contacts/1 200',
    });
  });

  it('with pacing on, each REST call of a translated call takes a turn', async () => {
    const h = await startHarness({
      mode: 'key',
      env: { XMLRPC_MODE: 'translate', RATE_LIMIT_PER_SECOND: '1000', LOG_LEVEL: 'info' },
      sim: { xmlrpc: 'keap' },
    });
    const body = writeMethodCall({
      methodName: 'ContactService.findByEmail',
      params: [s('k'), s('x@example.com'), a('Id')],
    });
    expect(parseMethodResponse((await send(h.proxy.url, 'POST', '/api/xmlrpc', { body })).body)).toEqual({
      kind: 'value',
      value: { type: 'array', value: [] },
    });
    const metrics = (await send(h.proxy.url, 'GET', '/metrics')).text();
    // One REST call, one turn in the queue (the XML-RPC call itself takes none).
    expect(metrics).toMatch(/keap_proxy_queue_wait_seconds_count\{account="default",tenant="key"\} 1\n/);
  });
});
