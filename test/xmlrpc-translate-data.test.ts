// DataService on the Contact table and custom fields, XMLRPC_MODE=translate: the same calls
// answered by Keap's classic XML-RPC (the simulator's) and by the proxy's translation to REST
// v2 give the same answers, field for field; what v2 cannot express is a fault that names it.
import { describe, it, expect, afterEach } from 'vitest';
import type { XmlRpcValue } from '../src/keap/xmlrpc-codec.js';
import { easternToUtc } from '../src/keap/translate/contact-query.js';
import type { CrmStore, StoredContact } from './simulator/crm.js';
import { a, b, i, ints, s, seedAda, st, translationRig, type Script } from './translation-rig.js';

const { translating, both, runOnBoth, call } = translationRig(afterEach);

const at = (iso: string): Date => new Date(iso);

type Person = [given: string, family: string, email: string, city: string, colour?: string, shoe?: number];

const PEOPLE: Person[] = [
  ['Ann', 'Archer', 'ann@example.com', 'Boston', 'red', 7],
  ['Anna', 'Baker', 'anna@gmail.com', 'Austin', 'blue', 9],
  ['Bob', 'Carter', 'bob@example.com', 'Boston', undefined, 11],
  ['annabel', 'Dyer', 'annabel@gmail.com', 'Denver', 'Red'],
  ['Carl', 'Archer', 'carl@example.org', 'Austin'],
];

/** Ada (contact 1), then five people created a minute apart, each updated an hour after it was created. */
function seedPeople(crm: CrmStore): void {
  let clock = at('2026-06-01T14:00:00Z').getTime();
  crm.now = () => new Date(clock);
  seedAda(crm);
  for (const [given, family, email, city, colour, shoe] of PEOPLE) {
    clock += 60_000;
    const c = crm.createContact({
      given_name: given,
      family_name: family,
      email_addresses: [{ email, field: 'EMAIL1' }],
      phone_numbers: [],
      fax_numbers: [],
      addresses: [{ field: 'BILLING', locality: city }],
      custom_fields: [
        ...(colour !== undefined ? [{ id: '6', content: colour }] : []),
        ...(shoe !== undefined ? [{ id: '8', content: shoe }] : []),
      ],
    });
    c.update_time = new Date(clock + 3_600_000).toISOString().replace('.000Z', 'Z');
  }
}

const FIELDS = a('Id', 'FirstName', 'LastName', 'Email', 'City', '_FavouriteColour', '_ShoeSize', 'LastUpdated');

const query = (conditions: Record<string, XmlRpcValue | string | number>, ...rest: XmlRpcValue[]): XmlRpcValue[] => [
  s('Contact'),
  i(1000),
  i(0),
  st(conditions),
  FIELDS,
  ...rest,
];

function ids(answer: unknown): number[] {
  const rows = (answer as { value: { value: { value: Map<string, XmlRpcValue> }[] } }).value.value;
  return rows.map((r) => (r.value.get('Id') as { value: number }).value);
}

function restLines(h: { logs: { entries: Record<string, unknown>[] } }, method: string): string[] {
  return h.logs.entries
    .filter((e) => e.event === 'request' && e.xmlrpcMethod === method)
    .map((e) => (typeof e.rest === 'string' ? e.rest : ''));
}

describe('DataService.query on Contact, translated', () => {
  it('exact, wildcard, IN, ~null~, ~<>~, comparisons and "%": the same rows, field for field, as Keap classic', async () => {
    const script: Script = [
      ['DataService.query', query({ Email: 'ann@example.com' })],
      ['DataService.query', query({ Email: 'ANN@EXAMPLE.COM' })],
      ['DataService.query', query({ FirstName: 'Ann%' })],
      ['DataService.query', query({ FirstName: 'ann%', Email: '%@gmail.com' })],
      ['DataService.query', query({ LastName: 'Archer', _FavouriteColour: '~null~' })],
      ['DataService.query', query({ City: 'Boston', FirstName: '~<>~Bob' })],
      ['DataService.query', query({ Id: ints(2, 4, 99) })],
      ['DataService.query', query({ Id: '~>=~ 4' })],
      ['DataService.query', query({ Id: '%' })],
      ['DataService.query', query({ Id: 3 })],
      ['DataService.query', query({ _ShoeSize: '~>~ 8' })],
      ['DataService.query', query({ _FavouriteColour: 'red' })],
      ['DataService.query', query({ FirstName: 'Nobody' })],
      ['DataService.query', query({ LastUpdated: '~>=~ 2026-06-01 11:03:00' })],
      ['DataService.query', query({ LastUpdated: '~<~ 2026-06-01 11:03:00', Id: '~>~ 1' })],
    ];
    const { keap, proxy, proxySide } = await runOnBoth(script, seedPeople);
    expect(proxy).toEqual(keap);
    expect(proxy.map(ids)).toEqual([
      [2],
      [2],
      [2, 3, 5],
      [3, 5],
      [6],
      [2],
      [2, 4],
      [4, 5, 6],
      [1, 2, 3, 4, 5, 6],
      [3],
      [3, 4],
      [2, 5],
      [],
      // Updated an hour after creation: 15:03Z and later, 11:03 Eastern (EDT) and later.
      [4, 5, 6],
      [2, 3],
    ]);
    // Each went to Keap as one list call, with the conditions v2 can filter as its filter; the
    // first read the contact model too (the fields name custom fields).
    const lines = restLines(proxySide, 'DataService.query');
    expect(lines).toEqual([
      'GET /crm/rest/v2/contacts/model 200; GET /crm/rest/v2/contacts 200',
      ...script.slice(1).map(() => 'GET /crm/rest/v2/contacts 200'),
    ]);
    const filters = proxySide.sim.lastRequests
      .filter((r) => r.url.startsWith('/crm/rest/v2/contacts?'))
      .map((r) => new URL(r.url, 'http://x').searchParams.get('filter'));
    expect(filters).toEqual([
      'email==ann@example.com',
      'email==ANN@EXAMPLE.COM',
      'given_name==Ann*',
      'given_name==ann*',
      'family_name==Archer',
      'city==Boston',
      'ids==2,4,99',
      'contact_id>=4',
      null,
      'ids==3',
      'ShoeSize>8',
      'FavouriteColour==red',
      'given_name==Nobody',
      'start_update_time==2026-06-01T15:03:00.000Z',
      'end_update_time==2026-06-01T15:03:00.999Z;contact_id>1',
    ]);
  });

  it('orderBy and ascending (7 arguments), limit and page: the same rows in the same order', async () => {
    const script: Script = [
      ['DataService.query', query({ Id: '%' }, s('FirstName'))],
      ['DataService.query', query({ Id: '%' }, s('FirstName'), b(true))],
      ['DataService.query', query({ Id: '%' }, s('City'), b(true))],
      ['DataService.query', query({ Id: '%' }, s('Id'), b(false))],
      ['DataService.query', [s('Contact'), i(2), i(1), st({ Id: '%' }), a('Id', 'FirstName')]],
      ['DataService.query', [s('Contact'), i(2), i(2), st({ Id: '%' }), a('Id'), s('LastName'), b(true)]],
      ['DataService.query', [s('Contact'), i(4), i(5), st({ Id: '%' }), a('Id')]],
      ['DataService.query', [s('Contact'), i(0), i(0), st({ Id: '%' }), a('Id')]],
    ];
    const { keap, proxy } = await runOnBoth(script, seedPeople);
    expect(proxy).toEqual(keap);
    expect(proxy.map(ids)).toEqual([
      // FirstName without regard to case, descending unless ascending: Carl, Bob, annabel, Anna, Ann, Ada.
      [6, 4, 5, 3, 2, 1],
      [1, 2, 3, 5, 4, 6],
      // City ascending; equal cities keep Id order: Austin, Austin, Boston, Boston, Denver, London.
      [3, 6, 2, 4, 5, 1],
      [6, 5, 4, 3, 2, 1],
      [3, 4],
      // LastName ascending, second page of two: Archer 2, Archer 6 | Baker 3, Carter 4 | Dyer 5, Lovelace 1.
      [5, 1],
      [],
      [],
    ]);
  });

  it('findByField and count: the same answers as Keap classic', async () => {
    const script: Script = [
      ['DataService.findByField', [s('Contact'), i(10), i(0), s('LastName'), s('Archer'), a('Id', 'FirstName')]],
      ['DataService.findByField', [s('Contact'), i(1), i(1), s('City'), s('Austin'), a('Id', 'City')]],
      ['DataService.findByField', [s('Contact'), i(10), i(0), s('Id'), i(4), a('Id', 'Email')]],
      ['DataService.count', [s('Contact'), st({ City: 'Boston' })]],
      ['DataService.count', [s('Contact'), st({ Id: '%' })]],
      ['DataService.count', [s('Contact'), st({ Email: '%gmail.com', FirstName: 'An%' })]],
      ['DataService.count', [s('Contact'), st({ NoSuchField: 'x' })]],
    ];
    const { keap, proxy } = await runOnBoth(script, seedPeople);
    expect(proxy).toEqual(keap);
    expect(proxy.slice(0, 3).map(ids)).toEqual([[2, 6], [6], [4]]);
    expect(proxy.slice(3, 6)).toEqual([2, 6, 2].map((n) => ({ kind: 'value', value: i(n) })));
    expect(proxy[6]).toMatchObject({
      kind: 'fault',
      faultCode: 10,
      faultString: '[NoFieldFound]No field found: Contact.NoSuchField',
    });
  });

  it('pages of 1000: the translation walks v2 page tokens, and each page is a REST call on the log line', async () => {
    const seedMany = (crm: CrmStore): void => {
      for (let n = 1; n <= 1005; n++)
        crm.createContact({
          given_name: `P${n}`,
          email_addresses: [{ email: `p${n}@example.com`, field: 'EMAIL1' }],
          phone_numbers: [],
          fax_numbers: [],
          addresses: [],
          custom_fields: [],
        });
    };
    const script: Script = [
      ['DataService.query', [s('Contact'), i(1000), i(1), st({ Id: '%' }), a('Id')]],
      ['DataService.count', [s('Contact'), st({ Email: 'p1%' })]],
    ];
    const { keap, proxy, proxySide } = await runOnBoth(script, seedMany);
    expect(proxy).toEqual(keap);
    expect(ids(proxy[0])).toEqual([1001, 1002, 1003, 1004, 1005]);
    // p1, p10-p19, p100-p199, p1000-p1005
    expect(proxy[1]).toEqual({ kind: 'value', value: i(1 + 10 + 100 + 6) });
    expect(restLines(proxySide, 'DataService.query')).toEqual([
      'GET /crm/rest/v2/contacts 200; GET /crm/rest/v2/contacts 200',
    ]);
    expect(restLines(proxySide, 'DataService.count')).toEqual(['GET /crm/rest/v2/contacts 200']);
  });

  it('a query v2 cannot narrow is refused with InvalidParameter naming the condition (Keap classic scanned the table)', async () => {
    const h = await translating(seedPeople);
    const { keap, proxy } = await both(h, 'DataService.query', ...query({ Email: '%@gmail.com' }));
    expect(ids(keap)).toEqual([3, 5]);
    expect(proxy).toMatchObject({
      kind: 'fault',
      faultCode: 12,
      faultString: expect.stringMatching(
        /^\[InvalidParameter\]The condition on Contact\.Email cannot be sent as a REST v2 filter/,
      ),
    });
    // Refused before any contact was listed (the fields name custom fields: the model was read).
    expect(restLines(h, 'DataService.query')).toEqual(['GET /crm/rest/v2/contacts/model 200']);
  });

  it("a value with v2's filter grammar in it is never sent as a filter: checked on the proxy's side only", async () => {
    const h = await translating(seedPeople);
    const answer = await call(h, 'DataService.query', ...query({ LastName: 'Archer', FirstName: 'Ann;ids==5' }));
    expect(ids(answer)).toEqual([]);
    const sent = h.sim.lastRequests.filter((r) => r.url.startsWith('/crm/rest/v2/contacts?'));
    expect(sent.map((r) => new URL(r.url, 'http://x').searchParams.get('filter'))).toEqual(['family_name==Archer']);
    expect(sent.every((r) => !r.url.includes('ids'))).toBe(true);
  });

  it("findByEmail: an address with v2's grammar in it finds nothing and is not sent; v2's `*` is held to the exact address", async () => {
    const h = await translating(seedPeople);
    const before = h.sim.lastRequests.length;
    for (const email of ['ann@example.com;ids==2', 'ann@example.com,bob@example.com']) {
      const { keap, proxy } = await both(h, 'ContactService.findByEmail', s(email), a('Id'));
      expect(proxy).toEqual(keap);
      expect(ids(proxy)).toEqual([]);
    }
    const { keap, proxy } = await both(h, 'ContactService.findByEmail', s('ann*'), a('Id'));
    expect(proxy).toEqual(keap);
    expect(ids(proxy)).toEqual([]);
    // Only the proxy lists contacts over REST, and only for `ann*`.
    const lists = h.sim.lastRequests.slice(before).filter((r) => r.url.startsWith('/crm/rest/v2/contacts?'));
    expect(lists.map((r) => new URL(r.url, 'http://x').searchParams.get('filter'))).toEqual(['email==ann*']);
  });

  it('queryData and selected fields are checked before any REST call: unknown fields are NoFieldFound, as Keap classic', async () => {
    const h = await translating(seedPeople);
    for (const params of [query({ Nope: 'x' }), [s('Contact'), i(5), i(0), st({ Id: 1 }), a('Id', 'Nope')]]) {
      const { keap, proxy } = await both(h, 'DataService.query', ...params);
      expect(proxy).toEqual(keap);
      expect(proxy).toMatchObject({ kind: 'fault', faultCode: 10 });
    }
  });
});

describe('DataService load, add, update, delete on Contact, and custom fields, translated', () => {
  it('the same answers and the same state as Keap classic, custom fields included', async () => {
    const LOAD = a(
      'Id',
      'FirstName',
      'LastName',
      'Email',
      'Phone1',
      'City',
      '_FavouriteColour',
      '_ShoeSize',
      'Birthday',
      'OwnerID',
    );
    const script: Script = [
      [
        'DataService.add',
        [s('Contact'), st({ FirstName: 'Grace', Email: 'grace@example.com', _ShoeSize: 8, _FavouriteColour: 'green' })],
      ],
      ['DataService.load', [s('Contact'), i(2), LOAD]],
      [
        'DataService.update',
        [
          s('Contact'),
          i(2),
          st({ LastName: 'Hopper', _ShoeSize: '9', Birthday: { type: 'dateTime', value: '19061209T00:00:00' } }),
        ],
      ],
      ['DataService.load', [s('Contact'), i(2), LOAD]],
      ['ContactService.update', [i(1), st({ _FavouriteColour: 'teal', Phone1: '' })]],
      ['ContactService.load', [i(1), LOAD]],
      ['DataService.update', [s('Contact'), i(2), st({ _FavouriteColour: '' })]],
      ['DataService.load', [s('Contact'), i(2), LOAD]],
      ['DataService.update', [s('Contact'), i(99), st({ LastName: 'x' })]],
      ['DataService.update', [s('Contact'), i(2), st({ _NoSuchCustom: 'x' })]],
      ['DataService.delete', [s('Contact'), i(2)]],
      ['DataService.load', [s('Contact'), i(2), LOAD]],
      ['DataService.delete', [s('Contact'), i(2)]],
    ];
    const { keap, proxy, keapSide, proxySide } = await runOnBoth(script);
    expect(proxy).toEqual(keap);
    expect(proxy[0]).toEqual({ kind: 'value', value: i(2) });
    const loaded = (proxy[3] as { value: { value: Map<string, XmlRpcValue> } }).value.value;
    expect(Object.fromEntries(loaded)).toMatchObject({
      FirstName: s('Grace'),
      LastName: s('Hopper'),
      Email: s('grace@example.com'),
      _FavouriteColour: s('green'),
      _ShoeSize: i(9),
      Birthday: { type: 'dateTime', value: '19061209T00:00:00' },
    });
    expect(proxy[8]).toMatchObject({ kind: 'fault', faultCode: 5 });
    expect(proxy[9]).toMatchObject({
      kind: 'fault',
      faultCode: 10,
      faultString: '[NoFieldFound]No field found: Contact._NoSuchCustom',
    });
    expect(proxy.slice(10)).toEqual([
      { kind: 'value', value: b(true) },
      { kind: 'fault', faultCode: 5, faultString: '[RecordNotFound]Record not found for Id:2' },
      { kind: 'fault', faultCode: 5, faultString: '[RecordNotFound]Record not found for Id:2' },
    ]);
    // Both stores end the same: Ada kept her email and phone-less record with the new colour.
    const view = (c: StoredContact | undefined) => c && { ...c, create_time: '', update_time: '' };
    expect(view(proxySide.sim.crm.contacts.get('1'))).toEqual(view(keapSide.sim.crm.contacts.get('1')));
    expect(proxySide.sim.crm.contacts.get('1')?.custom_fields).toEqual([{ id: '6', content: 'teal' }]);
  });

  it('the contact model is read once per account while it is fresh, and only by calls that name a custom field', async () => {
    const h = await translating(seedPeople);
    const models = () => h.sim.lastRequests.filter((r) => r.url === '/crm/rest/v2/contacts/model').length;
    await call(h, 'ContactService.load', i(1), a('Id', 'FirstName'));
    expect(models()).toBe(0);
    await Promise.all([
      call(h, 'ContactService.load', i(2), a('Id', '_ShoeSize')),
      call(h, 'ContactService.load', i(3), a('Id', '_ShoeSize')),
    ]);
    await call(h, 'DataService.query', ...query({ _FavouriteColour: 'red' }));
    expect(models()).toBe(1);
  });

  it('DataService on a table the proxy cannot translate: a fault that names the method and table', async () => {
    const h = await translating();
    for (const [method, params] of [
      ['DataService.load', [s('Invoice'), i(1), a('Id')]],
      ['DataService.add', [s('Company'), st({ Company: 'x' })]],
    ] as const) {
      expect(await call(h, method, ...params)).toMatchObject({
        kind: 'fault',
        faultCode: 3,
        faultString: expect.stringMatching(
          new RegExp(
            `^\\[Unexpected\\]${method.replace('.', '\\.')} on the \\w+ table cannot be translated.*\\(keap-proxy: not_translatable\\)$`,
          ),
        ),
      });
    }
  });
});

describe('Eastern wall time to UTC', () => {
  it('follows daylight saving time, as America/New_York does', () => {
    expect(new Date(easternToUtc('2026-06-01 11:03:00')!).toISOString()).toBe('2026-06-01T15:03:00.000Z');
    expect(new Date(easternToUtc('2026-01-15')!).toISOString()).toBe('2026-01-15T05:00:00.000Z');
    expect(new Date(easternToUtc('20261101T01:30:00')!).toISOString()).toBe('2026-11-01T05:30:00.000Z');
    expect(new Date(easternToUtc('2026-03-08 03:30:00')!).toISOString()).toBe('2026-03-08T07:30:00.000Z');
    expect(easternToUtc('yesterday')).toBeUndefined();
  });
});
