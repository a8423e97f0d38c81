// ACCOUNTS_FILE: the Keap accounts one proxy serves, each with its own settings under the
// names the environment uses (`{ "accounts": { "<id>": { "<SETTING>": "value", … } } }`).
// This module reads the file's shape; config.ts parses each value with its setting's parser.
import { readFileSync } from 'node:fs';
import path from 'node:path';

/** An account's own: never taken from the process-wide settings. */
export const OWN_SETTINGS = [
  'KEAP_CLIENT_ID',
  'KEAP_CLIENT_SECRET',
  'KEAP_REFRESH_TOKEN',
  'KEAP_API_KEY',
  'KEAP_APP',
  'TOKEN_STORE',
] as const;

/**
 * What an account takes from the process-wide settings when its entry leaves them out: its
 * limits, cache rules, XML-RPC mode and redirect URI.
 */
export const INHERITED_SETTINGS = [
  'KEAP_REDIRECT_URI',
  'RATE_LIMIT_PER_SECOND',
  'RATE_LIMIT_PER_MINUTE',
  'RATE_LIMIT_PER_DAY',
  'RATE_LIMIT_MARGIN',
  'QUEUE_LIMIT',
  'TENANT_LIMIT_PER_MINUTE',
  'TENANT_LIMIT_PER_DAY',
  'CACHE_RULES',
  'XMLRPC_MODE',
] as const;

/** Settings an account may set for itself; every other stays process-wide. */
export const ACCOUNT_SETTINGS = [...OWN_SETTINGS, ...INHERITED_SETTINGS] as const;

export type AccountSettingName = (typeof ACCOUNT_SETTINGS)[number];

export const INHERITED: ReadonlySet<AccountSettingName> = new Set(INHERITED_SETTINGS);

/** An account id: a path segment, a Redis key part and a file name, so letters, digits, `-` and `_`. */
export const ACCOUNT_ID = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;

export interface AccountEntry {
  id: string;
  /** Its settings as written (numbers as text); `<NAME>_FILE` as given, to be read by config.ts. */
  values: Map<string, string>;
  hosts: string[];
  port: number | undefined;
  weight: number;
}

export interface AccountsFile {
  entries: AccountEntry[];
  /** The file's folder: `_FILE` paths and relative token stores are taken from there. */
  dir: string;
}

/** Reads and checks the file's shape; each problem names the account and the setting. */
export function readAccountsFile(
  file: string,
  cwd: string,
  secretNames: readonly string[],
  problems: string[],
): AccountsFile | undefined {
  const full = path.resolve(cwd, file);
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(full, 'utf8'));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    problems.push(
      code !== undefined
        ? `ACCOUNTS_FILE: cannot read ${JSON.stringify(file)} (${code}); point it at a readable JSON file`
        : `ACCOUNTS_FILE: ${JSON.stringify(file)} is not JSON (${err instanceof Error ? err.message.slice(0, 100) : 'parse error'}); see README, Several accounts`,
    );
    return undefined;
  }
  const accounts = (parsed as { accounts?: unknown } | null)?.accounts;
  if (typeof accounts !== 'object' || accounts === null || Array.isArray(accounts)) {
    problems.push('ACCOUNTS_FILE: expected { "accounts": { "<id>": { "<SETTING>": "value" } } }');
    return undefined;
  }
  const known = new Set<string>([
    ...ACCOUNT_SETTINGS,
    ...ACCOUNT_SETTINGS.filter((n) => secretNames.includes(n)).map((n) => `${n}_FILE`),
  ]);
  const entries: AccountEntry[] = [];
  for (const [id, body] of Object.entries(accounts as Record<string, unknown>)) {
    const where = `ACCOUNTS_FILE account ${JSON.stringify(id.slice(0, 64))}`;
    if (!ACCOUNT_ID.test(id)) {
      problems.push(`${where}: an account id is 1 to 64 letters, digits, "-" or "_", starting with a letter or digit`);
      continue;
    }
    if (typeof body !== 'object' || body === null || Array.isArray(body)) {
      problems.push(`${where}: expected an object of settings`);
      continue;
    }
    const entry: AccountEntry = { id, values: new Map(), hosts: [], port: undefined, weight: 1 };
    for (const [key, value] of Object.entries(body as Record<string, unknown>)) {
      if (key === 'hosts') {
        if (!Array.isArray(value) || !value.every((h) => typeof h === 'string' && /^[a-z0-9.-]{1,253}$/i.test(h)))
          problems.push(`${where}: hosts: expected a list of host names, e.g. ["crm.example.com"]`);
        else entry.hosts = value.map((h: string) => h.toLowerCase());
      } else if (key === 'port') {
        if (!Number.isInteger(value) || (value as number) < 1 || (value as number) > 65_535)
          problems.push(`${where}: port: expected a port number from 1 to 65535`);
        else entry.port = value as number;
      } else if (key === 'weight') {
        if (typeof value !== 'number' || !(value >= 0.01 && value <= 1000))
          problems.push(`${where}: weight: expected a number from 0.01 to 1000 (its share of a shared OAuth client)`);
        else entry.weight = value;
      } else if (!known.has(key)) {
        problems.push(
          `${where}: ${key.slice(0, 64)} is not a setting an account may have; per-account settings: ${ACCOUNT_SETTINGS.join(', ')}, hosts, port, weight`,
        );
      } else if (typeof value !== 'string' && typeof value !== 'number' && typeof value !== 'boolean') {
        problems.push(`${where}: ${key}: expected a string`);
      } else {
        entry.values.set(key, String(value).trim());
      }
    }
    entries.push(entry);
  }
  return { entries, dir: path.dirname(full) };
}
