// Trying OAuth locally with `npm run demo`: wired so a browser completes /oauth/start against
// the simulator's consent page; what the demo prints. Real servers on loopback; the tests play
// the browser with plain HTTP.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { DEMO_AUTH_REDIRECT_URI, startDemo, type Demo } from '../demo/demo-setup.js';
import { createLogger } from '../src/observability/log.js';
import { LogCapture, send } from './harness.js';
import { get, hiddenFields, post } from './oauth-local.js';
import { SIM_API_KEY, SIM_CLIENT_ID, SIM_SEED } from './simulator/keap-simulator.js';

describe('npm run demo', () => {
  let demo: Demo | undefined;
  afterEach(async () => {
    await demo?.close();
    demo = undefined;
  });

  const start = async (): Promise<{ demo: Demo; logs: LogCapture }> => {
    const logs = new LogCapture();
    demo = await startDemo({ env: { PORT: '0' }, logger: createLogger('info', logs) });
    return { demo, logs };
  };

  it("sets KEAP_REDIRECT_URI to the proxy's /oauth/callback and KEAP_AUTHORIZE_URL to the simulator's page", async () => {
    const { demo } = await start();
    const creds = demo.config.accounts[0]?.credentials;
    expect(creds?.mode).toBe('oauth');
    expect(creds?.mode === 'oauth' ? creds.redirectUri : undefined).toBe(`${demo.proxy.url}/oauth/callback`);
    expect(demo.config.keapAuthorizeUrl.href).toBe(demo.sim.authorizeUrl);
    expect(demo.instructions).toContain(`${demo.proxy.url}/oauth/start`);
  });

  it("says which version it is, package.json's, on /readyz", async () => {
    const { demo } = await start();
    const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
    const ready = await send(demo.proxy.url, 'GET', '/readyz');
    expect(ready.json()).toMatchObject({ version: pkg.version });
  });

  it("/oauth/start in a browser: consent page, Allow, and the proxy's callback puts the new grant in use", async () => {
    const { demo, logs } = await start();
    const started = await get(`${demo.proxy.url}/oauth/start`);
    expect(started.status).toBe(302);
    expect(started.location!.startsWith(`${demo.sim.authorizeUrl}?`)).toBe(true);
    const consent = await get(started.location!);
    expect(consent.status).toBe(200);
    expect(consent.body).toContain(SIM_CLIENT_ID);
    const answer = await post(
      demo.sim.authorizeUrl,
      new URLSearchParams([...hiddenFields(consent.body), ['decision', 'allow']]),
    );
    expect(answer.status).toBe(302);
    expect(answer.location!.startsWith(`${demo.proxy.url}/oauth/callback?`)).toBe(true);
    const done = await get(answer.location!);
    expect(done.status).toBe(200);
    expect(done.body).toContain('keap-proxy is authorized');
    expect(demo.sim.counters.codeGrants).toBe(1);
    // The seed was replaced by the code's grant, and calls go through with it.
    expect(demo.sim.currentRefreshToken()).not.toBe(SIM_SEED);
    expect((await fetch(`${demo.proxy.url}/crm/rest/v1/contacts`)).status).toBe(200);
    expect(logs.entries.some((e) => e.event === 'oauth_authorized')).toBe(true);
    // No code or token in the proxy's log.
    const code = new URL(answer.location!).searchParams.get('code')!;
    expect(logs.text()).not.toContain(code);
  });

  it('Deny on the consent page: the callback answers authorization_denied and no code is exchanged', async () => {
    const { demo } = await start();
    const before = demo.sim.currentRefreshToken();
    const started = await get(`${demo.proxy.url}/oauth/start`);
    const consent = await get(started.location!);
    const answer = await post(
      demo.sim.authorizeUrl,
      new URLSearchParams([...hiddenFields(consent.body), ['decision', 'deny']]),
    );
    expect(answer.location!.startsWith(`${demo.proxy.url}/oauth/callback?`)).toBe(true);
    const done = await get(answer.location!);
    expect(done.status).toBe(400);
    expect(JSON.parse(done.body)).toMatchObject({ error: 'authorization_denied' });
    expect(demo.sim.counters.codeGrants).toBe(0);
    expect(demo.sim.currentRefreshToken()).toBe(before);
  });

  it('prints the simulator client id, the key, and the exact `npx keap-proxy` commands', async () => {
    const tsx = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;
    const child = spawn(process.execPath, ['--import', tsx, path.resolve(import.meta.dirname, '../demo/demo.ts')], {
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', PORT: '0', LOG_LEVEL: 'warn' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let printed = '';
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    await new Promise<void>((resolve, reject) => {
      child.stderr.on('data', (chunk: Buffer) => {
        printed += chunk.toString('utf8');
        if (printed.includes('Ctrl-C stops both.')) resolve();
      });
      child.once('exit', () => reject(new Error(`the demo exited:\n${printed}`)));
    });
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(printed).toContain(`client id      ${SIM_CLIENT_ID}`);
    expect(printed).toContain(`API key        ${SIM_API_KEY}`);
    const lines = printed.split('\n').map((l) => l.trim());
    const auth = lines.find((l) => l.endsWith('npx keap-proxy auth'));
    expect(auth).toMatch(
      /^KEAP_API_URL=http:\/\/127\.0\.0\.1:\d+ KEAP_TOKEN_URL=\S+\/token KEAP_AUTHORIZE_URL=\S+\/app\/oauth\/authorize KEAP_CLIENT_ID=sim-client-id KEAP_CLIENT_SECRET=sim-client-secret KEAP_REDIRECT_URI=\S+ TOKEN_STORE=\S+ npx keap-proxy auth$/,
    );
    expect(auth).toContain(`KEAP_REDIRECT_URI=${DEMO_AUTH_REDIRECT_URI} `);
    expect(lines.some((l) => l.includes(`KEAP_API_KEY=${SIM_API_KEY}`) && l.endsWith('npx keap-proxy'))).toBe(true);
    expect(lines.some((l) => /^http:\/\/127\.0\.0\.1:\d+\/oauth\/start$/.test(l))).toBe(true);
    // No command is shown as if keap-proxy were installed globally.
    expect(
      lines.filter(
        (l) => /(^|\s)keap-proxy(\s|$)/.test(l) && !/npx keap-proxy/.test(l) && !l.startsWith('keap-proxy demo:'),
      ),
    ).toEqual([]);
  });
});
