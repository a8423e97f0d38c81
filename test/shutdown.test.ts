// The stop a pod needs (RunningProxy.shutdown; SIGTERM in src/cli/stop-on-signal.ts): /readyz red at
// once, connections still accepted during the delay, then none; requests in flight drained
// within the grace; what is left is cut and logged as cut by the proxy, not by its client.
import { describe, it, expect, afterEach } from 'vitest';
import net, { type Socket } from 'node:net';
import { EventEmitter } from 'node:events';
import { stopOnSignal } from '../src/cli/stop-on-signal.js';
import { send, startRawRig, until, type RawRig } from './harness.js';
import { MANUAL, ok } from './raw-upstream.js';

const open: RawRig[] = [];
afterEach(async () => {
  for (const r of open.splice(0)) await r.upstream.close();
});

async function rig(): Promise<RawRig> {
  const r = await startRawRig();
  open.push(r);
  return r;
}

describe('shutdown', () => {
  it('turns /readyz red at once, still accepts during the delay, drains what is in flight, then stops', async () => {
    const { upstream, proxy, logs } = await rig();
    const held: Socket[] = [];
    upstream.respond = (req, socket) => {
      if (!req.target.endsWith('/slow')) return ok();
      held.push(socket);
      return MANUAL;
    };
    const slow = send(proxy.url, 'GET', '/crm/rest/v1/slow');
    await until('the slow request to reach Keap', () => held.length === 1);
    expect((await send(proxy.url, 'GET', '/readyz')).status).toBe(200);

    const stopped = proxy.shutdown({ delayMs: 1000, graceMs: 10_000 });
    const ready = await send(proxy.url, 'GET', '/readyz');
    expect(ready.status).toBe(503);
    expect(ready.json()).toMatchObject({ error: 'shutting_down' });
    expect(ready.headers.connection).toBe('close');
    // A new connection during the delay is served (the endpoints may not know yet), and told to close.
    const late = await send(proxy.url, 'GET', '/crm/rest/v1/contacts');
    expect(late.status).toBe(200);
    expect(late.headers.connection).toBe('close');

    held[0]?.write(ok('{"slow":true}'));
    expect((await slow).json()).toEqual({ slow: true });
    // Proxied requests only: /readyz is answered by the proxy itself.
    expect(await stopped).toEqual({ requests: 2, cut: 0 });
    // Stopped: nothing listens any more.
    await expect(send(proxy.url, 'GET', '/healthz')).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    expect(logs.entries.filter((e) => e.outcome === 'cut_by_shutdown')).toEqual([]);
  });

  it('cuts what the grace did not see finish, and logs it as cut by the proxy, not by the client', async () => {
    const { upstream, proxy, logs } = await rig();
    upstream.respond = (req) => (req.target.endsWith('/never') ? MANUAL : ok());
    const never = send(proxy.url, 'POST', '/crm/rest/v1/never', { body: '{}' }).then(
      () => undefined,
      (err: unknown) => err,
    );
    await until('the request to reach Keap', () => upstream.requests.length === 1);

    const counts = await proxy.shutdown({ delayMs: 0, graceMs: 50 });
    expect(counts).toEqual({ requests: 1, cut: 1 });
    expect(await never).toMatchObject({ code: 'ECONNRESET' });
    const line = logs.entries.find((e) => e.path === '/crm/rest/v1/never');
    expect(line).toMatchObject({ outcome: 'cut_by_shutdown', method: 'POST' });
  });

  it('with nothing in flight, stops as soon as the delay is over', async () => {
    const { proxy } = await rig();
    expect((await send(proxy.url, 'GET', '/crm/rest/v1/contacts')).status).toBe(200);
    // The grace is never waited for when nothing is in flight: the test would time out if it were.
    expect(await proxy.shutdown({ delayMs: 0, graceMs: 60_000 })).toEqual({ requests: 1, cut: 0 });
  });
});

describe('SIGTERM (src/cli/stop-on-signal.ts)', () => {
  it('stops the proxy once, whatever the signals that follow, logs `stopped` with the counts, and exits 0', async () => {
    const { proxy, logs } = await rig();
    expect((await send(proxy.url, 'GET', '/crm/rest/v1/contacts')).status).toBe(200);
    const signals = new EventEmitter();
    const exits: number[] = [];
    const exited = new Promise<void>((resolve) =>
      stopOnSignal(signals, proxy, { delayMs: 0, graceMs: 1000 }, (code) => {
        exits.push(code);
        resolve();
      }),
    );
    signals.emit('SIGTERM');
    signals.emit('SIGINT');
    signals.emit('SIGTERM');
    await exited;
    expect(exits).toEqual([0]);
    const events = logs.entries.map((e) => e.event).filter((e) => e === 'stopping' || e === 'stopped');
    expect(events).toEqual(['stopping', 'stopped']);
    expect(logs.entries.find((e) => e.event === 'stopped')).toMatchObject({ requests: 1, cut: 0 });
    expect(logs.entries.find((e) => e.event === 'stopping')).toMatchObject({ signal: 'SIGTERM', graceMs: 1000 });
  });
});

describe('PROBE_PORT', () => {
  async function freePort(): Promise<number> {
    const s = net.createServer();
    await new Promise<void>((resolve) => s.listen(0, '0.0.0.0', resolve));
    const port = (s.address() as net.AddressInfo).port;
    await new Promise((resolve) => s.close(resolve));
    return port;
  }

  it('answers /healthz and /readyz on all interfaces, any Host, and nothing else: no request reaches Keap through it', async () => {
    const port = await freePort();
    const r = await startRawRig({ PROBE_PORT: String(port) });
    open.push(r);
    const probes = `http://127.0.0.1:${port}`;
    expect((await send(probes, 'GET', '/healthz', { headers: { host: '10.1.2.3:8081' } })).status).toBe(200);
    expect((await send(probes, 'GET', '/readyz', { headers: { host: '10.1.2.3:8081' } })).json()).toMatchObject({
      status: 'ready',
    });
    const other = await send(probes, 'GET', '/crm/rest/v1/contacts');
    expect(other.status).toBe(404);
    expect(other.json()).toMatchObject({ error: 'not_found' });
    expect(r.upstream.requests.length).toBe(0);
    // Stopping turns it red there too, and closes it with the rest.
    const stopped = r.proxy.shutdown({ delayMs: 300, graceMs: 0 });
    expect((await send(probes, 'GET', '/readyz')).status).toBe(503);
    await stopped;
    await expect(send(probes, 'GET', '/healthz')).rejects.toMatchObject({ code: 'ECONNREFUSED' });
  });
});
