// XMLRPC_MODE=translate on the tag tables (ContactGroup, ContactGroupAssign,
// ContactGroupCategory) and ContactService.addWithDupCheck and merge: the same script run by
// Keap's classic XML-RPC (the simulator's) and through the proxy's translation to REST v2
// gives the same answers, field for field; where it cannot, the difference is pinned by name.
import { describe, it, expect, afterEach } from 'vitest';
import type { XmlRpcValue } from '../src/keap/xmlrpc-codec.js';
import type { CrmStore } from './simulator/crm.js';
import { a, b, i, ints, s, seedAda, st as struct, translationRig } from './translation-rig.js';

const rig = translationRig(afterEach);
const translating = () => rig.translating(seedTags);
const runOnBoth = (script: readonly Call[]) => rig.runOnBoth(script, seedTags);

type Call = [string, XmlRpcValue[]];

/** A fixed clock on both sides, so that DateCreated (a tag's applied time) is the same on both. */
const NOW = new Date('2026-03-01T15:00:00Z');

/**
 * Three contacts, a second tag category (11), three more tags (3 Golf in 11, 4 Green Leads in
 * none, 5 Leadership in 10) and tags applied out of id order (contact 1: tag 2, then 1).
 */
function seedTags(crm: CrmStore): void {
  crm.now = () => NOW;
  crm.reset();
  const blank = { phone_numbers: [], fax_numbers: [], addresses: [], custom_fields: [] };
  seedAda(crm);
  crm.createContact({
    ...blank,
    given_name: 'Bob',
    family_name: 'Smith',
    company: { company_name: 'Acme' },
    email_addresses: [{ email: 'bob@example.com', field: 'EMAIL1' }],
    phone_numbers: [{ number: '555-0200', field: 'PHONE2' }],
  });
  crm.createContact({
    ...blank,
    given_name: 'Carol',
    email_addresses: [{ email: 'carol@example.com', field: 'EMAIL1' }],
  });
  crm.addTagCategory('Interests');
  crm.addTag('Golf', 'Plays golf', '11');
  crm.addTag('Green Leads');
  crm.addTag('Leadership', 'Managers', '10');
  crm.applyTag('2', '1');
  crm.applyTag('1', '1');
  crm.applyTag('1', '2');
  crm.applyTag('3', '2');
  crm.now = () => new Date(NOW.getTime() + 3_600_000);
  crm.applyTag('1', '3');
  crm.now = () => NOW;
}

/** Each answer's comparable gist: a fault's code, or the rows' `field` values. */
function gist(answer: unknown, field: string): unknown {
  const r = answer as { kind: string; faultCode?: number; value?: { type: string; value: unknown } };
  if (r.kind === 'fault') return `fault ${r.faultCode}`;
  if (r.value?.type !== 'array') return r.value?.value;
  return (r.value.value as { value: Map<string, XmlRpcValue> }[]).map((row) => {
    const v = row.value.get(field);
    return v !== undefined && 'value' in v ? v.value : undefined;
  });
}

const query = (
  table: string,
  q: Record<string, XmlRpcValue | string | number>,
  fields: XmlRpcValue,
  ...more: XmlRpcValue[]
): Call => ['DataService.query', [s(table), i(1000), i(0), struct(q), fields, ...more]];
const paged = (
  table: string,
  limit: number,
  page: number,
  q: Record<string, XmlRpcValue | string | number>,
  fields: XmlRpcValue,
): Call => ['DataService.query', [s(table), i(limit), i(page), struct(q), fields]];

const GROUP = a('Id', 'GroupName', 'GroupCategoryId', 'GroupDescription');
const ASSIGN = a('GroupId', 'ContactGroup', 'DateCreated', 'ContactId');
const CATEGORY = a('Id', 'CategoryName', 'CategoryDescription');
const CONTACT = a(
  'Id',
  'FirstName',
  'LastName',
  'Email',
  'EmailAddress2',
  'Phone1',
  'Phone2',
  'City',
  'Company',
  'JobTitle',
  'Groups',
);

describe('XMLRPC_MODE=translate: ContactService.addWithDupCheck and merge, against Keap classic XML-RPC', () => {
  it('addWithDupCheck: no duplicate adds; a duplicate by Email, EmailAndName or EmailAndNameAndCompany is updated (only the fields sent) and its Id answered', async () => {
    const script: Call[] = [
      ['ContactService.addWithDupCheck', [struct({ FirstName: 'Dan', Email: 'dan@example.com' }), s('Email')]],
      ['ContactService.addWithDupCheck', [struct({ Email: 'ADA@example.com', JobTitle: 'Countess' }), s('Email')]],
      ['ContactService.load', [i(1), CONTACT]],
      [
        'ContactService.addWithDupCheck',
        [
          struct({ Email: 'ada@example.com', FirstName: 'ada', LastName: 'Lovelace', City: 'Paris' }),
          s('EmailAndName'),
        ],
      ],
      [
        'ContactService.addWithDupCheck',
        [struct({ Email: 'ada@example.com', FirstName: 'Augusta' }), s('EmailAndName')],
      ],
      ['ContactService.load', [i(1), CONTACT]],
      [
        'ContactService.addWithDupCheck',
        [
          struct({
            Email: 'bob@example.com',
            FirstName: 'Bob',
            LastName: 'Smith',
            Company: 'acme',
            Phone1: '555-0201',
          }),
          s('EmailAndNameAndCompany'),
        ],
      ],
      [
        'ContactService.addWithDupCheck',
        [
          struct({ Email: 'bob@example.com', FirstName: 'Bob', LastName: 'Smith', Company: 'Other' }),
          s('EmailAndNameAndCompany'),
        ],
      ],
      ['ContactService.load', [i(2), CONTACT]],
      ['ContactService.addWithDupCheck', [struct({ Email: 'x@example.com' }), s('Phone')]],
      ['ContactService.addWithDupCheck', [struct({ Email: 'x@example.com', NoSuchField: 'x' }), s('Email')]],
      ['DataService.count', [s('ContactGroupAssign'), struct({ ContactId: 1 })]],
    ];
    const { keap, proxy, keapSide, proxySide } = await runOnBoth(script);
    expect(proxy).toEqual(keap);
    expect(proxy.map((r) => gist(r, 'Id'))).toEqual([
      4,
      1,
      expect.anything(),
      1,
      5,
      expect.anything(),
      2,
      6,
      expect.anything(),
      'fault 12',
      'fault 10',
      2,
    ]);
    // The update kept what was not sent: EmailAddress2 and Phone1 (v2 would replace the arrays whole).
    const ada = (proxy[5] as { value: { value: Map<string, XmlRpcValue> } }).value.value;
    expect(ada.get('JobTitle')).toEqual(s('Countess'));
    expect(ada.get('City')).toEqual(s('Paris'));
    expect(ada.get('EmailAddress2')).toEqual(s('ada2@example.com'));
    expect(ada.get('Phone1')).toEqual(s('555-0100'));
    const bob = (proxy[8] as { value: { value: Map<string, XmlRpcValue> } }).value.value;
    expect(bob.get('Phone1')).toEqual(s('555-0201'));
    expect(bob.get('Phone2')).toEqual(s('555-0200'));
    expect(proxySide.sim.crm.contacts.size).toBe(keapSide.sim.crm.contacts.size);
  });

  it('merge: true, the kept contact filled from the duplicate and holding both\u2019s tags; missing ids are RecordNotFound, the same id InvalidParameter', async () => {
    const script: Call[] = [
      ['ContactService.merge', [i(1), i(2)]],
      ['ContactService.load', [i(1), CONTACT]],
      ['ContactService.load', [i(2), CONTACT]],
      ['DataService.query', [s('ContactGroupAssign'), i(10), i(0), struct({ ContactId: 1 }), ASSIGN]],
      ['ContactService.merge', [i(1), i(2)]],
      ['ContactService.merge', [i(99), i(1)]],
      ['ContactService.merge', [i(99), i(98)]],
      ['ContactService.merge', [i(3), i(3)]],
    ];
    const { keap, proxy } = await runOnBoth(script);
    expect(proxy).toEqual(keap);
    expect(proxy[0]).toEqual({ kind: 'value', value: b(true) });
    const kept = (proxy[1] as { value: { value: Map<string, XmlRpcValue> } }).value.value;
    expect(kept.get('FirstName')).toEqual(s('Ada'));
    expect(kept.get('Phone2')).toEqual(s('555-0200'));
    expect(kept.get('Groups')).toEqual(s('2,1,3'));
    expect(gist(proxy[3], 'GroupId')).toEqual([1, 2, 3]);
    expect(proxy.slice(4).map((r) => (r as { faultString: string }).faultString)).toEqual([
      '[RecordNotFound]Record not found for Id:2',
      '[RecordNotFound]Record not found for Id:99',
      '[RecordNotFound]Record not found for Id:99',
      '[InvalidParameter]contact_id and duplicate_contact_id must be different contacts',
    ]);
    expect(proxy[2]).toMatchObject({ kind: 'fault', faultCode: 5 });
  });
});

describe('XMLRPC_MODE=translate: DataService.query and count on the tag tables, against Keap classic XML-RPC', () => {
  it('ContactGroup: exact (any case), trailing, leading and inner %, ids and IN, ~null~, ~<>~, ~>~, orderBy both ways', async () => {
    const script: Call[] = [
      query('ContactGroup', {}, GROUP),
      query('ContactGroup', { GroupName: 'lead' }, GROUP),
      query('ContactGroup', { GroupName: 'Lead%' }, GROUP),
      query('ContactGroup', { GroupName: '%Lead%' }, GROUP),
      query('ContactGroup', { GroupName: '%s' }, GROUP),
      query('ContactGroup', { GroupName: 'G%f' }, GROUP),
      query('ContactGroup', { Id: ints(1, 3, 5) }, GROUP),
      query('ContactGroup', { Id: 2 }, GROUP),
      query('ContactGroup', { Id: '4' }, GROUP),
      query('ContactGroup', { Id: '~>~ 2' }, GROUP),
      query('ContactGroup', { Id: '~<>~1' }, GROUP),
      query('ContactGroup', { GroupCategoryId: 10 }, GROUP),
      query('ContactGroup', { GroupCategoryId: '~null~' }, GROUP),
      query('ContactGroup', { GroupDescription: '~null~' }, GROUP),
      query('ContactGroup', { GroupDescription: 'plays%', GroupCategoryId: 11 }, GROUP),
      query('ContactGroup', { GroupName: 'Lead%' }, a('GroupName'), s('GroupName')),
      query('ContactGroup', {}, a('Id'), s('GroupName'), b(true)),
      query('ContactGroup', { Id: '%' }, a('GroupCategoryId', 'Id'), s('GroupCategoryId'), b(false)),
      query('ContactGroup', { Id: ints() }, GROUP),
    ];
    const { keap, proxy } = await runOnBoth(script);
    expect(proxy).toEqual(keap);
    expect(proxy.map((r) => gist(r, 'Id'))).toEqual([
      [1, 2, 3, 4, 5],
      [2],
      [2, 5],
      [2, 4, 5],
      [4],
      [3],
      [1, 3, 5],
      [2],
      [4],
      [3, 4, 5],
      [2, 3, 4, 5],
      [1, 2, 5],
      [4],
      [4],
      [3],
      [undefined, undefined],
      [1, 3, 4, 2, 5],
      [3, 1, 2, 5, 4],
      [],
    ]);
  });

  it('ContactGroup: the filters that v2 can say go to v2 (name==Lead*, tag_ids==1,3,5); the others are applied to what was read', async () => {
    const h = await translating();
    const call = async (q: Record<string, XmlRpcValue | string | number>) => {
      expect(await rig.call(h, 'DataService.query', ...query('ContactGroup', q, a('Id'))[1])).toMatchObject({
        kind: 'value',
      });
      const calls = h.sim.lastRequests.filter((r) => r.url.startsWith('/crm/rest/v2/'));
      expect(calls).toHaveLength(1);
      return Object.fromEntries(new URL(calls[0]!.url, 'http://x').searchParams);
    };
    expect(await call({ GroupName: 'Lead%' })).toEqual({ filter: 'name==Lead*', page_size: '1000' });
    h.sim.lastRequests.length = 0;
    expect(await call({ Id: ints(1, 3, 5), GroupCategoryId: '~null~', GroupDescription: 'Paying customer' })).toEqual({
      filter: 'tag_ids==1,3,5;category_id==NONE;description==Paying customer',
      page_size: '1000',
    });
    h.sim.lastRequests.length = 0;
    expect(await call({ GroupName: '%Lead%' })).toEqual({ page_size: '1000' });
  });

  it('paging: limit and 0-based page, over v2 pages (page 1 of limit 1 reads two rows, in one call)', async () => {
    const script: Call[] = [
      paged('ContactGroup', 1, 1, {}, GROUP),
      paged('ContactGroup', 2, 1, { GroupName: 'Lead%' }, GROUP),
      paged('ContactGroup', 1, 1, { GroupName: '%Lead%' }, GROUP),
      paged('ContactGroup', 2, 2, {}, GROUP),
      paged('ContactGroup', 0, 0, {}, GROUP),
      paged('ContactGroupAssign', 1, 1, { GroupId: 1 }, ASSIGN),
      paged('ContactGroupAssign', 1, 1, { ContactId: ints(1, 2) }, ASSIGN),
      paged('ContactGroupCategory', 1, 1, {}, CATEGORY),
    ];
    const { keap, proxy, proxySide } = await runOnBoth(script);
    expect(proxy).toEqual(keap);
    expect(proxy.map((r) => gist(r, 'Id'))).toEqual([[2], [], [4], [5], [], [undefined], [undefined], [11]]);
    expect(gist(proxy[5], 'ContactId')).toEqual([2]);
    expect(gist(proxy[6], 'GroupId')).toEqual([2]);
    // The first query read only the two rows it needed, in one call.
    const restCalls = proxySide.sim.lastRequests.filter((r) => r.url.startsWith('/crm/rest/v2/')).map((r) => r.url);
    expect(restCalls[0]).toBe('/crm/rest/v2/tags?page_size=2');
    expect(restCalls[1]).toMatch(/^\/crm\/rest\/v2\/tags\?filter=/);
  });

  it('ContactGroupAssign: by ContactId, by GroupId, both, lists of ids; the tag\u2019s name and the applied time (US Eastern) as DateCreated', async () => {
    const script: Call[] = [
      query('ContactGroupAssign', { ContactId: 1 }, ASSIGN),
      query('ContactGroupAssign', { GroupId: 1 }, ASSIGN),
      query('ContactGroupAssign', { GroupId: '1' }, a('ContactId')),
      query('ContactGroupAssign', { ContactId: 2, GroupId: 3 }, ASSIGN),
      query('ContactGroupAssign', { ContactId: ints(3, 1) }, ASSIGN),
      query('ContactGroupAssign', { GroupId: ints(3, 2) }, ASSIGN),
      query('ContactGroupAssign', { GroupId: 1, ContactGroup: 'cust%' }, ASSIGN),
      query('ContactGroupAssign', { GroupId: 1, ContactGroup: 'Lead' }, ASSIGN),
      query('ContactGroupAssign', { GroupId: 1, DateCreated: '2026-03-01 11%' }, ASSIGN),
      query('ContactGroupAssign', { GroupId: 1, DateCreated: '~>~ 2026-03-01 10:30:00' }, ASSIGN),
      query('ContactGroupAssign', { GroupId: 1 }, a('ContactId', 'DateCreated'), s('DateCreated')),
      query('ContactGroupAssign', { GroupId: 1 }, a('ContactId'), s('ContactId'), b(true)),
      query('ContactGroupAssign', { ContactId: 99 }, ASSIGN),
      query('ContactGroupAssign', { GroupId: 99 }, ASSIGN),
    ];
    const { keap, proxy } = await runOnBoth(script);
    expect(proxy).toEqual(keap);
    expect(proxy.map((r) => gist(r, 'ContactId'))).toEqual([
      [1, 1],
      [1, 2, 3],
      [1, 2, 3],
      [2],
      [1, 1, 3],
      [1, 2],
      [1, 2, 3],
      [],
      [3],
      [3],
      [3, 1, 2],
      [1, 2, 3],
      [],
      [],
    ]);
    expect(gist(proxy[0], 'ContactGroup')).toEqual(['Customer', 'Lead']);
    expect(gist(proxy[0], 'DateCreated')).toEqual(['20260301T10:00:00', '20260301T10:00:00']);
  });

  it('ContactGroupCategory: every category, exact, %, ~null~; DataService.count on the three tables', async () => {
    const script: Call[] = [
      query('ContactGroupCategory', {}, CATEGORY),
      query('ContactGroupCategory', { CategoryName: 'interests' }, CATEGORY),
      query('ContactGroupCategory', { CategoryName: '%life%' }, CATEGORY),
      query('ContactGroupCategory', { CategoryDescription: '~null~' }, CATEGORY),
      query('ContactGroupCategory', { Id: '~<~ 11' }, CATEGORY, s('CategoryName'), b(true)),
      ['DataService.count', [s('ContactGroup'), struct({})]],
      ['DataService.count', [s('ContactGroup'), struct({ GroupName: '%Lead%' })]],
      ['DataService.count', [s('ContactGroupAssign'), struct({ GroupId: 1 })]],
      ['DataService.count', [s('ContactGroupCategory'), struct({})]],
      ['DataService.count', [s('ContactGroupCategory'), struct({ Nope: 1 })]],
    ];
    const { keap, proxy } = await runOnBoth(script);
    expect(proxy).toEqual(keap);
    expect(proxy.map((r) => gist(r, 'Id'))).toEqual([[10, 11], [11], [10], [11], [10], 5, 3, 3, 2, 'fault 10']);
  });

  it('an unknown field (in queryData, the selected fields or orderBy) is the same NoFieldFound fault; an unknown table the same NoTableFound', async () => {
    const script: Call[] = [
      query('ContactGroup', { Nope: 'x' }, GROUP),
      query('ContactGroup', {}, a('Id', 'Nope')),
      query('ContactGroup', {}, a('Id'), s('Nope')),
      query('ContactGroupAssign', { ContactId: 1 }, a('Id')),
      query('ContactGroupCategory', { GroupName: 'x' }, CATEGORY),
      query('NoSuchTable', {}, a('Id')),
    ];
    const { keap, proxy } = await runOnBoth(script);
    expect(proxy).toEqual(keap);
    expect(proxy.map((r) => (r as { faultString: string }).faultString)).toEqual([
      '[NoFieldFound]No field found: ContactGroup.Nope',
      '[NoFieldFound]No field found: ContactGroup.Nope',
      '[NoFieldFound]No field found: ContactGroup.Nope',
      '[NoFieldFound]No field found: ContactGroupAssign.Id',
      '[NoFieldFound]No field found: ContactGroupCategory.GroupName',
      '[NoTableFound]No table found: NoSuchTable',
    ]);
  });

  it('the documented difference: ContactGroupAssign without ContactId or GroupId ids (or with more than 100), which Keap answered, is InvalidParameter through the translation', async () => {
    const script: Call[] = [
      query('ContactGroupAssign', {}, ASSIGN),
      query('ContactGroupAssign', { ContactGroup: 'Customer' }, ASSIGN),
      query('ContactGroupAssign', { ContactId: '~>~ 1' }, ASSIGN),
      ['DataService.count', [s('ContactGroupAssign'), struct({})]],
      // More ids than MAX_ASSIGN_IDS (100): each would be a REST call.
      query('ContactGroupAssign', { ContactId: ints(...Array.from({ length: 101 }, (_, n) => n + 1)) }, ASSIGN),
    ];
    const { keap, proxy, proxySide } = await runOnBoth(script);
    expect(keap.map((r) => gist(r, 'ContactId'))).toEqual([[1, 1, 2, 2, 3], [1, 2, 3], [2, 2, 3], 5, [1, 1, 2, 2, 3]]);
    expect(proxy[4]).toEqual({
      kind: 'fault',
      faultCode: 12,
      faultString: '[InvalidParameter]ContactGroupAssign is read for at most 100 ContactId or GroupId ids at once',
    });
    for (const r of proxy.slice(0, 4))
      expect(r).toMatchObject({
        kind: 'fault',
        faultCode: 12,
        faultString: expect.stringMatching(
          /^\[InvalidParameter\]ContactGroupAssign is read only with ContactId or GroupId in queryData/,
        ),
      });
    // Refused before any REST call.
    const lines = proxySide.logs.entries.filter((e) => e.event === 'request' && e.xmlrpcMethod !== undefined);
    expect(lines.map((e) => e.rest ?? '')).toEqual(['', '', '', '', '']);
  });
});
