// What `npm run demo` starts: the built-in Keap simulator and a proxy wired to it, with the
// redirect URI set so /oauth/start completes in a browser, and the lines that tell a person
// how to try it (the proxy, /oauth/start, `keap-proxy auth`, key mode). demo.ts is the
// process edge that runs it; tests start it in-process.
import { mkdtempSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import {
  KeapSimulator,
  SIM_API_KEY,
  SIM_CLIENT_ID,
  SIM_CLIENT_SECRET,
  SIM_SEED,
} from '../test/simulator/keap-simulator.js';
import { loadConfig, type Config } from '../src/config/config.js';
import { readPackageVersion } from '../src/config/process-facts.js';
import { startProxy, type RunningProxy } from '../src/http/server.js';
import type { Logger } from '../src/observability/log.js';

/** Where `keap-proxy auth`, run beside the demo, listens for the simulator's redirect. */
export const DEMO_AUTH_REDIRECT_URI = 'http://127.0.0.1:8765/callback';

export interface DemoOptions {
  /** PORT (default 8080; 0 picks a free one) and LOG_LEVEL (default info), as the environment gives them. */
  env?: { PORT?: string | undefined; LOG_LEVEL?: string | undefined };
  /** Instead of the proxy's own log on stdout (tests). */
  logger?: Logger;
}

export interface Demo {
  readonly sim: KeapSimulator;
  readonly proxy: RunningProxy;
  readonly config: Config;
  /** What the demo prints: how to try it. */
  readonly instructions: string;
  close(): Promise<void>;
}

/** Throws ConfigError for bad PORT or LOG_LEVEL (nothing is left running then). */
export async function startDemo(options: DemoOptions = {}): Promise<Demo> {
  const env = options.env ?? {};
  const dir = mkdtempSync(path.join(tmpdir(), 'keap-proxy-demo-'));
  // The redirect URI names the proxy's port, so it is known before the proxy listens.
  const port = env.PORT === '0' ? await freePort() : (env.PORT ?? '8080');
  const redirectUri = `http://127.0.0.1:${port}/oauth/callback`;
  // As Keap does, the simulator's authorize page sends the browser back only to the app's
  // registered redirect URIs: the proxy's callback, and the one `keap-proxy auth` listens on.
  const sim = await KeapSimulator.start({ ratePerSecond: 25, redirectUris: [redirectUri, DEMO_AUTH_REDIRECT_URI] });
  let config: Config;
  let proxy: RunningProxy;
  try {
    config = loadConfig({
      env: {
        PORT: port,
        LOG_LEVEL: env.LOG_LEVEL ?? 'info',
        KEAP_API_URL: sim.url,
        KEAP_TOKEN_URL: sim.tokenUrl,
        KEAP_AUTHORIZE_URL: sim.authorizeUrl,
        KEAP_CLIENT_ID: SIM_CLIENT_ID,
        KEAP_CLIENT_SECRET: SIM_CLIENT_SECRET,
        KEAP_REDIRECT_URI: redirectUri,
        KEAP_REFRESH_TOKEN: SIM_SEED,
        TOKEN_STORE: path.join(dir, 'tokens.json'),
      },
      cwd: dir, // a temp dir: no config file is picked up, the demo is self-contained
      // The demo is a process edge too: its proxy says which version it is (/readyz, the start line).
      facts: { version: readPackageVersion(import.meta.url), inContainer: false },
    });
    proxy = await startProxy(config, options.logger === undefined ? {} : { logger: options.logger });
  } catch (err) {
    await sim.close();
    throw err;
  }
  return {
    sim,
    proxy,
    config,
    instructions: instructions(sim, proxy.url, dir),
    close: async () => {
      await proxy.close();
      await sim.close();
    },
  };
}

function instructions(sim: KeapSimulator, base: string, dir: string): string {
  const oauth =
    `KEAP_API_URL=${sim.url} KEAP_TOKEN_URL=${sim.tokenUrl} KEAP_AUTHORIZE_URL=${sim.authorizeUrl} ` +
    `KEAP_CLIENT_ID=${SIM_CLIENT_ID} KEAP_CLIENT_SECRET=${SIM_CLIENT_SECRET}`;
  const store = path.join(dir, 'auth-tokens.json');
  return [
    '',
    `keap-proxy demo: the proxy listens on ${base} in front of a Keap simulator at ${sim.url}.`,
    'Clients send no Keap credentials; the proxy injects them. Try, in another terminal:',
    '',
    `  curl -s ${base}/crm/rest/v1/contacts`,
    `  curl -s ${base}/crm/rest/v1/__echo -H 'Authorization: Bearer client-junk'   # see the injected bearer token`,
    `  curl -s ${base}/crm/rest/v1/contacts -X POST -H 'content-type: application/json' -d '{"given_name":"Ada","email_addresses":[{"email":"ada@example.com","field":"EMAIL1"}]}'`,
    `  curl -s ${base}/crm/xmlrpc/v1 -H 'content-type: text/xml' -d '<?xml version="1.0"?><methodCall><methodName>DataService.echo</methodName><params><param><value><string></string></value></param></params></methodCall>'`,
    `  curl -s ${base}/readyz`,
    '',
    'OAuth in a browser: open',
    '',
    `  ${base}/oauth/start`,
    '',
    "and answer the simulator's consent page (any email and password log in); the proxy then uses the new grant.",
    '',
    "The simulator's app (test constants, not secrets):",
    '',
    `  client id      ${SIM_CLIENT_ID}`,
    `  client secret  ${SIM_CLIENT_SECRET}`,
    `  API key        ${SIM_API_KEY}`,
    '',
    '`keap-proxy auth` against the simulator (from the repository; it prints an authorize URL to open):',
    '',
    `  ${oauth} KEAP_REDIRECT_URI=${DEMO_AUTH_REDIRECT_URI} TOKEN_STORE=${store} npx keap-proxy auth`,
    '',
    'then a proxy serving that grant on another port:',
    '',
    `  ${oauth} TOKEN_STORE=${store} PORT=8081 npx keap-proxy`,
    '',
    'Key mode (no OAuth: the key goes in every call):',
    '',
    `  KEAP_API_URL=${sim.url} KEAP_API_KEY=${SIM_API_KEY} PORT=8082 npx keap-proxy`,
    '',
    'Ctrl-C stops both.',
    '',
  ].join('\n');
}

function freePort(): Promise<string> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(String(port)));
    });
  });
}
