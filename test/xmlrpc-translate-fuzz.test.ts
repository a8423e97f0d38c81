// Every translation under arbitrary arguments (fast-check): whatever an app sends, the answer is
// a value or one of Keap's faults, never another error (which would be a 500 or a crash). The
// REST side is the simulator's own REST v2 logic, called in process over one CRM store.
import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import type { XmlRpcValue } from '../src/keap/xmlrpc-codec.js';
import { ContactModel } from '../src/keap/translate/contact-model.js';
import { TRANSLATIONS } from '../src/keap/translate/methods.js';
import { XmlRpcFault, type RestCaller, type TranslationContext } from '../src/keap/translate/rest.js';
import { CrmStore } from './simulator/crm.js';
import { handleRestV2 } from './simulator/rest-v2.js';
import { seedAda } from './translation-rig.js';

function simulatorRest(store: CrmStore, paths: string[]): RestCaller {
  return {
    call(method, path, body) {
      paths.push(`${method} ${path}`);
      const [route = '', query = ''] = path.replace(/^\/crm\/rest\/v2\//, '').split('?', 2);
      const payload = Buffer.from(body === undefined ? '' : JSON.stringify(body));
      const answer = handleRestV2(store, method, route, query, payload);
      return Promise.resolve(
        answer === undefined
          ? { status: 404, body: { code: 404, message: 'Not Found' } }
          : { status: answer.status, body: answer.body },
      );
    },
  };
}

const FIELD_NAMES = [
  'Id',
  'FirstName',
  'Email',
  'Groups',
  'LastUpdated',
  '_FavouriteColour',
  '_ShoeSize',
  'GroupName',
  'ContactId',
  'GroupId',
  'Nope',
];
const TABLES = ['Contact', 'ContactGroup', 'ContactGroupAssign', 'ContactGroupCategory', 'Invoice', 'Nope'];

const text = fc.oneof(
  fc.constantFrom(
    ...FIELD_NAMES,
    ...TABLES,
    '%',
    'Ada%',
    '%a%',
    '~null~',
    '~<>~1',
    '~>=~ 2026-01-01',
    'ada@example.com',
    'a;ids==1',
    '*',
    'Email',
  ),
  fc.string({ maxLength: 12 }),
);

const value: fc.Arbitrary<XmlRpcValue> = fc.letrec<{ value: XmlRpcValue }>((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.integer({ min: -3, max: 2 ** 31 - 1 }).map((n) => ({ type: 'int' as const, value: n % 7 === 0 ? n : n % 5 })),
    fc.boolean().map((b) => ({ type: 'boolean' as const, value: b })),
    text.map((s) => ({ type: 'string' as const, value: s })),
    fc.double({ noNaN: true }).map((d) => ({ type: 'double' as const, value: d })),
    fc.constantFrom('20260101T10:00:00', 'garbage').map((v) => ({ type: 'dateTime' as const, value: v })),
    fc.constant({ type: 'nil' as const }),
    fc.uint8Array({ maxLength: 4 }).map((a) => ({ type: 'base64' as const, value: Buffer.from(a) })),
    fc.array(tie('value'), { maxLength: 3 }).map((a) => ({ type: 'array' as const, value: a })),
    fc
      .uniqueArray(fc.tuple(fc.constantFrom(...FIELD_NAMES), tie('value')), { maxLength: 3, selector: ([k]) => k })
      .map((entries) => ({ type: 'struct' as const, value: new Map(entries) })),
  ),
})).value;

type Kind = 'int' | 'string' | 'array' | 'struct' | 'boolean' | 'scalar';

/** Each method's arguments after the key, as Keap's XML-RPC took them: well-typed calls with arbitrary contents reach the REST side. */
const SIGNATURES: Record<string, Kind[]> = {
  'ContactService.add': ['struct'],
  'ContactService.addWithDupCheck': ['struct', 'string'],
  'ContactService.update': ['int', 'struct'],
  'ContactService.load': ['int', 'array'],
  'ContactService.findByEmail': ['string', 'array'],
  'ContactService.merge': ['int', 'int'],
  'ContactService.addToGroup': ['int', 'int'],
  'ContactService.removeFromGroup': ['int', 'int'],
  'DataService.query': ['string', 'int', 'int', 'struct', 'array', 'string', 'boolean'],
  'DataService.findByField': ['string', 'int', 'int', 'string', 'scalar', 'array'],
  'DataService.count': ['string', 'struct'],
  'DataService.load': ['string', 'int', 'array'],
  'DataService.add': ['string', 'struct'],
  'DataService.update': ['string', 'int', 'struct'],
  'DataService.delete': ['string', 'int'],
  'APIEmailService.optIn': ['string', 'string'],
  'APIEmailService.optOut': ['string', 'string'],
  'APIEmailService.getOptStatus': ['string'],
};

const small = fc.integer({ min: -1, max: 8 }).map((n) => ({ type: 'int' as const, value: n }));
const ofKind: Record<Kind, fc.Arbitrary<XmlRpcValue>> = {
  int: small,
  string: text.map((v) => ({ type: 'string' as const, value: v })),
  boolean: fc.boolean().map((b) => ({ type: 'boolean' as const, value: b })),
  array: fc
    .array(
      fc.oneof(
        fc.constantFrom(...FIELD_NAMES).map((v) => ({ type: 'string' as const, value: v })),
        value,
      ),
      {
        maxLength: 4,
      },
    )
    .map((a) => ({ type: 'array' as const, value: a })),
  struct: fc
    .uniqueArray(fc.tuple(fc.constantFrom(...FIELD_NAMES), fc.oneof(small, value)), {
      maxLength: 3,
      selector: ([k]) => k,
    })
    .map((entries) => ({ type: 'struct' as const, value: new Map(entries) })),
  scalar: fc.oneof(
    small,
    text.map((v) => ({ type: 'string' as const, value: v })),
  ),
};

const call = fc
  .constantFrom(...Object.keys(SIGNATURES))
  .chain((method) =>
    fc.tuple(
      fc.constant(method),
      fc.oneof(fc.tuple(...(SIGNATURES[method] as Kind[]).map((k) => ofKind[k])), fc.array(value, { maxLength: 8 })),
    ),
  );

describe('translations under arbitrary arguments', () => {
  it('names every translated method in the fuzz signatures', () => {
    expect(Object.keys(SIGNATURES).sort()).toEqual([...TRANSLATIONS.keys()].sort());
  });

  it('answer a value or a Keap fault, never another error', async () => {
    const seen = { values: 0, faults: 0, restCalls: 0 };
    await fc.assert(
      fc.asyncProperty(call, async ([method, params]) => {
        const store = new CrmStore();
        seedAda(store);
        const paths: string[] = [];
        const keap: TranslationContext = { rest: simulatorRest(store, paths), model: new ContactModel() };
        const translation = TRANSLATIONS.get(method)!;
        try {
          const out = await translation([{ type: 'string', value: 'key' }, ...params], keap);
          expect(out).toHaveProperty('type');
          seen.values += 1;
        } catch (err) {
          if (!(err instanceof XmlRpcFault)) throw err;
          expect(err.faultString.length).toBeGreaterThan(0);
          seen.faults += 1;
        }
        seen.restCalls += paths.length;
        // A value holding v2's filter grammar ('a;ids==1') never reaches a filter as grammar.
        for (const p of paths) {
          const filter = new URL(p.split(' ')[1]!, 'http://x').searchParams.get('filter') ?? '';
          expect(filter).not.toContain('a;ids==1');
        }
      }),
      { numRuns: 1000 },
    );
    // The arguments reach past the argument checks: some calls answered, some went to REST.
    expect(seen.values).toBeGreaterThan(40);
    expect(seen.restCalls).toBeGreaterThan(0);
  });
});
