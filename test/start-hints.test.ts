// Traps an operator falls into at start, each answered by a line in the log: a loopback
// listener inside a container (`docker run -p 8080:8080` reaches nothing).
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/config.js';
import { detectContainer, type ContainerSigns } from '../src/config/process-facts.js';
import { startProxy, type RunningProxy } from '../src/http/server.js';
import { createLogger } from '../src/observability/log.js';
import { KeapSimulator } from './simulator/keap-simulator.js';
import { keyEnv, LogCapture } from './harness.js';

function signs(found: { env?: Record<string, string>; files?: string[]; cgroup?: string }): ContainerSigns {
  return {
    env: found.env ?? {},
    exists: (file) => (found.files ?? []).includes(file),
    read: (file) => (file === '/proc/1/cgroup' ? found.cgroup : undefined),
  };
}

describe('detectContainer', () => {
  it.each([
    ['Kubernetes (KUBERNETES_SERVICE_HOST)', signs({ env: { KUBERNETES_SERVICE_HOST: '10.0.0.1' } }), true],
    ['Docker (/.dockerenv)', signs({ files: ['/.dockerenv'] }), true],
    ['Podman (/run/.containerenv)', signs({ files: ['/run/.containerenv'] }), true],
    ['cgroup v1 naming docker', signs({ cgroup: '12:cpu:/docker/3f2a\n' }), true],
    ['cgroup v1 naming kubepods', signs({ cgroup: '5:memory:/kubepods/burstable/pod1\n' }), true],
    ['a host: cgroup v2 root, nothing else', signs({ cgroup: '0::/init.scope\n' }), false],
    ['a host: nothing readable', signs({ env: { KUBERNETES_SERVICE_HOST: '' } }), false],
  ])('%s: %s', (_what, found, expected) => {
    expect(detectContainer(found)).toBe(expected);
  });
});

describe('a loopback listener in a container', () => {
  let running: { proxy: RunningProxy; sim: KeapSimulator } | undefined;
  afterEach(async () => {
    await running?.proxy.close();
    await running?.sim.close();
    running = undefined;
  });

  async function start(env: Record<string, string>, inContainer: boolean): Promise<LogCapture> {
    const sim = await KeapSimulator.start();
    const logs = new LogCapture();
    const config = loadConfig({ env: { ...keyEnv(sim), ...env }, facts: { version: 'test', inContainer } });
    const proxy = await startProxy(config, { logger: createLogger(config.logLevel, logs) });
    running = { proxy, sim };
    return logs;
  }

  it('HOST loopback (the default) in a container: a warning at start that outside clients cannot reach it, and what to set', async () => {
    const logs = await start({ PORT: '0' }, true);
    const hints = logs.entries.filter((e) => e.event === 'loopback_in_container');
    expect(hints).toHaveLength(1);
    expect(hints[0]).toMatchObject({ level: 'warn', host: '127.0.0.1' });
    expect(String(hints[0]?.msg)).toMatch(/clients outside it .* cannot reach the proxy/);
    expect(String(hints[0]?.msg)).toContain('set HOST=0.0.0.0 together with PROXY_CLIENT_KEYS');
    // Said before the proxy listens, beside the starting line.
    const order = logs.entries.map((e) => e.event);
    expect(order.indexOf('loopback_in_container')).toBeLessThan(order.indexOf('listening'));
  });

  it('no hint outside a container, nor in one listening on all interfaces', async () => {
    const outside = await start({ PORT: '0' }, false);
    expect(outside.entries.some((e) => e.event === 'loopback_in_container')).toBe(false);
    await running?.proxy.close();
    await running?.sim.close();
    running = undefined;
    const wide = await start(
      { PORT: '0', HOST: '0.0.0.0', PROXY_CLIENT_KEYS: 'client-key-of-sixteen-chars-or-more' },
      true,
    );
    expect(wide.entries.some((e) => e.event === 'loopback_in_container')).toBe(false);
  });
});
