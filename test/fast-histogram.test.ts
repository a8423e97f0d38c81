// FastHistogram stands in for prom-client's Histogram on the hot path; what /metrics shows
// must not tell them apart. Each case feeds the same observations, in the same order, to a
// FastHistogram and to a prom-client Histogram with the same name, help, label and buckets,
// each in a Registry of its own, and compares the exposition text line for line.
import { describe, expect, it } from 'vitest';
import { Histogram, Registry, type Metric } from 'prom-client';
import { FastHistogram } from '../src/observability/metrics.js';

const NAME = 'keap_proxy_test_seconds';
const HELP = 'Same observations, two histograms.';

interface Pair {
  observe(label: string, value: number): void;
  reset(): void;
  /** Both expositions of the metric: FastHistogram's, then prom-client's. */
  texts(): Promise<[string, string]>;
}

function pair(labelName: string, buckets: readonly number[]): Pair {
  const ours = new FastHistogram(NAME, HELP, labelName, buckets);
  const oursRegistry = new Registry();
  oursRegistry.registerMetric(ours as unknown as Metric);
  const theirsRegistry = new Registry();
  const theirs = new Histogram({
    name: NAME,
    help: HELP,
    labelNames: [labelName],
    buckets: [...buckets],
    registers: [theirsRegistry],
  });
  return {
    observe(label, value) {
      ours.observe(label, value);
      theirs.observe({ [labelName]: label }, value);
    },
    reset() {
      ours.reset();
      theirs.reset();
    },
    async texts() {
      return [await oursRegistry.metrics(), await theirsRegistry.metrics()];
    },
  };
}

async function expectSameText(p: Pair): Promise<string> {
  const [ours, theirs] = await p.texts();
  expect(ours.split('\n')).toEqual(theirs.split('\n'));
  return ours;
}

/** A small deterministic generator (mulberry32), so a failure can be run again as it was. */
function random(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// The proxy's own upstream buckets, and a set with a negative bound, 0, a bound that is no
// short decimal, and a wide spread. Not -1: prom-client 15.1.3's findBound() answers -1 for
// "above every bound", so its Histogram with a bound of -1 counts those values there too.
const UPSTREAM_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30];
const ODD_BUCKETS = [-2.5, 0, 0.1 + 0.2, 1, 7, 1e6];

describe('FastHistogram writes what prom-client Histogram writes for the same observations', () => {
  it.each([
    ['upstream buckets', UPSTREAM_BUCKETS],
    ['odd buckets', ODD_BUCKETS],
    ['one bucket', [1]],
  ])('%s: values on every bound, next to it, below the first and beyond the last', async (_title, buckets) => {
    const p = pair('route', buckets);
    for (const bound of buckets) {
      p.observe('rest', bound);
      p.observe('rest', bound - Number.EPSILON * Math.max(1, Math.abs(bound)));
      p.observe('rest', bound + Number.EPSILON * Math.max(1, Math.abs(bound)));
      p.observe('xmlrpc', bound);
    }
    for (const v of [-1e9, -0, 0, (buckets.at(-1) as number) * 2, 1e12, Number.MIN_VALUE]) p.observe('local', v);
    const text = await expectSameText(p);
    expect(text).toContain(`${NAME}_bucket{le="+Inf",route="local"} 6`);
  });

  it('many values over several labels, label values that need escaping among them', async () => {
    const labels = ['rest', 'xmlrpc', 'acme', 'zażółć', 'with "quotes"', 'back\\slash', 'new\nline', ''];
    const p = pair('tenant', UPSTREAM_BUCKETS);
    const next = random(9);
    for (let i = 0; i < 50_000; i++) {
      const label = labels[Math.floor(next() * labels.length)] as string;
      // Mostly fast answers, a long tail, and now and then exactly a bound.
      const value =
        i % 97 === 0 ? (UPSTREAM_BUCKETS[i % UPSTREAM_BUCKETS.length] as number) : -Math.log(1 - next()) * 0.2;
      p.observe(label, value);
    }
    const text = await expectSameText(p);
    for (const label of ['rest', 'acme']) expect(text).toContain(`tenant="${label}"`);
    expect(text).toContain('tenant="with \\"quotes\\""');
  });

  it('nothing observed, and after reset()', async () => {
    const p = pair('route', UPSTREAM_BUCKETS);
    await expectSameText(p);
    p.observe('rest', 0.3);
    await expectSameText(p);
    p.reset();
    await expectSameText(p);
    p.observe('oauth', 12);
    await expectSameText(p);
  });

  it('two labels, each label set recorded through the series kept for it, and after reset()', async () => {
    const ours = new FastHistogram(NAME, HELP, ['account', 'tenant'], UPSTREAM_BUCKETS);
    const oursRegistry = new Registry();
    oursRegistry.registerMetric(ours as unknown as Metric);
    const theirsRegistry = new Registry();
    const theirs = new Histogram({
      name: NAME,
      help: HELP,
      labelNames: ['account', 'tenant'],
      buckets: [...UPSTREAM_BUCKETS],
      registers: [theirsRegistry],
    });
    const sets = [
      { account: 'default', tenant: 'acme' },
      { account: 'a', tenant: 'acme' },
      { account: 'b', tenant: 'with "quotes"' },
    ];
    const kept = sets.map((labels) => ours.series(labels));
    const next = random(3);
    const observe = (): void => {
      for (let i = 0; i < 5_000; i++) {
        const at = Math.floor(next() * sets.length);
        const value = -Math.log(1 - next()) * 0.3;
        ours.record(kept[at] as (typeof kept)[number], value);
        theirs.observe(sets[at] as (typeof sets)[number], value);
      }
    };
    const same = async (): Promise<string> => {
      const [a, b] = [await oursRegistry.metrics(), await theirsRegistry.metrics()];
      expect(a.split('\n')).toEqual(b.split('\n'));
      return a;
    };
    observe();
    expect(await same()).toContain(`${NAME}_count{account="a",tenant="acme"}`);
    ours.reset();
    theirs.reset();
    expect(await same()).not.toContain(`${NAME}_count`);
    // A series kept across the reset comes back with its next observation, counted from 0.
    observe();
    await same();
    expect(() => ours.series({ account: 'x' })).toThrow('label tenant is missing');
  });

  it('a value that is not a finite number: prom-client refuses it, FastHistogram skips it', async () => {
    const ours = new FastHistogram(NAME, HELP, 'route', UPSTREAM_BUCKETS);
    const theirs = new Histogram({ name: NAME, help: HELP, labelNames: ['route'], registers: [] });
    for (const v of [NaN, Infinity, -Infinity]) {
      expect(() => theirs.observe({ route: 'rest' }, v)).toThrow();
      ours.observe('rest', v);
    }
    expect((await ours.get()).values).toEqual([]);
  });
});
