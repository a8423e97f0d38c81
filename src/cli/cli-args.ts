// The command line's grammar, as a pure function of argv (src/cli/cli.ts hands it process.argv).

export type Command =
  | { kind: 'help' }
  | { kind: 'serve'; configFile: string | undefined }
  | {
      kind: 'auth';
      configFile: string | undefined;
      code: string | undefined;
      state: string | undefined;
      timeoutMs: number | undefined;
    }
  | { kind: 'token-status'; configFile: string | undefined; json: boolean };

export class UsageError extends Error {
  constructor(message: string) {
    super(`${message}; see keap-proxy --help`);
    this.name = 'UsageError';
  }
}

type Kind = Exclude<Command['kind'], 'help'>;

/** Options that take a value, per command; every command takes --config. */
const VALUE_OPTIONS: Record<Kind, readonly string[]> = {
  serve: ['--config'],
  auth: ['--config', '--code', '--state', '--timeout'],
  'token-status': ['--config'],
};
const FLAG_OPTIONS: Record<Kind, readonly string[]> = {
  serve: [],
  auth: [],
  'token-status': ['--json'],
};

export function parseArgs(argv: readonly string[]): Command {
  if (argv.some((a) => a === '--help' || a === '-h')) return { kind: 'help' };
  const positionals: string[] = [];
  const values = new Map<string, string>();
  const flags = new Set<string>();
  const raw: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    if (a.startsWith('-') && !a.startsWith('--')) throw new UsageError(`unknown option "${a}"`);
    if (!a.startsWith('--')) {
      positionals.push(a);
      continue;
    }
    const eq = a.indexOf('=');
    const name = eq < 0 ? a : a.slice(0, eq);
    raw.push(name);
    if (eq >= 0) values.set(name, a.slice(eq + 1));
    else if (isValueOption(name)) {
      const next = argv[i + 1];
      if (next === undefined || next.startsWith('--')) throw new UsageError(`${name} needs a value`);
      values.set(name, next);
      i++;
    } else flags.add(name);
  }

  const kind = commandOf(positionals);
  for (const name of raw) {
    const takesValue = VALUE_OPTIONS[kind].includes(name);
    const isFlag = FLAG_OPTIONS[kind].includes(name);
    if (!takesValue && !isFlag) throw new UsageError(`unknown option "${name}" for ${label(kind)}`);
    if (isFlag && values.has(name)) throw new UsageError(`${name} takes no value`);
  }
  const configFile = values.get('--config');
  if (configFile === '') throw new UsageError('--config needs a file name');

  switch (kind) {
    case 'serve':
      return { kind: 'serve', configFile };
    case 'token-status':
      return { kind, configFile, json: flags.has('--json') };
    case 'auth': {
      const code = values.get('--code');
      const state = values.get('--state');
      if (code === '') throw new UsageError("--code needs the code from Keap's redirect");
      if (state !== undefined && code === undefined) throw new UsageError('--state goes with --code');
      const timeout = values.get('--timeout');
      let timeoutMs: number | undefined;
      if (timeout !== undefined) {
        const seconds = Number(timeout);
        if (!/^\d+$/.test(timeout) || seconds < 1 || seconds > 86_400)
          throw new UsageError(`--timeout: "${timeout}" is not a whole number of seconds from 1 to 86400`);
        timeoutMs = seconds * 1000;
      }
      return { kind, configFile, code, state, timeoutMs };
    }
  }
}

function commandOf(positionals: string[]): Kind {
  const [first, second, ...rest] = positionals;
  if (first === undefined) return 'serve';
  if (first === 'auth' && second === undefined) return 'auth';
  if (first === 'token' && second === 'status' && rest.length === 0) return 'token-status';
  if (first === 'token')
    throw new UsageError(`unknown command "${positionals.join(' ')}"; did you mean "token status"?`);
  throw new UsageError(`unknown command "${positionals.join(' ')}"`);
}

function isValueOption(name: string): boolean {
  return Object.values(VALUE_OPTIONS).some((names) => names.includes(name));
}

function label(kind: Kind): string {
  return kind === 'serve' ? 'keap-proxy' : kind === 'auth' ? 'keap-proxy auth' : 'keap-proxy token status';
}
