// `npm run demo`: the built-in Keap simulator and a proxy wired to it, so the proxy can be
// tried with no Keap account. Like cli.ts, this is a process edge and may read process.env.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { KeapSimulator, SIM_CLIENT_ID, SIM_CLIENT_SECRET, SIM_SEED } from '../test/simulator/keap-simulator.js';
import { ConfigError, loadConfig } from '../src/config/config.js';
import { startProxy } from '../src/http/server.js';

async function main(): Promise<void> {
  const sim = await KeapSimulator.start({ ratePerSecond: 25 });
  const dir = mkdtempSync(path.join(tmpdir(), 'keap-proxy-demo-'));
  let proxy;
  try {
    const config = loadConfig({
      env: {
        PORT: process.env.PORT ?? '8080',
        LOG_LEVEL: process.env.LOG_LEVEL ?? 'info',
        KEAP_API_URL: sim.url,
        KEAP_TOKEN_URL: sim.tokenUrl,
        KEAP_CLIENT_ID: SIM_CLIENT_ID,
        KEAP_CLIENT_SECRET: SIM_CLIENT_SECRET,
        KEAP_REFRESH_TOKEN: SIM_SEED,
        TOKEN_STORE: path.join(dir, 'tokens.json'),
      },
      cwd: dir, // a temp dir: no config file is picked up, the demo is self-contained
    });
    proxy = await startProxy(config);
  } catch (err) {
    await sim.close();
    if (err instanceof ConfigError) process.stderr.write(`${err.message}\n`);
    else process.stderr.write(`demo could not start: ${(err as Error).message}\n`);
    process.exitCode = 1;
    return;
  }
  const base = proxy.url;
  process.stderr.write(
    [
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
      'Ctrl-C stops both.',
      '',
    ].join('\n'),
  );
  const stop = (): void => {
    void proxy.close().then(() => sim.close());
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

void main();
