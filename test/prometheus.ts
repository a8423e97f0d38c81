// Reads the Prometheus text exposition /metrics serves, for the tests that check it.

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses Prometheus text exposition (the subset prom-client writes: no timestamps). */
export function parseExposition(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const brace = line.indexOf('{');
    const space = line.lastIndexOf(' ');
    const labels: Record<string, string> = {};
    let name: string;
    if (brace >= 0 && brace < space) {
      name = line.slice(0, brace);
      const body = line.slice(brace + 1, line.lastIndexOf('}'));
      for (const m of body.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g))
        labels[m[1] as string] = (m[2] as string).replace(/\\(.)/g, '$1');
    } else {
      name = line.slice(0, space);
    }
    const raw = line.slice(space + 1);
    samples.push({ name, labels, value: raw === '+Inf' ? Infinity : raw === '-Inf' ? -Infinity : Number(raw) });
  }
  return samples;
}

/**
 * The value of the first sample of `name` (exactly that name) whose labels include all of
 * `labels`; undefined when there is none.
 */
export function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  const want = Object.entries(labels);
  return parseExposition(text).find((s) => s.name === name && want.every(([k, v]) => s.labels[k] === v))?.value;
}
