// The command line's grammar, as a pure function of argv (src/cli/cli.ts hands it process.argv).
// node:util's parseArgs does the parsing, in strict mode, with the options of the command the
// positionals name; this module only picks the command and words the errors.
import { parseArgs as parseArgv, type ParseArgsConfig } from 'node:util';

export type Command =
  /** `command`: the help of that command alone (`keap-proxy auth --help`); none: the whole help. */
  | { kind: 'help'; command?: Kind }
  | { kind: 'version' }
  | { kind: 'serve'; configFile: string | undefined }
  | {
      kind: 'auth';
      configFile: string | undefined;
      account: string | undefined;
      code: string | undefined;
      state: string | undefined;
      timeoutMs: number | undefined;
    }
  | { kind: 'token-status'; configFile: string | undefined; account: string | undefined; json: boolean }
  | { kind: 'token-export'; configFile: string | undefined; account: string | undefined; out: string | undefined }
  | {
      kind: 'token-import';
      configFile: string | undefined;
      account: string | undefined;
      from: string;
      force: boolean;
    }
  | { kind: 'xmlrpc-report'; logs: string[]; json: boolean };

export class UsageError extends Error {
  constructor(message: string) {
    super(`${message}; see keap-proxy --help`);
    this.name = 'UsageError';
  }
}

/** The commands that do something (help and version only print). */
export type Kind = 'serve' | 'auth' | 'token-status' | 'token-export' | 'token-import' | 'xmlrpc-report';
type Options = NonNullable<ParseArgsConfig['options']>;

const CONFIG = { config: { type: 'string' } } as const satisfies Options;
/** The commands that act on one account's grant take --account (needed when several are configured). */
const ACCOUNT = { account: { type: 'string' } } as const satisfies Options;

/** Each command's options; every command takes --config. */
const OPTIONS = {
  serve: { ...CONFIG },
  auth: { ...CONFIG, ...ACCOUNT, code: { type: 'string' }, state: { type: 'string' }, timeout: { type: 'string' } },
  'token-status': { ...CONFIG, ...ACCOUNT, json: { type: 'boolean' } },
  'token-export': { ...CONFIG, ...ACCOUNT, out: { type: 'string' } },
  'token-import': { ...CONFIG, ...ACCOUNT, from: { type: 'string' }, force: { type: 'boolean' } },
  // Reads log files, not the configuration.
  'xmlrpc-report': { log: { type: 'string', multiple: true }, json: { type: 'boolean' } },
} as const satisfies Record<Kind, Options>;

/** Every command's options at once: the first, lenient pass that finds the command. */
const ANY_OPTIONS: Options = Object.assign({}, ...Object.values(OPTIONS)) as Options;

export function parseArgs(argv: readonly string[]): Command {
  const args = [...argv];
  // Lenient first: it only finds the positionals that name the command.
  const first = parseArgv({ args, options: ANY_OPTIONS, strict: false, allowPositionals: true, tokens: true });
  // --help wins anywhere, even where it would be read as another option's value: after a
  // command, that command's help; with no command, or an unknown one, the whole help.
  if (argv.some((a) => a === '--help' || a === '-h')) {
    if (first.positionals.length === 0) return { kind: 'help' };
    try {
      return { kind: 'help', command: commandOf(first.positionals) };
    } catch {
      return { kind: 'help' };
    }
  }
  if (argv.some((a) => a === '--version' || a === '-V')) {
    if (argv.length > 1) throw new UsageError('--version takes no other argument');
    return { kind: 'version' };
  }
  if (first.positionals[0] === 'version') {
    if (argv.length > 1) throw new UsageError('version takes no option or argument');
    return { kind: 'version' };
  }
  const kind = commandOf(first.positionals);
  /** Runs the strict parse of `kind`'s options; its errors become UsageErrors. */
  const strictly = <T>(parse: () => T): T => {
    try {
      return parse();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') {
        const known: Options = OPTIONS[kind];
        const unknown = first.tokens.find((t) => t.kind === 'option' && !Object.hasOwn(known, t.name));
        if (unknown?.kind === 'option') throw new UsageError(`unknown option "${unknown.rawName}" for ${label(kind)}`);
      }
      // parseArgs words the rest well (a missing value, a value for a flag); some of it spans lines.
      throw new UsageError((err as Error).message.replace(/\s*\n\s*/g, ' ').replace(/\.$/, ''));
    }
  };

  switch (kind) {
    case 'serve': {
      const { values } = strictly(() =>
        parseArgv({ args, options: OPTIONS.serve, strict: true, allowPositionals: true }),
      );
      return { kind, configFile: configFileOf(values.config) };
    }
    case 'token-status': {
      const { values } = strictly(() =>
        parseArgv({ args, options: OPTIONS['token-status'], strict: true, allowPositionals: true }),
      );
      return {
        kind,
        configFile: configFileOf(values.config),
        account: accountOf(values.account),
        json: values.json === true,
      };
    }
    case 'token-export': {
      const { values } = strictly(() =>
        parseArgv({ args, options: OPTIONS['token-export'], strict: true, allowPositionals: true }),
      );
      if (values.out === '') throw new UsageError('--out needs a file name');
      return { kind, configFile: configFileOf(values.config), account: accountOf(values.account), out: values.out };
    }
    case 'token-import': {
      const { values } = strictly(() =>
        parseArgv({ args, options: OPTIONS['token-import'], strict: true, allowPositionals: true }),
      );
      if (values.from === undefined || values.from === '')
        throw new UsageError(
          '--from is required: a token store file, a redis:// URL, or - for the output of `token export` on stdin',
        );
      return {
        kind,
        configFile: configFileOf(values.config),
        account: accountOf(values.account),
        from: values.from,
        force: values.force === true,
      };
    }
    case 'xmlrpc-report': {
      const { values } = strictly(() =>
        parseArgv({ args, options: OPTIONS['xmlrpc-report'], strict: true, allowPositionals: true }),
      );
      const logs = values.log ?? [];
      if (logs.includes('')) throw new UsageError('--log needs a file name');
      return { kind, logs, json: values.json === true };
    }
    case 'auth': {
      const { values } = strictly(() =>
        parseArgv({ args, options: OPTIONS.auth, strict: true, allowPositionals: true }),
      );
      const { code, state, timeout } = values;
      if (code === '') throw new UsageError("--code needs the code from Keap's redirect");
      if (state !== undefined && code === undefined) throw new UsageError('--state goes with --code');
      let timeoutMs: number | undefined;
      if (timeout !== undefined) {
        const seconds = Number(timeout);
        if (!/^\d+$/.test(timeout) || seconds < 1 || seconds > 86_400)
          throw new UsageError(`--timeout: "${timeout}" is not a whole number of seconds from 1 to 86400`);
        timeoutMs = seconds * 1000;
      }
      return {
        kind,
        configFile: configFileOf(values.config),
        account: accountOf(values.account),
        code,
        state,
        timeoutMs,
      };
    }
  }
}

function configFileOf(value: string | undefined): string | undefined {
  if (value === '') throw new UsageError('--config needs a file name');
  return value;
}

/** Which account's grant: checked against the configuration later (config.ts, accountNamed). */
function accountOf(value: string | undefined): string | undefined {
  if (value === '') throw new UsageError("--account needs an account id (one of ACCOUNTS_FILE's, or default)");
  return value;
}

function commandOf(positionals: string[]): Kind {
  const [first, second, ...rest] = positionals;
  if (first === undefined) return 'serve';
  if (first === 'auth' && second === undefined) return 'auth';
  if (first === 'token' && rest.length === 0) {
    if (second === 'status') return 'token-status';
    if (second === 'export') return 'token-export';
    if (second === 'import') return 'token-import';
  }
  if (first === 'xmlrpc' && second === 'report' && rest.length === 0) return 'xmlrpc-report';
  if (first === 'xmlrpc')
    throw new UsageError(`unknown command "${positionals.join(' ')}"; did you mean "xmlrpc report"?`);
  if (first === 'token')
    throw new UsageError(
      `unknown command "${positionals.join(' ')}"; did you mean "token status", "token export" or "token import"?`,
    );
  throw new UsageError(`unknown command "${positionals.join(' ')}"`);
}

export function label(kind: Kind): string {
  return kind === 'serve' ? 'keap-proxy' : `keap-proxy ${kind.replace('-', ' ')}`;
}
