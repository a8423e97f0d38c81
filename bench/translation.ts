// `npm run build && node dist/bench/translation.js`: the cost of XML-RPC translation
// (XMLRPC_MODE=translate, issue 11) against the REST v2 call it makes, through one keap-proxy
// in one run: an XML-RPC ContactService.load (parse, one REST GET, map, write) against a REST
// v2 GET of the same contact, proxied as it is. Rounds alternate the two; the figures are the
// medians of the rounds, and the ratio the median of each round's ratio.
//
// The simulator, keap-proxy (pacing off, info log to a file) and autocannon share this one
// process: both paths pay for that alike, so the ratio holds, not the absolute rates.
//
// Settings (environment): BENCH_TRANSLATION_ROUNDS (default 8), BENCH_TRANSLATION_SECONDS
// (default 3), BENCH_TRANSLATION_CONNECTIONS (default 20).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import autocannon from 'autocannon';
import { loadConfig } from '../src/config/config.js';
import { startProxy } from '../src/http/server.js';
import { createLogDestination, createLogger } from '../src/observability/log.js';
import { KeapSimulator, SIM_API_KEY } from '../test/simulator/keap-simulator.js';

const env = process.env;
const rounds = Number(env.BENCH_TRANSLATION_ROUNDS ?? 8);
const seconds = Number(env.BENCH_TRANSLATION_SECONDS ?? 3);
const connections = Number(env.BENCH_TRANSLATION_CONNECTIONS ?? 20);

const dir = mkdtempSync(path.join(tmpdir(), 'keap-proxy-bench-translation-'));
const sim = await KeapSimulator.start({ xmlrpc: 'keap' });
sim.crm.createContact({
  given_name: 'Ada',
  family_name: 'Lovelace',
  email_addresses: [{ email: 'ada@example.com', field: 'EMAIL1' }],
  phone_numbers: [{ number: '555-0100', field: 'PHONE1' }],
  fax_numbers: [],
  addresses: [{ field: 'BILLING', locality: 'London', country_code: 'GBR' }],
  custom_fields: [],
});
const config = loadConfig({
  cwd: dir,
  env: {
    KEAP_API_URL: sim.url,
    KEAP_API_KEY: SIM_API_KEY,
    PORT: '0',
    RATE_LIMIT_PER_SECOND: '0',
    XMLRPC_MODE: 'translate',
    LOG_LEVEL: 'info',
  },
});
const destination = createLogDestination(path.join(dir, 'log'));
const proxy = await startProxy(config, { logger: createLogger('info', destination) });

const call =
  '<?xml version="1.0"?><methodCall><methodName>ContactService.load</methodName><params>' +
  '<param><value><string>k</string></value></param><param><value><i4>1</i4></value></param>' +
  '<param><value><array><data><value>Id</value><value>FirstName</value><value>LastName</value><value>Email</value>' +
  '<value>Phone1</value><value>City</value><value>Country</value></data></array></value></param></params></methodCall>';
const kinds = {
  'xmlrpc-translated': {
    method: 'POST' as const,
    path: '/api/xmlrpc',
    body: call,
    headers: { 'content-type': 'text/xml' },
  },
  'rest-v2': { method: 'GET' as const, path: '/crm/rest/v2/contacts/1', body: undefined, headers: {} },
};

interface Figure {
  rps: number;
  p99: number;
  non2xx: number;
}

async function load(kind: keyof typeof kinds): Promise<Figure> {
  const k = kinds[kind];
  const result = await autocannon({
    url: proxy.url + k.path,
    method: k.method,
    body: k.body,
    headers: k.headers,
    connections,
    duration: seconds,
  });
  return { rps: result.requests.average, p99: result.latency.p99, non2xx: result.non2xx + result.errors };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 === 1
    ? (s[(s.length - 1) / 2] as number)
    : ((s[s.length / 2 - 1] as number) + (s[s.length / 2] as number)) / 2;
};

try {
  // Warm both paths.
  await load('rest-v2');
  await load('xmlrpc-translated');
  const figures: Record<keyof typeof kinds, Figure[]> = { 'xmlrpc-translated': [], 'rest-v2': [] };
  const ratios: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const order: (keyof typeof kinds)[] =
      r % 2 === 0 ? ['rest-v2', 'xmlrpc-translated'] : ['xmlrpc-translated', 'rest-v2'];
    const round: Partial<Record<keyof typeof kinds, Figure>> = {};
    for (const kind of order) round[kind] = await load(kind);
    figures['xmlrpc-translated'].push(round['xmlrpc-translated'] as Figure);
    figures['rest-v2'].push(round['rest-v2'] as Figure);
    ratios.push((round['xmlrpc-translated'] as Figure).rps / (round['rest-v2'] as Figure).rps);
    console.log(
      `  round ${r + 1}/${rounds}  rest-v2 ${Math.round((round['rest-v2'] as Figure).rps)} req/s, xmlrpc-translated ${Math.round((round['xmlrpc-translated'] as Figure).rps)} req/s`,
    );
  }
  console.log(
    `translation: ${connections} connections, ${rounds} rounds of ${seconds} s, one keap-proxy (XMLRPC_MODE=translate, pacing off)`,
  );
  for (const kind of ['rest-v2', 'xmlrpc-translated'] as const) {
    const f = figures[kind];
    console.log(
      `  ${kind.padEnd(18)} ${Math.round(median(f.map((x) => x.rps)))} req/s  p99 ${median(f.map((x) => x.p99))} ms  non-2xx ${f.reduce((n, x) => n + x.non2xx, 0)}`,
    );
  }
  console.log(
    `  xmlrpc-translated / rest-v2, throughput  ${median(ratios).toFixed(3)}x (median of the rounds' ratios)`,
  );
} finally {
  await proxy.close();
  await destination.close();
  await sim.close();
  rmSync(dir, { recursive: true, force: true });
}
