import { describe, expect, it } from 'vitest';
import { register as globalRegistry } from 'prom-client';
import { Metrics, type QueueDepth } from '../src/observability/metrics.js';
import { OAUTH } from './fixtures/keap-headers.js';
import { parseQuotaHeaders, type QuotaReport } from '../src/keap/keap-quota.js';
import { parseExposition, type Sample } from './prometheus.js';

async function scrape(m: Metrics): Promise<Sample[]> {
  return parseExposition((await m.render()).body);
}

/** The value of the one sample with exactly these labels, or undefined when there is none. */
function value(samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  const want = Object.entries(labels).sort();
  const hits = samples.filter(
    (s) => s.name === name && JSON.stringify(Object.entries(s.labels).sort()) === JSON.stringify(want),
  );
  expect(hits.length).toBeLessThanOrEqual(1);
  return hits[0]?.value;
}

function series(samples: Sample[], name: string): Sample[] {
  return samples.filter((s) => s.name === name);
}

const quiet = (): Metrics => new Metrics({ defaultMetrics: false });

describe('Metrics', () => {
  it('renders Prometheus text with its content type', async () => {
    const { contentType, body } = await quiet().render();
    expect(contentType).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(body).toContain('# TYPE keap_proxy_requests_total counter');
    expect(body).toContain('# TYPE keap_proxy_upstream_duration_seconds histogram');
    expect(body).toContain('# TYPE keap_proxy_queue_depth gauge');
  });

  it('counts requests by route and final status', async () => {
    const m = quiet();
    m.requestDone('rest', 200);
    m.requestDone('rest', 200);
    m.requestDone('rest', 429);
    m.requestDone('xmlrpc', 200);
    m.requestDone('local', 404);
    m.requestDone('oauth', 302);
    const s = await scrape(m);
    expect(value(s, 'keap_proxy_requests_total', { route: 'rest', status: '200' })).toBe(2);
    expect(value(s, 'keap_proxy_requests_total', { route: 'rest', status: '429' })).toBe(1);
    expect(value(s, 'keap_proxy_requests_total', { route: 'xmlrpc', status: '200' })).toBe(1);
    expect(value(s, 'keap_proxy_requests_total', { route: 'local', status: '404' })).toBe(1);
    expect(value(s, 'keap_proxy_requests_total', { route: 'oauth', status: '302' })).toBe(1);
    expect(series(s, 'keap_proxy_requests_total')).toHaveLength(5);
  });

  it('times upstream responses by route in buckets from 5 ms to 30 s', async () => {
    const m = quiet();
    m.upstreamDone('rest', 0.004);
    m.upstreamDone('rest', 0.2);
    m.upstreamDone('rest', 29);
    m.upstreamDone('xmlrpc', 45);
    const s = await scrape(m);
    const bucket = (route: string, le: string): number | undefined =>
      value(s, 'keap_proxy_upstream_duration_seconds_bucket', { route, le });
    expect(bucket('rest', '0.005')).toBe(1);
    expect(bucket('rest', '0.25')).toBe(2);
    expect(bucket('rest', '30')).toBe(3);
    expect(bucket('rest', '+Inf')).toBe(3);
    expect(bucket('xmlrpc', '30')).toBe(0);
    expect(bucket('xmlrpc', '+Inf')).toBe(1);
    expect(value(s, 'keap_proxy_upstream_duration_seconds_count', { route: 'rest' })).toBe(3);
    expect(value(s, 'keap_proxy_upstream_duration_seconds_sum', { route: 'rest' })).toBeCloseTo(29.204);
    expect(value(s, 'keap_proxy_upstream_duration_seconds_count', { route: 'local' })).toBeUndefined();
    const les = series(s, 'keap_proxy_upstream_duration_seconds_bucket')
      .filter((x) => x.labels.route === 'rest')
      .map((x) => x.labels.le);
    expect(les[0]).toBe('0.005');
    expect(les.at(-2)).toBe('30');
  });

  it('reads queue depths from their sources at scrape time', async () => {
    const m = quiet();
    let depths: QueueDepth[] = [
      { account: 'default', tenant: 'acme', depth: 3 },
      { account: 'default', tenant: 'globex', depth: 0 },
    ];
    const stop = m.onQueueDepth(() => depths);
    m.onQueueDepth(() => [{ account: 'default', tenant: 'initech', depth: 7 }]);
    let s = await scrape(m);
    expect(value(s, 'keap_proxy_queue_depth', { account: 'default', tenant: 'acme' })).toBe(3);
    expect(value(s, 'keap_proxy_queue_depth', { account: 'default', tenant: 'globex' })).toBe(0);
    expect(value(s, 'keap_proxy_queue_depth', { account: 'default', tenant: 'initech' })).toBe(7);

    depths = [{ account: 'default', tenant: 'acme', depth: 1 }];
    s = await scrape(m);
    expect(value(s, 'keap_proxy_queue_depth', { account: 'default', tenant: 'acme' })).toBe(1);
    expect(value(s, 'keap_proxy_queue_depth', { account: 'default', tenant: 'globex' })).toBeUndefined();

    stop();
    s = await scrape(m);
    expect(value(s, 'keap_proxy_queue_depth', { account: 'default', tenant: 'acme' })).toBeUndefined();
    expect(value(s, 'keap_proxy_queue_depth', { account: 'default', tenant: 'initech' })).toBe(7);
  });

  it('records queue waits per tenant', async () => {
    const m = quiet();
    m.queueWait('default', 'acme', 0);
    m.queueWait('default', 'acme', 2);
    m.queueWait('default', 'globex', 45);
    const s = await scrape(m);
    expect(value(s, 'keap_proxy_queue_wait_seconds_count', { account: 'default', tenant: 'acme' })).toBe(2);
    expect(value(s, 'keap_proxy_queue_wait_seconds_sum', { account: 'default', tenant: 'acme' })).toBe(2);
    expect(value(s, 'keap_proxy_queue_wait_seconds_bucket', { account: 'default', tenant: 'acme', le: '0.001' })).toBe(
      1,
    );
    expect(value(s, 'keap_proxy_queue_wait_seconds_bucket', { account: 'default', tenant: 'acme', le: '2.5' })).toBe(2);
    expect(value(s, 'keap_proxy_queue_wait_seconds_bucket', { account: 'default', tenant: 'globex', le: '30' })).toBe(
      0,
    );
    expect(value(s, 'keap_proxy_queue_wait_seconds_bucket', { account: 'default', tenant: 'globex', le: '60' })).toBe(
      1,
    );
  });

  it('counts rate limiting by tenant and outcome, every outcome of a seen tenant starting at 0', async () => {
    const m = quiet();
    m.rateLimited('default', 'acme', 'absorbed');
    m.rateLimited('default', 'acme', 'absorbed');
    m.rateLimited('default', 'acme', 'passed_on');
    m.rateLimited('default', 'globex', 'rejected_full');
    m.rateLimited('default', 'globex', 'quota_spent');
    const s = await scrape(m);
    const rl = (tenant: string, outcome: string): number | undefined =>
      value(s, 'keap_proxy_rate_limited_total', { account: 'default', tenant, outcome });
    expect(rl('acme', 'absorbed')).toBe(2);
    expect(rl('acme', 'passed_on')).toBe(1);
    expect(rl('acme', 'rejected_full')).toBe(0);
    expect(rl('acme', 'quota_spent')).toBe(0);
    expect(rl('globex', 'rejected_full')).toBe(1);
    expect(rl('globex', 'quota_spent')).toBe(1);
    expect(rl('globex', 'absorbed')).toBe(0);
    expect(series(s, 'keap_proxy_rate_limited_total')).toHaveLength(8);
  });

  it('keeps accounts apart by the account label, even two whose credentials are one tenant', async () => {
    const m = quiet();
    m.queueWait('a', 'acme', 0.002);
    m.queueWait('b', 'acme', 45);
    m.queueWait('a', 'acme', 0.002);
    m.rateLimited('b', 'acme', 'rejected_full');
    m.observeQuota('a', 'acme', { product: { day: { limit: 150000, used: 7 } }, tenant: {} });
    m.onQueueDepth(() => [
      { account: 'a', tenant: 'acme', depth: 0 },
      { account: 'b', tenant: 'acme', depth: 4 },
    ]);
    const s = await scrape(m);
    expect(value(s, 'keap_proxy_queue_wait_seconds_count', { account: 'a', tenant: 'acme' })).toBe(2);
    expect(value(s, 'keap_proxy_queue_wait_seconds_count', { account: 'b', tenant: 'acme' })).toBe(1);
    expect(value(s, 'keap_proxy_queue_wait_seconds_bucket', { account: 'b', tenant: 'acme', le: '30' })).toBe(0);
    expect(value(s, 'keap_proxy_rate_limited_total', { account: 'b', tenant: 'acme', outcome: 'rejected_full' })).toBe(
      1,
    );
    expect(series(s, 'keap_proxy_rate_limited_total').filter((x) => x.labels.account === 'a')).toEqual([]);
    expect(
      value(s, 'keap_proxy_keap_quota_used', { account: 'a', tenant: 'acme', scope: 'product', window: 'day' }),
    ).toBe(7);
    expect(series(s, 'keap_proxy_keap_quota_used').map((x) => x.labels.account)).toEqual(['a']);
    expect(value(s, 'keap_proxy_queue_depth', { account: 'b', tenant: 'acme' })).toBe(4);
    expect(value(s, 'keap_proxy_queue_depth', { account: 'a', tenant: 'acme' })).toBe(0);
  });

  it('counts token refreshes by outcome, all starting at 0', async () => {
    const m = quiet();
    let s = await scrape(m);
    for (const outcome of ['success', 'failure', 'invalid_grant', 'reloaded']) {
      expect(value(s, 'keap_proxy_token_refreshes_total', { outcome })).toBe(0);
    }
    m.tokenRefresh('success');
    m.tokenRefresh('success');
    m.tokenRefresh('failure');
    m.tokenRefresh('invalid_grant');
    m.tokenRefresh('reloaded');
    m.tokenRefresh('reloaded');
    m.tokenRefresh('reloaded');
    s = await scrape(m);
    expect(value(s, 'keap_proxy_token_refreshes_total', { outcome: 'success' })).toBe(2);
    expect(value(s, 'keap_proxy_token_refreshes_total', { outcome: 'failure' })).toBe(1);
    expect(value(s, 'keap_proxy_token_refreshes_total', { outcome: 'invalid_grant' })).toBe(1);
    expect(value(s, 'keap_proxy_token_refreshes_total', { outcome: 'reloaded' })).toBe(3);
  });

  describe('observeQuota', () => {
    // Keap's headers without the interval of the throttle: a gap the gauges must survive.
    const {
      ['x-keap-product-throttle-interval']: _interval,
      ['x-keap-tenant-throttle-interval']: _tenantInterval,
      ...headers
    } = OAUTH;
    const report = parseQuotaHeaders(headers) as QuotaReport;

    it('exports every window Keap reported, by tenant, scope and window', async () => {
      const m = quiet();
      m.observeQuota('default', 'acme', report);
      const s = await scrape(m);
      const q = (metric: string, scope: string, window: string): number | undefined =>
        value(s, `keap_proxy_keap_quota_${metric}`, { account: 'default', tenant: 'acme', scope, window });
      expect(q('limit', 'product', 'day')).toBe(150000);
      expect(q('available', 'product', 'day')).toBe(149990);
      expect(q('used', 'product', 'day')).toBe(10);
      expect(q('resets_at_seconds', 'product', 'day')).toBe(1723680000);
      expect(q('limit', 'product', 'minute')).toBe(1500);
      expect(q('available', 'product', 'minute')).toBe(1498);
      expect(q('used', 'product', 'minute')).toBe(2);
      expect(q('resets_at_seconds', 'product', 'minute')).toBeUndefined();
      expect(q('limit', 'product', 'second')).toBe(25);
      expect(q('available', 'product', 'second')).toBeUndefined();
      expect(q('limit', 'tenant', 'minute')).toBe(10000);
      expect(q('available', 'tenant', 'minute')).toBe(9999);
      expect(q('used', 'tenant', 'minute')).toBe(1);
      expect(q('limit', 'tenant', 'day')).toBe(250000);
      expect(q('available', 'tenant', 'day')).toBe(249999);
      expect(q('used', 'tenant', 'day')).toBe(1);
      expect(series(s, 'keap_proxy_keap_quota_limit')).toHaveLength(5);
      expect(series(s, 'keap_proxy_keap_quota_resets_at_seconds')).toHaveLength(1);
    });

    it('keeps the latest value per tenant, and a value Keap left out as last reported', async () => {
      const m = quiet();
      m.observeQuota('default', 'acme', report);
      m.observeQuota('default', 'globex', { product: { day: { limit: 30000, available: 5 } }, tenant: {} });
      m.observeQuota('default', 'acme', {
        product: { day: { available: 149000, used: 1000 } },
        tenant: { minute: { available: 42 } },
      });
      const s = await scrape(m);
      expect(
        value(s, 'keap_proxy_keap_quota_limit', {
          account: 'default',
          tenant: 'acme',
          scope: 'product',
          window: 'day',
        }),
      ).toBe(150000);
      expect(
        value(s, 'keap_proxy_keap_quota_available', {
          account: 'default',
          tenant: 'acme',
          scope: 'product',
          window: 'day',
        }),
      ).toBe(149000);
      expect(
        value(s, 'keap_proxy_keap_quota_used', { account: 'default', tenant: 'acme', scope: 'product', window: 'day' }),
      ).toBe(1000);
      expect(
        value(s, 'keap_proxy_keap_quota_available', {
          account: 'default',
          tenant: 'acme',
          scope: 'tenant',
          window: 'minute',
        }),
      ).toBe(42);
      expect(
        value(s, 'keap_proxy_keap_quota_limit', {
          account: 'default',
          tenant: 'globex',
          scope: 'product',
          window: 'day',
        }),
      ).toBe(30000);
      expect(
        value(s, 'keap_proxy_keap_quota_available', {
          account: 'default',
          tenant: 'globex',
          scope: 'product',
          window: 'day',
        }),
      ).toBe(5);
      expect(
        value(s, 'keap_proxy_keap_quota_used', {
          account: 'default',
          tenant: 'globex',
          scope: 'product',
          window: 'day',
        }),
      ).toBeUndefined();
    });
  });

  it('shares no state between instances, and none with the global registry', async () => {
    const a = quiet();
    const b = quiet();
    a.requestDone('rest', 200);
    a.rateLimited('default', 'acme', 'absorbed');
    a.tokenRefresh('success');
    a.observeQuota('default', 'acme', { product: { day: { limit: 1 } }, tenant: {} });
    a.onQueueDepth(() => [{ account: 'default', tenant: 'acme', depth: 9 }]);
    const sb = await scrape(b);
    expect(series(sb, 'keap_proxy_requests_total')).toHaveLength(0);
    expect(series(sb, 'keap_proxy_rate_limited_total')).toHaveLength(0);
    expect(value(sb, 'keap_proxy_token_refreshes_total', { outcome: 'success' })).toBe(0);
    expect(series(sb, 'keap_proxy_keap_quota_limit')).toHaveLength(0);
    expect(series(sb, 'keap_proxy_queue_depth')).toHaveLength(0);
    const sa = await scrape(a);
    expect(value(sa, 'keap_proxy_requests_total', { route: 'rest', status: '200' })).toBe(1);
    expect(value(sa, 'keap_proxy_queue_depth', { account: 'default', tenant: 'acme' })).toBe(9);
    expect(globalRegistry.getSingleMetric('keap_proxy_requests_total')).toBeUndefined();
  });

  it('adds Node process metrics by default, to its own registry only', async () => {
    const a = new Metrics();
    const b = new Metrics();
    const { body } = await a.render();
    expect(body).toContain('process_cpu_user_seconds_total');
    expect(body).toContain('nodejs_heap_size_total_bytes');
    expect((await b.render()).body).toContain('process_cpu_user_seconds_total');
    expect((await quiet().render()).body).not.toContain('process_cpu_user_seconds_total');
    expect(globalRegistry.getSingleMetric('process_cpu_user_seconds_total')).toBeUndefined();
  });
});
