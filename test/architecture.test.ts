// The house rules that no type checker enforces (docs: README "Development"). Import cycles
// are checked by `npm run check:cycles` (dpdm).
import { describe, it, expect } from 'vitest';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';

const SRC = path.resolve(import.meta.dirname, '../src');

function sources(): { file: string; text: string }[] {
  return (readdirSync(SRC, { recursive: true }) as string[])
    .filter((f) => f.endsWith('.ts'))
    .map((f) => ({ file: f.split(path.sep).join('/'), text: readFileSync(path.join(SRC, f), 'utf8') }));
}

function importsOf(text: string): string[] {
  return [...text.matchAll(/^(?:import|export)[^'"]*from '([^']+)'/gm)].map((m) => m[1] as string);
}

describe('the house', () => {
  it('domain code (pacing, tokens, keap, accounts) knows nothing of HTTP answers, the pipeline or the upstream', () => {
    const offending: string[] = [];
    for (const { file, text } of sources()) {
      if (!/^(pacing|tokens|keap|accounts)\//.test(file)) continue;
      for (const spec of importsOf(text))
        if (/^\.\.\/(http|pipeline|upstream|cli)\//.test(spec)) offending.push(`${file} imports ${spec}`);
    }
    expect(offending).toEqual([]);
  });

  it('nothing asks a credential source for "the" tenant: per-account labels come from the Account', () => {
    const callers = sources()
      .filter(({ text }) => /\.tenant\(\)/.test(text))
      .map(({ file }) => file);
    expect(callers).toEqual(['accounts/account.ts']);
  });

  it("stages and response handlers hold no credential source or pacer of their own: they use the exchange's account", () => {
    const holders = sources()
      .filter(({ file }) => /^(pipeline|upstream)\//.test(file))
      .filter(({ text }) => /\b(CredentialSource|Pacer|TokenBroker|QuotaPacer)\b/.test(text))
      .map(({ file }) => file);
    expect(holders).toEqual([]);
  });

  it('only the command line and config read process.env', () => {
    const readers = sources()
      .filter(({ text }) => /process\.env\b/.test(text.replace(/\/\/.*$/gm, '')))
      .map(({ file }) => file);
    expect(readers.every((f) => f === 'cli/cli.ts' || f.startsWith('config/'))).toBe(true);
    expect(readers).toContain('cli/cli.ts');
  });
});
