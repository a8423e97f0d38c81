// Accounts that share one OAuth client share its budget fairly, through the proxy: a trickle
// on one account is not stuck behind another's flood. Asserted by the order Keap receives the
// calls in, never by how long anything took.
import { describe, it, expect, afterEach } from 'vitest';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { loadConfig } from '../src/config/config.js';
import { startProxy } from '../src/http/server.js';
import { createLogger } from '../src/observability/log.js';
import { FileTokenStore } from '../src/tokens/token-store.js';
import { KeapSimulator, SIM_CLIENT_ID, SIM_CLIENT_SECRET } from './simulator/keap-simulator.js';
import { grantIssuedAt } from './grants.js';
import { LogCapture, send, tempDir, until } from './harness.js';

const open: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const close of open.splice(0)) await close();
});

describe('a fair share of one OAuth client between its accounts', () => {
  it("a trickle on one account departs within a slot or two of arriving, beside another account's flood", async () => {
    const sim = await KeapSimulator.start();
    const dir = tempDir();
    const client = { KEAP_CLIENT_ID: SIM_CLIENT_ID, KEAP_CLIENT_SECRET: SIM_CLIENT_SECRET };
    // Each account holds a grant of its own already (the simulator's access tokens), in its own store.
    for (const id of ['flood', 'trickle'])
      await new FileTokenStore(path.join(dir, 'data', 'accounts', `${id}.json`)).save(
        grantIssuedAt(Date.now(), { accessToken: sim.issueAccessToken(3600), refreshToken: `rt-${id}` }),
      );
    const file = path.join(dir, 'accounts.json');
    writeFileSync(file, JSON.stringify({ accounts: { flood: client, trickle: client } }));
    const logs = new LogCapture();
    const config = loadConfig({
      env: {
        KEAP_API_URL: sim.url,
        KEAP_TOKEN_URL: sim.tokenUrl,
        ACCOUNTS_FILE: file,
        TOKEN_STORE: path.join(dir, 'data', 'tokens.json'),
        RATE_LIMIT_PER_SECOND: '20',
        QUEUE_LIMIT: '100',
        PORT: '0',
        LOG_LEVEL: 'info',
      },
      cwd: dir,
    });
    const proxy = await startProxy(config, { logger: createLogger(config.logLevel, logs) });
    open.push(async () => {
      await proxy.close();
      await sim.close();
    });
    // Both accounts made (their grants loaded) before the race starts.
    for (const id of ['flood', 'trickle'])
      expect((await send(proxy.url, 'GET', `/accounts/${id}/crm/rest/v1/contacts?warm=1`)).status).toBe(200);
    sim.lastRequests.length = 0;
    // Keap meters the client across both accounts: two pacers of 18/s each would draw 429s here.
    sim.setRatePerSecond(20);

    const flood = Array.from({ length: 30 }, (_, i) =>
      send(proxy.url, 'GET', `/accounts/flood/crm/rest/v1/contacts?n=${i}`),
    );
    await until('the flood is queued and going', () => sim.lastRequests.length >= 3);
    const positions: { sentAfter: number; receivedAt: number }[] = [];
    for (let i = 0; i < 3; i++) {
      const sentAfter = sim.lastRequests.length;
      const r = await send(proxy.url, 'GET', `/accounts/trickle/crm/rest/v1/contacts?t=${i}`);
      expect(r.status).toBe(200);
      positions.push({ sentAfter, receivedAt: sim.lastRequests.findIndex((q) => q.url.endsWith(`t=${i}`)) });
    }
    const answers = await Promise.all(flood);
    expect(answers.map((r) => r.status)).toEqual(Array<number>(30).fill(200));
    // Each trickle call reached Keap at most two departures after it was sent (the flood's
    // next, which may already be booked, and its own), while 20+ flood calls still waited.
    for (const p of positions) expect(p.receivedAt - p.sentAfter).toBeLessThanOrEqual(2);
    expect(positions.at(-1)!.receivedAt).toBeLessThan(25);
    // The flood got the rest: every one of its calls went, none refused, and Keap's limit on
    // the client held for both accounts together.
    expect(sim.lastRequests.filter((q) => q.url.includes('n=')).length).toBe(30);
    expect(sim.counters.throttled).toBe(0);
  });
});
