// The simulator's stateful CRM over real HTTP: REST v2 contacts, tags, email opt status and the
// contact model; the classic XML-RPC methods over the same store; the XML-RPC retirement and
// brownout switches.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { KeapSimulator, SIM_API_KEY } from './simulator/keap-simulator.js';
import { RpcDateTime, parseMethodResponse } from './simulator/xml.js';
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
});

const KEY = { 'x-keap-api-key': SIM_API_KEY };
const V2 = '/crm/rest/v2';

function v2(method: string, path: string, body?: unknown): Promise<Reply> {
  return send(sim.url, method, `${V2}${path}`, {
    headers: { ...KEY, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
  });
}

interface Contact {
  id: string;
  email_addresses: { email: string }[];
  [k: string]: unknown;
}

const ada = {
  given_name: 'Ada',
  family_name: 'Lovelace',
  email_addresses: [{ email: 'ada@example.com', field: 'EMAIL1' }],
};

async function create(body: unknown = ada): Promise<Contact> {
  const r = await v2('POST', '/contacts', body);
  expect(r.status).toBe(201);
  return r.json();
}

describe('REST v2 contacts', () => {
  it('creates with increasing string ids, reads back, 404s the absent, needs Apigee auth', async () => {
    const a = await create();
    expect(a).toMatchObject({
      id: '1',
      given_name: 'Ada',
      family_name: 'Lovelace',
      email_addresses: [
        { email: 'ada@example.com', field: 'EMAIL1', email_opt_status: 'NON_MARKETABLE', is_opt_in: false },
      ],
      tag_ids: [],
    });
    expect(a.create_time).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    const b = await create({ phone_numbers: [{ number: '555-0101', field: 'PHONE1', type: 'Mobile' }] });
    expect(b.id).toBe('2');

    const got = await v2('GET', '/contacts/1');
    expect(got.status).toBe(200);
    expect(got.headers['x-keap-product-quota-limit']).toBe('30000');
    expect(got.json()).toEqual(a);

    const missing = await v2('GET', '/contacts/99');
    expect(missing.status).toBe(404);
    expect(missing.json()).toMatchObject({ code: 404, status: 'NOT_FOUND' });

    const anon = await send(sim.url, 'GET', `${V2}/contacts/1`);
    expect(anon.status).toBe(401);
    expect(anon.json()).toMatchObject({ fault: { detail: { errorcode: 'oauth.v2.InvalidAccessToken' } } });
  });

  it('refuses a contact with no email, phone or address, and a region without country_code', async () => {
    const r = await v2('POST', '/contacts', { given_name: 'Nobody' });
    expect(r.status).toBe(400);
    expect(r.json()).toMatchObject({ code: 400, status: 'INVALID_ARGUMENT' });
    expect(r.json<{ message: string }>().message).toContain('email_addresses');
    const region = await v2('POST', '/contacts', { addresses: [{ field: 'BILLING', region: 'Arizona' }] });
    expect(region.status).toBe(400);
    expect((await v2('POST', '/contacts', '{not json')).status).toBe(400);
    expect(sim.crm.contacts.size).toBe(0);
  });

  it('fields= narrows the answer (id always kept)', async () => {
    await create();
    const r = await v2('GET', '/contacts/1?fields=given_name,email_addresses');
    expect(r.json()).toEqual({
      id: '1',
      given_name: 'Ada',
      email_addresses: [
        { email: 'ada@example.com', field: 'EMAIL1', email_opt_status: 'NON_MARKETABLE', is_opt_in: false },
      ],
    });
  });

  it('PATCH replaces arrays whole, leaves the rest, honours update_mask; DELETE answers 204 then 404', async () => {
    await create({
      ...ada,
      email_addresses: [
        { email: 'ada@example.com', field: 'EMAIL1' },
        { email: 'ada2@example.com', field: 'EMAIL2' },
      ],
      phone_numbers: [{ number: '555-0101', field: 'PHONE1' }],
    });
    const p = await v2('PATCH', '/contacts/1', { email_addresses: [{ email: 'new@example.com', field: 'EMAIL1' }] });
    expect(p.status).toBe(200);
    const body = p.json<Contact>();
    expect(body.email_addresses.map((e) => e.email)).toEqual(['new@example.com']);
    expect(body.phone_numbers).toEqual([{ number: '555-0101', field: 'PHONE1' }]);
    expect(body.given_name).toBe('Ada');

    const masked = await v2('PATCH', '/contacts/1?update_mask=family_name', { given_name: 'X', family_name: 'King' });
    expect(masked.json()).toMatchObject({ given_name: 'Ada', family_name: 'King' });
    expect((await v2('PATCH', '/contacts/1', { nonsense: 1 })).status).toBe(400);
    expect((await v2('PATCH', '/contacts/9', { given_name: 'x' })).status).toBe(404);

    const d = await v2('DELETE', '/contacts/1');
    expect(d.status).toBe(204);
    expect(d.body.length).toBe(0);
    expect((await v2('DELETE', '/contacts/1')).status).toBe(404);
    expect((await v2('GET', '/contacts/1')).status).toBe(404);
  });

  it('lists with filter (==, prefix *, ;), order_by, page_size and page_token', async () => {
    await create();
    await create({
      given_name: 'Alan',
      family_name: 'Turing',
      email_addresses: [{ email: 'alan@example.com', field: 'EMAIL1' }],
    });
    await create({
      given_name: 'Grace',
      family_name: 'Hopper',
      email_addresses: [
        { email: 'grace@navy.mil', field: 'EMAIL1' },
        { email: 'ALAN@example.com', field: 'EMAIL3' },
      ],
    });
    const ids = async (q: string) =>
      (await v2('GET', `/contacts?${q}`)).json<{ contacts: { id: string }[] }>().contacts.map((c) => c.id);

    expect(await ids(`filter=${encodeURIComponent('email==alan@example.com')}`)).toEqual(['2', '3']);
    expect(await ids(`filter=${encodeURIComponent('given_name==A*')}`)).toEqual(['1', '2']);
    expect(await ids(`filter=${encodeURIComponent('given_name==A*;family_name==Turing')}`)).toEqual(['2']);
    expect(await ids(`filter=${encodeURIComponent('family_name==Hopper')}`)).toEqual(['3']);
    expect(await ids(`filter=${encodeURIComponent('contact_id>1')}`)).toEqual(['2', '3']);
    expect(await ids(`filter=${encodeURIComponent('ids==1,3')}`)).toEqual(['1', '3']);
    expect(await ids('order_by=id%20desc')).toEqual(['3', '2', '1']);
    expect((await v2('GET', `/contacts?filter=${encodeURIComponent('shoe==1')}`)).status).toBe(400);

    const p1 = (await v2('GET', '/contacts?page_size=2')).json<{
      contacts: { id: string }[];
      next_page_token: string;
    }>();
    expect(p1.contacts.map((c) => c.id)).toEqual(['1', '2']);
    expect(p1.next_page_token).not.toBe('');
    const p2 = (await v2('GET', `/contacts?page_size=2&page_token=${encodeURIComponent(p1.next_page_token)}`)).json<{
      contacts: { id: string }[];
      next_page_token: string;
    }>();
    expect(p2.contacts.map((c) => c.id)).toEqual(['3']);
    expect(p2.next_page_token).toBe('');
  });

  it('serves the contact model with configurable custom fields, and filters on them', async () => {
    const m = (await v2('GET', '/contacts/model')).json<{ custom_fields: Record<string, unknown>[] }>();
    expect(m.custom_fields).toEqual([
      expect.objectContaining({ id: '6', field_name: 'FavouriteColour', field_type: 'TEXT', record_type: 'CONTACT' }),
      expect.objectContaining({ id: '8', field_name: 'ShoeSize', field_type: 'WHOLE_NUMBER' }),
    ]);
    sim.crm.customFields.push({ id: '10', label: 'Pet', field_name: 'Pet', field_type: 'TEXT' });
    expect((await v2('GET', '/contacts/model')).json<{ custom_fields: unknown[] }>().custom_fields).toHaveLength(3);

    await create({
      ...ada,
      custom_fields: [
        { id: '8', content: 42 },
        { id: '10', content: 'Cat' },
      ],
    });
    await create({ ...ada, custom_fields: [{ id: '8', content: 38 }] });
    const list = (q: string) =>
      v2('GET', `/contacts?filter=${encodeURIComponent(q)}`).then((r) =>
        r.json<{ contacts: { id: string }[] }>().contacts.map((c) => c.id),
      );
    expect(await list('ShoeSize>40')).toEqual(['1']);
    expect(await list('pet==ca*')).toEqual(['1']);
    expect((await v2('POST', '/contacts', { ...ada, custom_fields: [{ id: '999', content: 1 }] })).status).toBe(400);
  });
});

describe('REST v2 tags', () => {
  it('lists tags, applies and removes them, and lists a contact\u2019s tags', async () => {
    const tags = (await v2('GET', '/tags')).json<{ tags: Record<string, unknown>[]; next_page_token: string }>();
    expect(tags.tags).toEqual([
      expect.objectContaining({ id: '1', name: 'Customer', category: { id: '10' } }),
      expect.objectContaining({ id: '2', name: 'Lead' }),
    ]);
    expect(tags.next_page_token).toBe('');
    expect(
      (await v2('GET', `/tags?filter=${encodeURIComponent('name==Lea*')}`)).json<{ tags: unknown[] }>().tags,
    ).toHaveLength(1);

    await create();
    const applied = await v2('POST', '/tags/2/contacts:applyTags', { contact_ids: ['1', '77'] });
    expect(applied.status).toBe(200);
    expect(applied.json()).toEqual({ results: { '1': 'SUCCESS', '77': 'CONTACT_NOT_FOUND' } });
    expect((await v2('POST', '/tags/2/contacts:applyTags', { contact_ids: ['1'] })).json()).toEqual({
      results: { '1': 'DUPLICATE' },
    });
    expect((await v2('POST', '/tags/99/contacts:applyTags', { contact_ids: ['1'] })).status).toBe(404);
    expect((await v2('POST', '/tags/2/contacts:applyTags', { contact_ids: [] })).status).toBe(400);

    const mine = (await v2('GET', '/contacts/1/tags')).json<{
      tags: { tag: { id: string }; applied_time: string }[];
    }>();
    expect(mine.tags.map((t) => t.tag.id)).toEqual(['2']);
    expect(mine.tags[0]!.applied_time).toMatch(/Z$/);
    expect((await v2('GET', '/contacts/1')).json()).toMatchObject({ tag_ids: ['2'] });
    expect((await v2('GET', '/tags/2/contacts')).json()).toMatchObject({
      contacts: [{ id: '1', email: 'ada@example.com' }],
    });
    expect((await v2('GET', '/contacts/5/tags')).status).toBe(404);

    const removed = await v2('POST', '/tags/2/contacts:removeTags', { contact_ids: ['1'] });
    expect(removed.status).toBe(204);
    expect((await v2('GET', '/contacts/1/tags')).json()).toEqual({ tags: [], next_page_token: '' });
  });
});

describe('REST v2 tag categories, tag creation and contacts:merge', () => {
  it('lists and reads tag categories (the default tags\u2019 category 10 is one), creates tags and categories', async () => {
    const list = (await v2('GET', '/tags/categories')).json<{ tag_categories: Record<string, unknown>[] }>();
    expect(list).toEqual({
      tag_categories: [
        expect.objectContaining({ id: '10', name: 'Customer Lifecycle', create_time: expect.any(String) }),
      ],
      next_page_token: '',
    });
    expect((await v2('GET', '/tags/categories/10')).json()).toMatchObject({ id: '10', name: 'Customer Lifecycle' });
    expect((await v2('GET', '/tags/categories/99')).status).toBe(404);
    const made = await v2('POST', '/tags/categories', { name: 'Interests' });
    expect(made.status).toBe(201);
    expect(made.json()).toMatchObject({ id: '11', name: 'Interests', description: '' });
    expect((await v2('POST', '/tags/categories', { name: 'interests' })).status).toBe(409);
    expect((await v2('POST', '/tags/categories', {})).status).toBe(400);
    const page1 = (await v2('GET', '/tags/categories?page_size=1')).json<{
      tag_categories: { id: string }[];
      next_page_token: string;
    }>();
    expect(page1.tag_categories.map((c) => c.id)).toEqual(['10']);
    const page2 = (await v2('GET', `/tags/categories?page_size=1&page_token=${page1.next_page_token}`)).json<{
      tag_categories: { id: string }[];
    }>();
    expect(page2.tag_categories.map((c) => c.id)).toEqual(['11']);
    expect(
      (await v2('GET', `/tags/categories?filter=${encodeURIComponent('description==NONE')}`))
        .json<{ tag_categories: { id: string }[] }>()
        .tag_categories.map((c) => c.id),
    ).toEqual(['11']);

    const tag = await v2('POST', '/tags', { name: 'Golf', description: 'Plays golf', category: { id: '11' } });
    expect(tag.status).toBe(201);
    expect(tag.json()).toMatchObject({ id: '3', name: 'Golf', category: { id: '11' } });
    expect((await v2('POST', '/tags', { name: 'X', category: { id: '99' } })).status).toBe(400);
    expect((await v2('POST', '/tags', { description: 'no name' })).status).toBe(400);
  });

  it('merges a duplicate into the kept contact: empty fields filled, tags united, the duplicate deleted', async () => {
    await create({
      given_name: 'Ada',
      email_addresses: [{ email: 'ada@example.com', field: 'EMAIL1' }],
    });
    await create({
      given_name: 'Augusta',
      family_name: 'King',
      email_addresses: [
        { email: 'augusta@example.com', field: 'EMAIL1' },
        { email: 'ak@example.com', field: 'EMAIL2' },
      ],
      phone_numbers: [{ number: '555-0101', field: 'PHONE1' }],
    });
    await v2('POST', '/tags/1/contacts:applyTags', { contact_ids: ['1'] });
    await v2('POST', '/tags/2/contacts:applyTags', { contact_ids: ['2'] });
    const merged = await v2('POST', '/contacts:merge', { contact_id: '1', duplicate_contact_id: '2' });
    expect(merged.status).toBe(200);
    expect(merged.json()).toMatchObject({
      id: '1',
      given_name: 'Ada',
      family_name: 'King',
      email_addresses: [
        expect.objectContaining({ email: 'ada@example.com', field: 'EMAIL1' }),
        expect.objectContaining({ email: 'ak@example.com', field: 'EMAIL2' }),
      ],
      phone_numbers: [{ number: '555-0101', field: 'PHONE1' }],
      tag_ids: ['1', '2'],
    });
    expect((await v2('GET', '/contacts/2')).status).toBe(404);
    expect((await v2('POST', '/contacts:merge', { contact_id: '1', duplicate_contact_id: '2' })).status).toBe(404);
    expect((await v2('POST', '/contacts:merge', { contact_id: '1', duplicate_contact_id: '1' })).status).toBe(400);
    expect((await v2('POST', '/contacts:merge', { contact_id: '1' })).status).toBe(400);
  });
});

describe('REST v2 email opt status', () => {
  it('reads and changes an address\u2019s status as the spec describes', async () => {
    await create();
    const enc = encodeURIComponent('ada@example.com');
    const s0 = await v2('GET', `/emailAddresses/${enc}/status`);
    expect(s0.status).toBe(200);
    expect(s0.json()).toMatchObject({ email: 'ada@example.com', opted_in: false, status: 'NON_MARKETABLE' });

    const on = await v2('PATCH', `/emailAddresses/${enc}/status`, { opted_in: true, reason: 'Signed up' });
    expect(on.json()).toMatchObject({ opted_in: true, status: 'SINGLE_OPT_IN' });
    const off = await v2('PATCH', `/emailAddresses/${enc}/status`, { opted_in: false, reason: 'Asked' });
    expect(off.json()).toMatchObject({ opted_in: false, status: 'MANUAL' });
    // Opt-Out: Manual is one of the statuses an opt-in may move.
    expect(
      (await v2('PATCH', `/emailAddresses/${enc}/status`, { opted_in: true, reason: 'Back' })).json(),
    ).toMatchObject({
      opted_in: true,
    });
    sim.crm.emailStatus('ada@example.com')!.status = 'LIST_UNSUBSCRIBE';
    expect((await v2('PATCH', `/emailAddresses/${enc}/status`, { opted_in: true, reason: 'x' })).json()).toMatchObject({
      opted_in: false,
      status: 'LIST_UNSUBSCRIBE',
    });

    expect((await v2('PATCH', `/emailAddresses/${enc}/status`, { opted_in: true })).status).toBe(400);
    expect((await v2('GET', '/emailAddresses/nobody%40example.com/status')).status).toBe(404);
    // An opt_in_reason on create opts the address in.
    const b = await create({ email_addresses: [{ email: 'b@example.com', field: 'EMAIL1', opt_in_reason: 'Form' }] });
    expect(b.email_addresses[0]).toMatchObject({ is_opt_in: true, email_opt_status: 'SINGLE_OPT_IN' });
  });
});

// ---------------------------------------------------------------- classic XML-RPC

type Arg = string | number | boolean | Arg[] | { [k: string]: Arg } | RpcDateTime;

function enc(v: Arg): string {
  if (typeof v === 'string') return `<value><string>${v.replace(/&/g, '&amp;').replace(/</g, '&lt;')}</string></value>`;
  if (typeof v === 'number') return `<value><int>${v}</int></value>`;
  if (typeof v === 'boolean') return `<value><boolean>${v ? 1 : 0}</boolean></value>`;
  if (v instanceof RpcDateTime) return `<value><dateTime.iso8601>${v.text}</dateTime.iso8601></value>`;
  if (Array.isArray(v)) return `<value><array><data>${v.map(enc).join('')}</data></array></value>`;
  return `<value><struct>${Object.entries(v)
    .map(([k, m]) => `<member><name>${k}</name>${enc(m)}</member>`)
    .join('')}</struct></value>`;
}

async function rpcRaw(method: string, ...args: Arg[]): Promise<Reply> {
  const body =
    `<?xml version="1.0"?><methodCall><methodName>${method}</methodName><params>` +
    ['placeholder', ...args].map((a) => `<param>${enc(a)}</param>`).join('') +
    '</params></methodCall>';
  return send(sim.url, 'POST', '/crm/xmlrpc/v1', { headers: { ...KEY, 'content-type': 'text/xml' }, body });
}

// A decoded XML-RPC value, read by the test and checked with expect(): typing it would say nothing.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
async function rpc(method: string, ...args: Arg[]): Promise<any> {
  const r = await rpcRaw(method, ...args);
  expect(r.status).toBe(200);
  expect(r.headers['content-type']).toContain('text/xml');
  const parsed = parseMethodResponse(r.text());
  if (parsed.fault) throw new Error(`fault ${parsed.fault.code}: ${parsed.fault.string}`);
  return parsed.value;
}

async function rpcFault(method: string, ...args: Arg[]): Promise<{ code: number; string: string }> {
  const r = await rpcRaw(method, ...args);
  expect(r.status).toBe(200);
  const parsed = parseMethodResponse(r.text());
  if (!parsed.fault) throw new Error(`expected a fault, got ${r.text()}`);
  return parsed.fault;
}

describe('classic XML-RPC over the same store', () => {
  beforeEach(() => sim.setXmlRpcMode('keap'));
  afterAll(() => sim.setXmlRpcMode('echo'));

  it('ContactService.add/load/update with Keap value types; v2 reads what XML-RPC wrote', async () => {
    const add = await rpcRaw('ContactService.add', {
      FirstName: 'Severus',
      LastName: 'Snape',
      Email: 'sev@hogwarts.edu',
    });
    expect(add.text()).toBe(
      '<?xml version="1.0" encoding="utf-8"?><methodResponse><params><param><value><i4>1</i4></value></param></params></methodResponse>',
    );
    // XML-RPC takes a name-only contact (v2 would refuse it).
    expect(await rpc('ContactService.add', { FirstName: 'Nameonly' })).toBe(2);

    const load = await rpcRaw('ContactService.load', 1, ['Id', 'FirstName', 'LastName', 'Email', 'Company']);
    expect(load.text()).toBe(
      '<?xml version="1.0" encoding="utf-8"?><methodResponse><params><param><value><struct>' +
        '<member><name>Id</name><value><i4>1</i4></value></member>' +
        '<member><name>FirstName</name><value>Severus</value></member>' +
        '<member><name>LastName</name><value>Snape</value></member>' +
        '<member><name>Email</name><value>sev@hogwarts.edu</value></member>' +
        '</struct></value></param></params></methodResponse>',
    );

    const v = (await v2('GET', '/contacts/1')).json<Contact>();
    expect(v).toMatchObject({ id: '1', given_name: 'Severus', family_name: 'Snape' });
    expect(v.email_addresses).toEqual([expect.objectContaining({ email: 'sev@hogwarts.edu', field: 'EMAIL1' })]);

    expect(
      await rpc('ContactService.update', 1, {
        Phone1: '555-0100',
        Phone1Type: 'Work',
        City: 'Hogsmeade',
        _ShoeSize: 44,
        Birthday: new RpcDateTime('19600109T00:00:00'),
      }),
    ).toBe(1);
    const after = (await v2('GET', '/contacts/1')).json<Contact>();
    expect(after).toMatchObject({
      phone_numbers: [{ number: '555-0100', field: 'PHONE1', type: 'Work' }],
      addresses: [{ field: 'BILLING', locality: 'Hogsmeade' }],
      custom_fields: [{ id: '8', content: 44 }],
      birth_date: '1960-01-09',
    });
    const l2 = await rpc('ContactService.load', 1, ['_ShoeSize', 'Birthday', 'DateCreated', 'Phone1']);
    expect(l2._ShoeSize).toBe(44);
    expect(l2.Birthday).toEqual(new RpcDateTime('19600109T00:00:00'));
    expect(l2.DateCreated).toBeInstanceOf(RpcDateTime);
    expect(l2.Phone1).toBe('555-0100');
  });

  it('dates are US Eastern wall time', async () => {
    const saved = sim.crm.now;
    try {
      sim.crm.now = () => new Date('2026-07-01T16:30:00Z'); // EDT, UTC-4
      await create();
      sim.crm.now = () => new Date('2026-01-15T16:30:00Z'); // EST, UTC-5
      await create();
    } finally {
      sim.crm.now = saved;
    }
    expect((await rpc('ContactService.load', 1, ['DateCreated'])).DateCreated).toEqual(
      new RpcDateTime('20260701T12:30:00'),
    );
    expect((await rpc('ContactService.load', 2, ['DateCreated'])).DateCreated).toEqual(
      new RpcDateTime('20260115T11:30:00'),
    );
  });

  it('faults: RecordNotFound 5, NoFields 11, NoFieldFound 10, no such handler, no matching arguments', async () => {
    expect(await rpcFault('ContactService.load', 9, ['Id'])).toEqual({
      code: 5,
      string: '[RecordNotFound]Record not found for Id:9',
    });
    expect(await rpcFault('ContactService.update', 9, { FirstName: 'x' })).toEqual({
      code: 5,
      string: '[RecordNotFound]Unable to perform update. Record not found for Id:9',
    });
    await rpc('ContactService.add', { FirstName: 'A' });
    expect(await rpcFault('ContactService.update', 1, {})).toEqual({
      code: 11,
      string: '[NoFields]No fields sent for update',
    });
    expect(await rpcFault('ContactService.add', { Bogus: 'x' })).toEqual({
      code: 10,
      string: '[NoFieldFound]No field found: Contact.Bogus',
    });
    expect(await rpcFault('ContactService.load', 1, ['Nope'])).toMatchObject({ code: 10 });
    expect(await rpcFault('APIEmailService.sendTemplate', 'x')).toEqual({
      code: 0,
      string: 'No such handler: APIEmailService.sendTemplate',
    });
    expect(await rpcFault('ContactService.load', '1', ['Id'])).toEqual({
      code: 0,
      string: 'No method matching arguments: java.lang.String, java.lang.String, [Ljava.lang.Object;',
    });
    // The echo method still echoes, and parse errors keep their fault.
    const echo = await rpcRaw('DataService.echo');
    expect(echo.text()).toContain('<name>methodName</name><value><string>DataService.echo</string>');
    const broken = await send(sim.url, 'POST', '/crm/xmlrpc/v1', { headers: KEY, body: '<methodCall>' });
    expect(broken.text()).toContain('Failed to parse XML-RPC request');
  });

  it('findByEmail searches Email, EmailAddress2 and EmailAddress3; v2-created contacts included', async () => {
    await create();
    await rpc('ContactService.add', { FirstName: 'B', EmailAddress3: 'ADA@example.com' });
    await rpc('ContactService.add', { FirstName: 'C', Email: 'c@example.com' });
    expect(await rpc('ContactService.findByEmail', 'ada@example.com', ['Id', 'FirstName'])).toEqual([
      { Id: 1, FirstName: 'Ada' },
      { Id: 2, FirstName: 'B' },
    ]);
    expect(await rpc('ContactService.findByEmail', 'none@example.com', ['Id'])).toEqual([]);
  });

  it('addToGroup/removeFromGroup share tags with v2; ContactGroup and ContactGroupAssign queries', async () => {
    await create();
    expect(await rpc('ContactService.addToGroup', 1, 1)).toBe(true);
    await v2('POST', '/tags/2/contacts:applyTags', { contact_ids: ['1'] });
    expect(
      (await v2('GET', '/contacts/1/tags')).json<{ tags: { tag: { id: string } }[] }>().tags.map((t) => t.tag.id),
    ).toEqual(['1', '2']);
    expect((await rpc('ContactService.load', 1, ['Groups'])).Groups).toBe('1,2');
    const assigns = await rpc('DataService.query', 'ContactGroupAssign', 100, 0, { ContactId: 1 }, [
      'GroupId',
      'ContactGroup',
      'DateCreated',
    ]);
    expect(assigns).toEqual([
      { GroupId: 1, ContactGroup: 'Customer', DateCreated: expect.any(RpcDateTime) },
      { GroupId: 2, ContactGroup: 'Lead', DateCreated: expect.any(RpcDateTime) },
    ]);
    expect(
      await rpc('DataService.query', 'ContactGroup', 10, 0, { GroupName: 'Lea%' }, [
        'Id',
        'GroupName',
        'GroupCategoryId',
      ]),
    ).toEqual([{ Id: 2, GroupName: 'Lead', GroupCategoryId: 10 }]);
    expect(await rpc('ContactService.removeFromGroup', 1, 1)).toBe(true);
    expect((await v2('GET', '/contacts/1')).json()).toMatchObject({ tag_ids: ['2'] });
    expect(await rpcFault('ContactService.addToGroup', 7, 1)).toMatchObject({ code: 5 });
  });

  it('addWithDupCheck updates the match or adds; merge answers true; ContactGroupCategory rows', async () => {
    await create();
    expect(await rpc('ContactService.addWithDupCheck', { Email: 'ADA@example.com', Company: 'NPL' }, 'Email')).toBe(1);
    expect(await rpc('ContactService.load', 1, ['Company', 'FirstName'])).toEqual({ Company: 'NPL', FirstName: 'Ada' });
    expect(
      await rpc('ContactService.addWithDupCheck', { Email: 'ada@example.com', FirstName: 'Bea' }, 'EmailAndName'),
    ).toBe(2);
    expect(
      await rpc(
        'ContactService.addWithDupCheck',
        { Email: 'ada@example.com', FirstName: 'Ada', LastName: 'Lovelace', Company: 'npl' },
        'EmailAndNameAndCompany',
      ),
    ).toBe(1);
    expect(await rpcFault('ContactService.addWithDupCheck', { Email: 'x@example.com' }, 'Phone')).toMatchObject({
      code: 12,
    });
    expect(await rpc('ContactService.merge', 1, 2)).toBe(true);
    expect(await rpcFault('ContactService.merge', 1, 2)).toEqual({
      code: 5,
      string: '[RecordNotFound]Record not found for Id:2',
    });
    expect(await rpcFault('ContactService.merge', 1, 1)).toMatchObject({ code: 12 });
    expect(await rpc('DataService.query', 'ContactGroupCategory', 10, 0, {}, ['Id', 'CategoryName'])).toEqual([
      { Id: 10, CategoryName: 'Customer Lifecycle' },
    ]);
  });

  it('DataService.query/findByField/count/load/add/update/delete on Contact', async () => {
    for (const [f, l, e] of [
      ['Mary', 'Smith', 'mary@example.com'],
      ['Mark', 'Jones', 'mark@gmail.com'],
      ['Zoe', 'Smith', 'zoe@gmail.com'],
    ])
      await rpc('DataService.add', 'Contact', { FirstName: f!, LastName: l!, Email: e! });
    const q = (data: Record<string, Arg>, ...rest: Arg[]) =>
      rpc('DataService.query', 'Contact', 1000, 0, data, ['Id'], ...rest).then((rows: { Id: number }[]) =>
        rows.map((r) => r.Id),
      );
    expect(await q({ LastName: 'smith' })).toEqual([1, 3]);
    expect(await q({ FirstName: 'Mar%' })).toEqual([1, 2]);
    expect(await q({ Email: '%@gmail.com' })).toEqual([2, 3]);
    expect(await q({ Id: [1, 3] })).toEqual([1, 3]);
    expect(await q({ Id: '~>~ 1' })).toEqual([2, 3]);
    expect(await q({ Id: '~<>~2' })).toEqual([1, 3]);
    expect(await q({ Company: '~null~' })).toEqual([1, 2, 3]);
    expect(await q({ Id: '%' }, 'Id', false)).toEqual([3, 2, 1]);
    expect(await q({ Id: '%' }, 'FirstName', true)).toEqual([2, 1, 3]);
    expect(await rpc('DataService.query', 'Contact', 2, 1, { Id: '%' }, ['Id'])).toEqual([{ Id: 3 }]);
    expect(await rpc('DataService.findByField', 'Contact', 10, 0, 'LastName', 'Smith', ['Id', 'Email'])).toEqual([
      { Id: 1, Email: 'mary@example.com' },
      { Id: 3, Email: 'zoe@gmail.com' },
    ]);
    expect(await rpc('DataService.count', 'Contact', { LastName: 'Smith' })).toBe(2);
    expect(await rpc('DataService.load', 'Contact', 2, ['FirstName'])).toEqual({ FirstName: 'Mark' });
    expect(await rpc('DataService.update', 'Contact', 2, { FirstName: 'Marcus' })).toBe(2);
    expect((await v2('GET', '/contacts/2')).json()).toMatchObject({ given_name: 'Marcus' });
    expect(await rpc('DataService.delete', 'Contact', 2)).toBe(true);
    expect((await v2('GET', '/contacts/2')).status).toBe(404);
    expect(await rpcFault('DataService.delete', 'Contact', 2)).toMatchObject({ code: 5 });
    expect(await rpcFault('DataService.query', 'Nope', 10, 0, {}, ['Id'])).toMatchObject({ code: 9 });
    expect(await rpcFault('DataService.query', 'Contact', 10, 0, { Nope: 1 }, ['Id'])).toMatchObject({ code: 10 });

    // v2 deletes are seen by XML-RPC and vice versa.
    expect((await v2('DELETE', '/contacts/1')).status).toBe(204);
    expect(await rpc('DataService.count', 'Contact', {})).toBe(1);
  });

  it('APIEmailService.optIn/optOut/getOptStatus share the v2 email status', async () => {
    await rpc('ContactService.add', { Email: 'x@example.com' });
    expect(await rpc('APIEmailService.getOptStatus', 'x@example.com')).toBe(0);
    expect(await rpc('APIEmailService.optIn', 'x@example.com', '')).toBe(true);
    expect(await rpc('APIEmailService.optIn', 'x@example.com', 'again')).toBe(false); // only the first time
    expect(await rpc('APIEmailService.getOptStatus', 'x@example.com')).toBe(1);
    expect((await v2('GET', '/emailAddresses/x%40example.com/status')).json()).toMatchObject({
      opted_in: true,
      status: 'SINGLE_OPT_IN',
    });
    expect(sim.crm.emailStatus('x@example.com')!.reason).toBe('API Opt In');
    expect(await rpc('APIEmailService.optOut', 'x@example.com', 'bye')).toBe(true);
    expect((await v2('GET', '/emailAddresses/x%40example.com/status')).json()).toMatchObject({ opted_in: false });
    await v2('PATCH', '/emailAddresses/x%40example.com/status', { opted_in: true, reason: 'back' });
    expect(await rpc('APIEmailService.getOptStatus', 'x@example.com')).toBe(1);
    sim.crm.emailStatus('x@example.com')!.status = 'DOUBLE_OPT_IN';
    expect(await rpc('APIEmailService.getOptStatus', 'x@example.com')).toBe(2);
    expect(await rpc('APIEmailService.getOptStatus', 'unknown@example.com')).toBe(0);
  });
});

describe('XML-RPC retirement and brownouts', () => {
  afterAll(() => {
    sim.retireXmlRpc(false);
    sim.setXmlRpcBrownout(false);
  });

  it('retireXmlRpc(true): every XML-RPC call 410 after auth and quota; REST v2 unaffected', async () => {
    sim.retireXmlRpc(true);
    for (const m of ['DataService.echo', 'ContactService.load']) {
      const r = await rpcRaw(m, 1, ['Id']);
      expect(r.status).toBe(410);
      expect(r.json()).toMatchObject({ code: 410, status: 'GONE' });
      expect(r.headers['x-keap-product-quota-limit']).toBe('30000');
    }
    const anon = await send(sim.url, 'POST', '/crm/xmlrpc', {
      body: '<methodCall><methodName>x</methodName></methodCall>',
    });
    expect(anon.status).toBe(401); // the gateway still authenticates first
    expect((await v2('GET', '/tags')).status).toBe(200);
    sim.retireXmlRpc(false);
    expect((await rpcRaw('DataService.echo')).status).toBe(200);
  });

  it('setXmlRpcBrownout: all, a fraction (evenly spread), or hanging calls', async () => {
    sim.setXmlRpcBrownout(true);
    const r = await rpcRaw('DataService.echo');
    expect(r.status).toBe(503);
    expect(r.json()).toMatchObject({ code: 503, status: 'UNAVAILABLE' });

    sim.setXmlRpcBrownout(0.5);
    const statuses: number[] = [];
    for (let i = 0; i < 4; i++) statuses.push((await rpcRaw('DataService.echo')).status);
    expect(statuses).toEqual([200, 503, 200, 503]);
    expect((await v2('GET', '/tags')).status).toBe(200);

    sim.setXmlRpcBrownout(true, 'hang');
    const hung = await Promise.race([
      rpcRaw('DataService.echo').then(
        () => 'answered',
        () => 'reset', // when the simulator closes the socket at the end
      ),
      new Promise((resolve) => setTimeout(() => resolve('no answer'), 200)),
    ]);
    expect(hung).toBe('no answer');

    sim.setXmlRpcBrownout(false);
    expect((await rpcRaw('DataService.echo')).status).toBe(200);
  });
});
