// One legacy app's day, as a script of XML-RPC calls: run against the simulator's classic
// XML-RPC and through the proxy's translation to REST v2 (XMLRPC_MODE=translate), it gives the
// same answers, field for field, and leaves the same contacts, tags and opt statuses behind.
// Where the two cannot match, a named test pins the documented difference.
import { describe, it, expect, afterEach } from 'vitest';
import type { XmlRpcValue } from '../src/keap/xmlrpc-codec.js';
import type { CrmStore } from './simulator/crm.js';
import { a, i, s, st, translationRig, type Script } from './translation-rig.js';

const { translating, both, runOnBoth } = translationRig(afterEach);

const FIELDS = a('Id', 'FirstName', 'LastName', 'Email', 'Phone1', 'City', 'Company', 'Groups', '_FavouriteColour');

const LEGACY_DAY: Script = [
  // A sign-up form: two new contacts, one of them signing up twice.
  [
    'ContactService.add',
    [st({ FirstName: 'Grace', LastName: 'Brewster', Email: 'grace@example.com', Phone1: '555-0101' })],
  ],
  [
    'ContactService.addWithDupCheck',
    [st({ FirstName: 'Grace', Email: 'grace@example.com', City: 'Arlington' }), s('Email')],
  ],
  [
    'DataService.add',
    [s('Contact'), st({ FirstName: 'Alan', LastName: 'Turing', Email: 'alan@example.org', _FavouriteColour: 'green' })],
  ],
  // The CRM sync: a married name, a changed company, the rest untouched.
  ['ContactService.update', [i(2), st({ LastName: 'Hopper', Company: 'Navy' })]],
  ['ContactService.load', [i(2), FIELDS]],
  ['ContactService.findByEmail', [s('GRACE@example.com'), a('Id', 'FirstName', 'LastName')]],
  ['DataService.findByField', [s('Contact'), i(10), i(0), s('Email'), s('alan@example.org'), a('Id', 'LastName')]],
  // Reports: wildcards, as legacy code wrote them.
  ['DataService.query', [s('Contact'), i(100), i(0), st({ FirstName: 'Gr%' }), FIELDS]],
  [
    'DataService.query',
    [
      s('Contact'),
      i(100),
      i(0),
      st({ Id: '%', Email: '%example%' }),
      a('Id', 'Email'),
      s('Email'),
      { type: 'boolean', value: true },
    ],
  ],
  ['DataService.count', [s('Contact'), st({ Id: '%' })]],
  // Tags: a purchase tags the buyer, a refund untags them.
  ['ContactService.addToGroup', [i(2), i(1)]],
  ['ContactService.addToGroup', [i(3), i(2)]],
  ['ContactService.removeFromGroup', [i(3), i(2)]],
  ['DataService.load', [s('Contact'), i(2), a('Id', 'Groups')]],
  // Email consent.
  ['APIEmailService.optIn', [s('grace@example.com'), s('Signed up on the web form')]],
  ['APIEmailService.getOptStatus', [s('grace@example.com')]],
  ['APIEmailService.optIn', [s('grace@example.com'), s('')]],
  ['APIEmailService.optOut', [s('alan@example.org'), s('Asked to stop')]],
  ['APIEmailService.getOptStatus', [s('alan@example.org')]],
  ['APIEmailService.getOptStatus', [s('nobody@example.com')]],
  // Clean-up: a duplicate merged, a test contact deleted.
  ['ContactService.merge', [i(2), i(1)]],
  ['DataService.delete', [s('Contact'), i(3)]],
  ['ContactService.load', [i(2), FIELDS]],
  // The faults legacy code handles.
  ['ContactService.load', [i(3), FIELDS]],
  ['ContactService.update', [i(3), st({ LastName: 'x' })]],
  ['ContactService.update', [i(2), st({})]],
  ['ContactService.load', [i(2), a('Id', 'NotAField')]],
  ['DataService.delete', [s('Contact'), i(3)]],
  ['ContactService.addWithDupCheck', [st({ Email: 'x@example.com' }), s('Phone')]],
  ['ContactService.load', [s('two'), FIELDS]],
];

function kinds(answers: unknown[]): string[] {
  return answers.map((r) => {
    const x = r as { kind: string; faultCode?: number };
    return x.kind === 'fault' ? `fault ${x.faultCode}` : 'value';
  });
}

describe('a legacy app over XML-RPC, translated', () => {
  it("gives the same answers, field for field, as Keap's classic XML-RPC, and leaves the same state", async () => {
    const { keap, proxy, keapSide, proxySide } = await runOnBoth(LEGACY_DAY);
    expect(proxy).toEqual(keap);
    expect(kinds(proxy)).toEqual([
      ...Array<string>(23).fill('value'),
      'fault 5',
      'fault 5',
      'fault 11',
      'fault 10',
      'fault 5',
      'fault 12',
      'fault 0',
    ]);
    // Ids: 2 (Grace) and 3 (Alan) after Ada; the sign-up twice is Grace again.
    expect(proxy.slice(0, 3)).toEqual([i(2), i(2), i(3)].map((value) => ({ kind: 'value', value })));
    const grace = (proxy[22] as { value: { value: Map<string, XmlRpcValue> } }).value.value;
    expect(Object.fromEntries(grace)).toMatchObject({
      FirstName: s('Grace'),
      LastName: s('Hopper'),
      Email: s('grace@example.com'),
      Phone1: s('555-0101'),
      City: s('Arlington'),
      Company: s('Navy'),
      Groups: s('1'),
    });
    // The same contacts, tags and opt statuses on both sides (times aside).
    const state = (crm: CrmStore) => ({
      contacts: [...crm.contacts.values()].map((c) => ({ ...c, create_time: '', update_time: '' })),
      tags: [...crm.assignments].map(([id, tags]) => [id, [...tags.keys()]]),
      statuses: [...crm.emailStatuses.values()].map((e) => [e.email, e.status]),
    });
    expect(state(proxySide.sim.crm)).toEqual(state(keapSide.sim.crm));
    // The translation never spoke XML-RPC to Keap.
    expect(proxySide.sim.counters.xmlrpcCalls).toBe(0);
  });

  it('the documented difference: v2 refuses a contact with no email, phone or address, which XML-RPC took', async () => {
    const h = await translating();
    const { keap, proxy } = await both(h, 'ContactService.add', st({ FirstName: 'Nobody' }));
    expect(keap).toMatchObject({ kind: 'value', value: { type: 'int' } });
    expect(proxy).toMatchObject({
      kind: 'fault',
      faultCode: 12,
      faultString: expect.stringMatching(/^\[InvalidParameter\]/),
    });
  });
});
