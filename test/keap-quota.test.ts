import type { IncomingHttpHeaders } from 'node:http';
import { describe, expect, it } from 'vitest';
import { parseQuotaHeaders, windowMs, type QuotaReport } from '../src/keap/keap-quota.js';
import { OAUTH } from './fixtures/keap-headers.js';

function parse(headers: IncomingHttpHeaders): QuotaReport {
  const report = parseQuotaHeaders(headers);
  expect(report).toBeDefined();
  return report as QuotaReport;
}

describe('parseQuotaHeaders', () => {
  it('reads every documented header, placing each window by its unit', () => {
    expect(parseQuotaHeaders(OAUTH)).toEqual({
      product: {
        day: { limit: 150000, available: 149990, used: 10, unit: 'day', interval: 1, resetsAt: 1723680000000 },
        minute: { limit: 1500, available: 1498, used: 2, unit: 'minute', interval: 1 },
        spikePerSecond: 25,
      },
      tenant: {
        id: 'ps359.infusionsoft.com',
        minute: { limit: 10000, available: 9999, used: 1, unit: 'minute', interval: 1 },
        day: { limit: 250000, available: 249999, used: 1, unit: 'day', interval: 1 },
      },
    });
  });

  it('reads the single-window tenant form', () => {
    const r = parse({
      'x-keap-tenant-throttle-limit': '5000',
      'x-keap-tenant-throttle-time-unit': 'minute',
      'x-keap-tenant-throttle-interval': '1',
      'x-keap-tenant-throttle-available': '4990',
      'x-keap-tenant-throttle-used': '10',
    });
    expect(r.tenant).toEqual({ minute: { limit: 5000, available: 4990, used: 10, unit: 'minute', interval: 1 } });
    expect(r.product).toEqual({});
  });

  it('places tenant windows by unit, whatever their order', () => {
    const r = parse({
      'x-keap-tenant-throttle-limit': '250000|10000',
      'x-keap-tenant-throttle-time-unit': 'day|minute',
      'x-keap-tenant-throttle-available': '249000|9000',
    });
    expect(r.tenant.day).toEqual({ limit: 250000, available: 249000, unit: 'day' });
    expect(r.tenant.minute).toEqual({ limit: 10000, available: 9000, unit: 'minute' });
  });

  it('without units, tenant windows go minute then day, and the product quota to day, the throttle to minute', () => {
    const r = parse({
      'x-keap-product-quota-limit': '30000',
      'x-keap-product-throttle-limit': '240',
      'x-keap-tenant-throttle-limit': '10000|250000',
    });
    expect(r.product.day).toEqual({ limit: 30000 });
    expect(r.product.minute).toEqual({ limit: 240 });
    expect(r.tenant.minute).toEqual({ limit: 10000 });
    expect(r.tenant.day).toEqual({ limit: 250000 });
  });

  it('pairs pipe-separated values element-wise, leaving out what a shorter list lacks', () => {
    const r = parse({
      'x-keap-tenant-throttle-limit': '10000|250000',
      'x-keap-tenant-throttle-time-unit': 'minute|day',
      'x-keap-tenant-throttle-available': '9999',
      'x-keap-tenant-throttle-used': '|7',
    });
    expect(r.tenant.minute).toEqual({ limit: 10000, available: 9999, unit: 'minute' });
    expect(r.tenant.day).toEqual({ limit: 250000, used: 7, unit: 'day' });
  });

  it('reads a PAT/SAK product throttle and spike limit', () => {
    const r = parse({
      'x-keap-product-quota-limit': '30000',
      'x-keap-product-quota-time-unit': 'day',
      'x-keap-product-throttle-limit': '240',
      'x-keap-product-throttle-time-unit': 'minute',
      'x-keap-product-spike-limit': '10ps',
    });
    expect(r.product.day?.limit).toBe(30000);
    expect(r.product.minute?.limit).toBe(240);
    expect(r.product.spikePerSecond).toBe(10);
  });

  it.each([
    ['10ps', 10],
    ['25PS', 25],
    [' 25ps ', 25],
    ['25', 25],
    ['30pm', 0.5],
    ['ps', undefined],
    ['25px', undefined],
    ['-5ps', undefined],
    ['', undefined],
  ])('spike limit %j is %j per second', (value, expected) => {
    const r = parseQuotaHeaders({ 'x-keap-product-spike-limit': value, 'x-keap-tenant-id': 't' });
    expect(r?.product.spikePerSecond).toBe(expected);
  });

  describe('expiry time', () => {
    const expiry = (value: string | string[]): number | undefined =>
      parseQuotaHeaders({ 'x-keap-product-quota-limit': '150000', 'x-keap-product-quota-expiry-time': value })?.product
        .day?.resetsAt;

    it('reads epoch milliseconds', () => {
      expect(expiry('1723680000000')).toBe(Date.UTC(2024, 7, 15));
    });

    it('reads epoch seconds, which are far smaller', () => {
      expect(expiry('1723680000')).toBe(Date.UTC(2024, 7, 15));
      expect(expiry('1723680000.5')).toBe(Date.UTC(2024, 7, 15) + 500);
    });

    it('reads ISO 8601 and HTTP dates', () => {
      expect(expiry('2024-08-15T00:00:00Z')).toBe(Date.UTC(2024, 7, 15));
      expect(expiry('2024-08-15T00:00:00.000+00:00')).toBe(Date.UTC(2024, 7, 15));
      expect(expiry('Thu, 15 Aug 2024 00:00:00 GMT')).toBe(Date.UTC(2024, 7, 15));
    });

    it('reads the first of repeated headers', () => {
      expect(expiry(['1723680000000', '1723766400000'])).toBe(Date.UTC(2024, 7, 15));
    });

    it.each(['', 'soon', 'x 12', 'Aug 15', '2024', '0', '-1723680000000', '12abc', '1e12', '99999999999999999', 'NaN'])(
      'ignores %j',
      (value) => {
        const r = parse({ 'x-keap-product-quota-limit': '150000', 'x-keap-product-quota-expiry-time': value });
        expect(r.product.day).toEqual({ limit: 150000 });
      },
    );

    it('is a window of its own when only the expiry is known', () => {
      expect(parse({ 'x-keap-product-quota-expiry-time': '1723680000000' }).product.day).toEqual({
        resetsAt: 1723680000000,
      });
    });
  });

  it('is undefined when Keap sent no quota header', () => {
    expect(parseQuotaHeaders({})).toBeUndefined();
    expect(parseQuotaHeaders({ 'content-type': 'application/json', 'x-keap-something-else': '1' })).toBeUndefined();
  });

  it('is undefined when every quota header is garbage', () => {
    expect(
      parseQuotaHeaders({
        'x-keap-product-quota-limit': 'lots',
        'x-keap-product-throttle-limit': '',
        'x-keap-product-spike-limit': 'fast',
        'x-keap-tenant-throttle-limit': 'a|b',
        'x-keap-tenant-id': '   ',
      }),
    ).toBeUndefined();
  });

  it('leaves out garbage values and keeps the rest, never throwing', () => {
    const r = parse({
      'x-keap-product-quota-limit': '150000',
      'x-keap-product-quota-available': '-3',
      'x-keap-product-quota-used': '1.5',
      'x-keap-product-quota-interval': '0',
      'x-keap-product-quota-time-unit': '  ',
      'x-keap-product-throttle-limit': '1500abc',
      'x-keap-product-throttle-available': '1 500',
      'x-keap-product-throttle-used': '12345678901234567890',
      'x-keap-tenant-throttle-limit': '10000|lots',
      'x-keap-tenant-throttle-time-unit': 'minute|day',
      'x-keap-tenant-throttle-interval': 'x|1',
    });
    expect(r.product).toEqual({ day: { limit: 150000 } });
    expect(r.tenant).toEqual({ minute: { limit: 10000, unit: 'minute' } });
  });

  it('tolerates spaces, capitals and plural units', () => {
    const r = parse({
      'x-keap-product-quota-limit': ' 150000 ',
      'x-keap-product-quota-time-unit': 'DAYS',
      'x-keap-tenant-throttle-limit': '10000 | 250000',
      'x-keap-tenant-throttle-time-unit': 'Minute | Day',
    });
    expect(r.product.day).toEqual({ limit: 150000, unit: 'day' });
    expect(r.tenant.minute).toEqual({ limit: 10000, unit: 'minute' });
    expect(r.tenant.day).toEqual({ limit: 250000, unit: 'day' });
  });

  it('keeps an unknown unit as sent, in the slot its header documents', () => {
    const r = parse({ 'x-keap-product-quota-limit': '4000000', 'x-keap-product-quota-time-unit': 'month' });
    expect(r.product.day).toEqual({ limit: 4000000, unit: 'month' });
    expect(windowMs(r.product.day!)).toBeUndefined();
  });

  it('places an hourly or per-second window under its unit', () => {
    const r = parse({
      'x-keap-product-quota-limit': '9000',
      'x-keap-product-quota-time-unit': 'hour',
      'x-keap-tenant-throttle-limit': '5|100',
      'x-keap-tenant-throttle-time-unit': 'second|minute',
    });
    expect(r.product.hour).toEqual({ limit: 9000, unit: 'hour' });
    expect(r.product.day).toBeUndefined();
    expect(r.tenant.second).toEqual({ limit: 5, unit: 'second' });
    expect(r.tenant.minute).toEqual({ limit: 100, unit: 'minute' });
  });

  it('reads the first copy of a repeated header, as an array or joined by Node', () => {
    expect(parse({ 'x-keap-product-quota-limit': ['150000', '1'] }).product.day).toEqual({ limit: 150000 });
    expect(parse({ 'x-keap-product-quota-limit': '150000, 1' }).product.day).toEqual({ limit: 150000 });
    expect(parse({ 'x-keap-tenant-id': 'ps1.infusionsoft.com, ps2.infusionsoft.com' }).tenant.id).toBe(
      'ps1.infusionsoft.com',
    );
  });
});

describe('windowMs', () => {
  it('is unit × interval', () => {
    expect(windowMs({ unit: 'second' })).toBe(1_000);
    expect(windowMs({ unit: 'minute', interval: 1 })).toBe(60_000);
    expect(windowMs({ unit: 'minute', interval: 5 })).toBe(300_000);
    expect(windowMs({ unit: 'hour' })).toBe(3_600_000);
    expect(windowMs({ unit: 'day', interval: 1 })).toBe(86_400_000);
  });

  it('is undefined without a known unit', () => {
    expect(windowMs({ limit: 5 })).toBeUndefined();
    expect(windowMs({ unit: 'fortnight' })).toBeUndefined();
  });

  it('measures the parsed windows', () => {
    const r = parse(OAUTH);
    expect(windowMs(r.product.day!)).toBe(86_400_000);
    expect(windowMs(r.tenant.minute!)).toBe(60_000);
  });
});
