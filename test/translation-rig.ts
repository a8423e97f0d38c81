// Differential rig for XMLRPC_MODE=translate: the same legacy calls answered by Keap's classic
// XML-RPC (the simulator's) and by the proxy's translation to REST v2, each side on its own
// simulator that starts with the same contacts.
import { expect, type afterEach } from 'vitest';
import { parseMethodResponse, writeMethodCall, type XmlRpcValue } from '../src/keap/xmlrpc-codec.js';
import type { CrmStore } from './simulator/crm.js';
import { harnessPerTest, send, SIM_API_KEY, type Harness } from './harness.js';

export const s = (value: string): XmlRpcValue => ({ type: 'string', value });
export const i = (value: number): XmlRpcValue => ({ type: 'int', value });
export const b = (value: boolean): XmlRpcValue => ({ type: 'boolean', value });
export const a = (...values: string[]): XmlRpcValue => ({ type: 'array', value: values.map(s) });
export const ints = (...values: number[]): XmlRpcValue => ({ type: 'array', value: values.map(i) });
export const st = (members: Record<string, XmlRpcValue | string | number>): XmlRpcValue => ({
  type: 'struct',
  value: new Map(
    Object.entries(members).map(([k, v]) => [k, typeof v === 'string' ? s(v) : typeof v === 'number' ? i(v) : v]),
  ),
});

export type Script = readonly (readonly [string, XmlRpcValue[]])[];

/** Ada Lovelace, contact 1: the contact every translation test starts with. */
export function seedAda(crm: CrmStore): void {
  crm.createContact({
    given_name: 'Ada',
    family_name: 'Lovelace',
    job_title: 'Analyst',
    company: { company_name: 'Engines & Co' },
    email_addresses: [
      { email: 'ada@example.com', field: 'EMAIL1' },
      { email: 'ada2@example.com', field: 'EMAIL2' },
    ],
    phone_numbers: [{ number: '555-0100', field: 'PHONE1' }],
    fax_numbers: [],
    addresses: [{ field: 'BILLING', locality: 'London', country_code: 'GBR' }],
    custom_fields: [],
  });
}

export function translationRig(hook: typeof afterEach) {
  const startHarness = harnessPerTest(hook);

  async function translating(
    seed: (crm: CrmStore) => void = seedAda,
    env: Record<string, string> = {},
  ): Promise<Harness> {
    const h = await startHarness({
      mode: 'key',
      env: { XMLRPC_MODE: 'translate', LOG_LEVEL: 'info', ...env },
      sim: { xmlrpc: 'keap' },
    });
    seed(h.sim.crm);
    return h;
  }

  /** One call, to Keap's XML-RPC directly and through the translating proxy of the same harness. */
  async function both(
    h: Harness,
    methodName: string,
    ...params: XmlRpcValue[]
  ): Promise<{ keap: unknown; proxy: unknown }> {
    const body = writeMethodCall({ methodName, params: [s(SIM_API_KEY), ...params] });
    const keap = await send(h.sim.url, 'POST', '/crm/xmlrpc/v1', { body, headers: { 'x-keap-api-key': SIM_API_KEY } });
    const proxy = await send(h.proxy.url, 'POST', '/api/xmlrpc', { body });
    expect(keap.status).toBe(200);
    expect(proxy.status).toBe(200);
    expect(proxy.headers['content-type']).toBe('text/xml; charset=utf-8');
    return { keap: parseMethodResponse(keap.body), proxy: parseMethodResponse(proxy.body) };
  }

  /**
   * A script of calls that changes state: Keap's classic XML-RPC runs it on one simulator and the
   * translation on another that starts the same; the answers, in order, of each.
   */
  async function runOnBoth(
    script: Script,
    seed: (crm: CrmStore) => void = seedAda,
  ): Promise<{ keap: unknown[]; proxy: unknown[]; keapSide: Harness; proxySide: Harness }> {
    const run = async (base: string, path: string): Promise<unknown[]> => {
      const out: unknown[] = [];
      for (const [methodName, params] of script) {
        const body = writeMethodCall({ methodName, params: [s(SIM_API_KEY), ...params] });
        const r = await send(base, 'POST', path, { body, headers: { 'x-keap-api-key': SIM_API_KEY } });
        expect(r.status).toBe(200);
        out.push(parseMethodResponse(r.body));
      }
      return out;
    };
    const keapSide = await translating(seed);
    const proxySide = await translating(seed);
    return {
      keap: await run(keapSide.sim.url, '/crm/xmlrpc/v1'),
      proxy: await run(proxySide.proxy.url, '/api/xmlrpc'),
      keapSide,
      proxySide,
    };
  }

  /** One call through the translating proxy. */
  async function call(h: Harness, methodName: string, ...params: XmlRpcValue[]): Promise<unknown> {
    const body = writeMethodCall({ methodName, params: [s('k'), ...params] });
    const r = await send(h.proxy.url, 'POST', '/api/xmlrpc', { body });
    expect(r.status).toBe(200);
    return parseMethodResponse(r.body);
  }

  return { startHarness, translating, both, runOnBoth, call };
}
