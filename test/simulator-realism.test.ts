// The simulator as Keap's users meet it: REST v1 contacts over the same store as REST v2, the
// empty quota headers of a 401, scalar or pipe-separated tenant headers, the second 429 body,
// and one revoked access token (see /work/shared/keap-api-notes.md).
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { KeapSimulator, PLAIN_THROTTLE_BODY, SIM_API_KEY, SIM_TENANT_ID } from './simulator/keap-simulator.js';
import { send, type Reply } from './harness.js';

let sim: KeapSimulator;

beforeAll(async () => {
  sim = await KeapSimulator.start();
});
afterAll(async () => {
  await sim.close();
});
beforeEach(() => {
  sim.crm.reset();
  sim.resetQuotas();
  sim.setTenantHeaders('pipe');
  sim.setThrottleBody('apigee');
  sim.setEmptyQuotaHeadersOn401(true);
  sim.setRatePerSecond(0);
  sim.setMinuteQuota(null);
});

const KEY = { 'x-keap-api-key': SIM_API_KEY };

function call(method: string, path: string, body?: unknown, headers: Record<string, string> = KEY): Promise<Reply> {
  return send(sim.url, method, path, {
    headers: { ...headers, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
  });
}

const v1 = (method: string, path: string, body?: unknown): Promise<Reply> => call(method, `/crm/rest/v1${path}`, body);

interface V1Contact {
  id: number;
  given_name?: string;
  family_name?: string;
  email_addresses: { email: string; field: string }[];
  [k: string]: unknown;
}

const person = (given: string, email: string) => ({
  given_name: given,
  family_name: 'Hopper',
  email_addresses: [{ email, field: 'EMAIL1' }],
});

describe('REST v1 contacts', () => {
  it('create, read, update, delete: numeric ids, v1 field names, 201/200/200/204, then 404', async () => {
    const created = await v1('POST', '/contacts', person('Grace', 'grace@example.com'));
    expect(created.status).toBe(201);
    const c = created.json<V1Contact>();
    expect(c).toMatchObject({
      id: 1,
      given_name: 'Grace',
      family_name: 'Hopper',
      email_addresses: [{ email: 'grace@example.com', field: 'EMAIL1' }],
      tag_ids: [],
    });
    expect(typeof c.date_created).toBe('string');
    expect(c.last_updated).toBe(c.date_created);
    expect(c).not.toHaveProperty('create_time');

    const read = await v1('GET', '/contacts/1');
    expect(read.status).toBe(200);
    expect(read.json()).toEqual(c);

    const patched = await v1('PATCH', '/contacts/1', { family_name: 'Murray', unknown_thing: 1 });
    expect(patched.status).toBe(200);
    // Only what was sent changes; a property v1 does not know is ignored.
    expect(patched.json<V1Contact>()).toMatchObject({
      id: 1,
      given_name: 'Grace',
      family_name: 'Murray',
      email_addresses: [{ email: 'grace@example.com', field: 'EMAIL1' }],
    });
    expect((await v1('GET', '/contacts/1')).json<V1Contact>().family_name).toBe('Murray');

    const deleted = await v1('DELETE', '/contacts/1');
    expect(deleted.status).toBe(204);
    expect(deleted.body.length).toBe(0);
    const gone = await v1('GET', '/contacts/1');
    expect(gone.status).toBe(404);
    expect(gone.json()).toEqual({ message: 'Contact with id 1 not found' });
    expect((await v1('PATCH', '/contacts/1', { given_name: 'x' })).status).toBe(404);
    expect((await v1('DELETE', '/contacts/1')).status).toBe(404);
    expect((await v1('GET', '/contacts/abc')).status).toBe(404);
  });

  it('refuses a contact without an email address or phone number, and a body that is not JSON', async () => {
    const none = await v1('POST', '/contacts', { given_name: 'Nobody' });
    expect(none.status).toBe(400);
    expect(none.json()).toEqual({
      message: 'Contact must contain at least one item in email_addresses or phone_numbers',
    });
    expect((await v1('POST', '/contacts', '{not json')).status).toBe(400);
    const phone = await v1('POST', '/contacts', { phone_numbers: [{ number: '555-0101', field: 'PHONE1' }] });
    expect(phone.status).toBe(201);
    expect(sim.crm.allContacts()).toHaveLength(1);
  });

  it('lists with limit and offset: count is every contact, next and previous link the pages', async () => {
    for (const name of ['a', 'b', 'c', 'd', 'e']) await v1('POST', '/contacts', person(name, `${name}@example.com`));
    const all = await v1('GET', '/contacts');
    expect(all.status).toBe(200);
    const body = all.json<{ contacts: V1Contact[]; count: number }>();
    expect(body.count).toBe(5);
    expect(body.contacts.map((c) => c.id)).toEqual([1, 2, 3, 4, 5]);

    const page = (await v1('GET', '/contacts?limit=2&offset=2')).json<{
      contacts: V1Contact[];
      count: number;
      next: string;
      previous: string;
    }>();
    expect(page.contacts.map((c) => c.given_name)).toEqual(['c', 'd']);
    expect(page.count).toBe(5);
    expect(page.next).toBe(`${sim.url}/crm/rest/v1/contacts/?limit=2&offset=4`);
    expect(page.previous).toBe(`${sim.url}/crm/rest/v1/contacts/?limit=2&offset=0`);
    // Keap's own links end the path in a slash: they are followed as they are.
    const next = (await call('GET', new URL(page.next).pathname + new URL(page.next).search)).json<{
      contacts: V1Contact[];
    }>();
    expect(next.contacts.map((c) => c.given_name)).toEqual(['e']);

    const byEmail = (await v1('GET', '/contacts?email=B%40EXAMPLE.com')).json<{
      contacts: V1Contact[];
      count: number;
    }>();
    expect(byEmail).toMatchObject({ count: 1, contacts: [{ id: 2 }] });
    expect((await v1('GET', '/contacts?limit=1001')).status).toBe(400);
  });

  it('shares the store with REST v2: created in v1, read and changed in v2, deleted in v1', async () => {
    const c = (await v1('POST', '/contacts', person('Grace', 'grace@example.com'))).json<V1Contact>();
    const inV2 = await call('GET', `/crm/rest/v2/contacts/${c.id}`);
    expect(inV2.status).toBe(200);
    expect(inV2.json()).toMatchObject({ id: String(c.id), given_name: 'Grace' });
    expect((await call('PATCH', `/crm/rest/v2/contacts/${c.id}`, { given_name: 'Amazing Grace' })).status).toBe(200);
    expect((await v1('GET', `/contacts/${c.id}`)).json<V1Contact>().given_name).toBe('Amazing Grace');
    expect((await v1('DELETE', `/contacts/${c.id}`)).status).toBe(204);
    expect((await call('GET', `/crm/rest/v2/contacts/${c.id}`)).status).toBe(404);
  });

  it('needs Apigee authentication like every API path', async () => {
    const r = await call('POST', '/crm/rest/v1/contacts', person('x', 'x@example.com'), {});
    expect(r.status).toBe(401);
    expect(sim.crm.allContacts()).toHaveLength(0);
  });
});

/** Every x-keap-* header of a reply, by name. */
function keapHeaders(r: Reply): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(r.headers)) if (k.startsWith('x-keap-')) out[k] = String(v);
  return out;
}

describe('quota headers', () => {
  it('a 401 carries every quota header, empty (the tenant throttle ones `|`)', async () => {
    const ok = keapHeaders(await v1('GET', '/contacts'));
    const r = await call('GET', '/crm/rest/v1/contacts', undefined, {});
    expect(r.status).toBe(401);
    const empty = keapHeaders(r);
    // The same headers a 200 has, every one of them without a value.
    expect(Object.keys(empty).sort()).toEqual(Object.keys(ok).sort());
    for (const [name, value] of Object.entries(empty))
      expect([name, value]).toEqual([name, name.startsWith('x-keap-tenant-throttle-') ? '|' : '']);
    // A revoked token and a gateway fault are the same gateway's 401s.
    expect(keapHeaders(await v1('GET', '/__fault'))).toEqual(empty);
  });

  it('a 401 without quota headers when switched off', async () => {
    sim.setEmptyQuotaHeadersOn401(false);
    expect(keapHeaders(await call('GET', '/crm/rest/v1/contacts', undefined, {}))).toEqual({});
  });

  it('tenant windows scalar: the minute window alone; pipe-separated: both', async () => {
    const pipe = keapHeaders(await v1('GET', '/contacts'));
    expect(pipe['x-keap-tenant-throttle-limit']).toBe('10000|250000');
    expect(pipe['x-keap-tenant-throttle-time-unit']).toBe('minute|day');
    sim.setTenantHeaders('scalar');
    const scalar = keapHeaders(await v1('GET', '/contacts'));
    expect(scalar).toMatchObject({
      'x-keap-tenant-id': SIM_TENANT_ID,
      'x-keap-tenant-throttle-limit': '10000',
      'x-keap-tenant-throttle-time-unit': 'minute',
      'x-keap-tenant-throttle-interval': '1',
      'x-keap-tenant-throttle-used': '2',
      'x-keap-tenant-throttle-available': '9998',
    });
    // A 401's tenant headers are then empty, not `|`.
    const unauthenticated = keapHeaders(await call('GET', '/crm/rest/v1/contacts', undefined, {}));
    expect(unauthenticated['x-keap-tenant-throttle-limit']).toBe('');
  });
});

describe('429 bodies', () => {
  it("'plain': the other body Keap's users have seen, for spike arrest and quota alike, quota headers kept", async () => {
    sim.setThrottleBody('plain');
    sim.setMinuteQuota(1);
    expect((await v1('GET', '/contacts')).status).toBe(200);
    const quota = await v1('GET', '/contacts');
    expect(quota.status).toBe(429);
    expect(quota.body).toEqual(PLAIN_THROTTLE_BODY);
    expect(quota.json()).toEqual({ code: '429', message: 'Quota Exceeded', status: 'Request Throttled' });
    expect(quota.headers['x-keap-product-throttle-available']).toBe('0');
    sim.setMinuteQuota(null);
    sim.setRatePerSecond(1);
    await v1('GET', '/contacts');
    const spike = await v1('GET', '/contacts');
    expect(spike.status).toBe(429);
    expect(spike.body).toEqual(PLAIN_THROTTLE_BODY);
  });
});

describe('one revoked access token', () => {
  it('answers access_token_not_approved for it alone; the app and its other tokens stay good', async () => {
    const revoked = sim.issueAccessToken();
    const other = sim.issueAccessToken();
    sim.revokeAccessToken(revoked);
    const r = await call('GET', '/crm/rest/v1/contacts', undefined, { authorization: `Bearer ${revoked}` });
    expect(r.status).toBe(401);
    expect(r.json()).toEqual({
      fault: {
        faultstring: 'Access Token not approved',
        detail: { errorcode: 'keymanagement.service.access_token_not_approved' },
      },
    });
    expect(r.headers['x-keap-product-quota-available']).toBe('');
    const fine = await call('GET', '/crm/rest/v1/contacts', undefined, { authorization: `Bearer ${other}` });
    expect(fine.status).toBe(200);
  });
});
