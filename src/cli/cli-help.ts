// --help and README's settings table, both written from the settings' own entries (SETTINGS).
import { SETTINGS } from '../config/config.js';
import { label, type Kind } from './cli-args.js';

/** Help lines are wrapped to this width. */
const WIDTH = 100;

/** Markdown as plain text: a link to a README section names it, code loses its backticks. */
function plain(markdown: string): string {
  return markdown.replace(/\[([^\]]+)\]\(#[^)]*\)/g, '"$1" in README').replace(/`/g, '');
}

/** Words filled into lines of at most `width` (a longer word gets a line of its own). */
function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(' ')) {
    if (line !== '' && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else line = line === '' ? word : `${line} ${word}`;
  }
  lines.push(line);
  return lines;
}

/** README's settings table (test/config.test.ts checks that README holds exactly this). */
export function settingsTable(): string {
  const row = (cells: string[]): string =>
    `|${cells.map((c) => (c === '' ? ' ' : ` ${c.replace(/\|/g, '\\|')} `)).join('|')}|`;
  return [
    row(['name', 'default', 'meaning']),
    '|---|---|---|',
    ...SETTINGS.map((s) => row([`\`${s.name}\``, s.defaultDoc, s.meaning])),
  ].join('\n');
}

export function helpText(): string {
  const width = Math.max(...SETTINGS.map((s) => s.name.length));
  const lines = SETTINGS.flatMap((s) => {
    const head = `  ${s.name.padEnd(width)}  `;
    // The default stays on one line: its spaces do not break until the text is wrapped.
    const dflt = s.defaultDoc !== '' ? ` [default:\u00a0${plain(s.defaultDoc).replace(/ /g, '\u00a0')}]` : '';
    return wrap(plain(s.meaning) + dflt, WIDTH - head.length).map(
      (line, i) => (i === 0 ? head : ' '.repeat(head.length)) + line.replace(/\u00a0/g, ' '),
    );
  });
  return [
    'keap-proxy: a token-brokering reverse proxy for the Keap (Infusionsoft) API',
    '',
    'Usage:',
    '  keap-proxy [--config FILE]                    run the proxy',
    '  keap-proxy auth [--account ID] [--config FILE] [--timeout SECONDS]',
    '                                                authorize in a browser: print the authorize URL,',
    "                                                wait for Keap's redirect on KEAP_REDIRECT_URI",
    '                                                (http only; default wait 300 s), store the grant',
    '  keap-proxy auth --code CODE [--state STATE] [--account ID] [--config FILE]',
    "                                                store the grant for a code copied from Keap's",
    '                                                redirect; --state checks it against the URL the',
    '                                                last `keap-proxy auth` printed (https redirect URIs)',
    '  keap-proxy token status [--json] [--account ID] [--config FILE]',
    '                                                show the stored grant (tenant, expiry, refresh',
    '                                                token age; never a token); exit 1 when none',
    '  keap-proxy token export [--out FILE] [--account ID] [--config FILE]',
    '                                                write the stored grant as JSON (to stdout, or to a',
    '                                                new file with mode 0600): it holds the refresh token',
    '  keap-proxy token import --from SOURCE [--force] [--account ID] [--config FILE]',
    '                                                store a grant taken from SOURCE (a token store file,',
    '                                                a redis:// URL, or - for exported JSON on stdin);',
    '                                                never over a newer grant unless --force',
    '  keap-proxy xmlrpc report [--log FILE]... [--json]',
    '                                                the XML-RPC methods the request log lines in',
    '                                                FILEs (or stdin) show, with calls, when, and whether',
    '                                                the proxy can translate them: what to migrate',
    '  keap-proxy version  (or --version)            print the version',
    "  keap-proxy COMMAND --help                     show that command's usage and options",
    '  keap-proxy --help                             show this help',
    '',
    'OAuth commands need OAuth mode; auth also needs KEAP_REDIRECT_URI. --account ID: the account',
    'of ACCOUNTS_FILE whose grant the command is for (its own KEAP_* settings and token store);',
    "without it, the default account (the settings' own), or the only one; with several and no",
    'default it is required. Exit codes: 0 done, 1 failed (or no grant), 2 bad usage or',
    'configuration (an unknown --account included).',
    '',
    'Settings come from environment variables, over a config file (--config FILE, or',
    'KEAP_PROXY_CONFIG, or ./config/keap-proxy.properties when present), over the',
    'defaults below. Every secret can instead be read from a file named by <NAME>_FILE.',
    '',
    'Settings:',
    ...lines,
    '',
    'Mode: KEAP_CLIENT_ID + KEAP_CLIENT_SECRET is OAuth mode; KEAP_API_KEY alone is key mode.',
    'Requests must be addressed (Host header) to 127.x.x.x, localhost, [::1] or a name in ALLOWED_HOSTS,',
    'else 421; /healthz and /readyz answer any Host.',
    'Local endpoints: GET /healthz, GET /readyz, GET /metrics; in OAuth mode with KEAP_REDIRECT_URI also',
    "GET /oauth/start (302 to Keap's authorize page; needs a client key when PROXY_CLIENT_KEYS",
    'is set; ?account=ID for an account of ACCOUNTS_FILE) and GET /oauth/callback (where',
    'KEAP_REDIRECT_URI should lead: stores the new grant in the account whose flow issued the',
    'state, and uses it at once).',
  ].join('\n');
}

/** One command's help: what it is for, its usage and its options. */
interface CommandHelp {
  purpose: string;
  usage: string[];
  options: [string, string][];
  notes?: string[];
}

const CONFIG_OPTION: [string, string] = [
  '--config FILE',
  'read settings from FILE (else KEAP_PROXY_CONFIG, else ./config/keap-proxy.properties when present)',
];
const ACCOUNT_OPTION: [string, string] = [
  '--account ID',
  "the account of ACCOUNTS_FILE whose grant this is (default: the settings' own account, or the only one)",
];

const COMMANDS: Record<Kind, CommandHelp> = {
  serve: {
    purpose: 'run the proxy',
    usage: ['keap-proxy [--config FILE]'],
    options: [CONFIG_OPTION],
    notes: ['The settings are listed by keap-proxy --help.'],
  },
  auth: {
    purpose: "authorize keap-proxy's Keap app for an account and store the grant (OAuth mode, KEAP_REDIRECT_URI)",
    usage: [
      'keap-proxy auth [--account ID] [--config FILE] [--timeout SECONDS]',
      'keap-proxy auth --code CODE [--state STATE] [--account ID] [--config FILE]',
    ],
    options: [
      [
        '--timeout SECONDS',
        "how long to wait for Keap's redirect on an http KEAP_REDIRECT_URI (1 to 86400; default 300)",
      ],
      ['--code CODE', "store the grant for a code copied from Keap's redirect (https redirect URIs)"],
      [
        '--state STATE',
        "with --code: the redirect's state, checked against the authorize URL the last `keap-proxy auth` printed; a state that does not match is refused and the pending login kept",
      ],
      ACCOUNT_OPTION,
      CONFIG_OPTION,
    ],
    notes: [
      'Before it prints the authorize URL or exchanges a code, it checks that the token store can be written and locked.',
    ],
  },
  'token-status': {
    purpose: 'show the stored grant (tenant, expiry, refresh token age; never a token); exit 1 when none',
    usage: ['keap-proxy token status [--json] [--account ID] [--config FILE]'],
    options: [['--json', 'the same facts as JSON, for scripts'], ACCOUNT_OPTION, CONFIG_OPTION],
  },
  'token-export': {
    purpose: 'write the stored grant as JSON: it holds the refresh token',
    usage: ['keap-proxy token export [--out FILE] [--account ID] [--config FILE]'],
    options: [['--out FILE', 'write to a new file with mode 0600 (default: stdout)'], ACCOUNT_OPTION, CONFIG_OPTION],
  },
  'token-import': {
    purpose: 'store a grant taken from another store or from `token export`; never over a newer grant unless --force',
    usage: ['keap-proxy token import --from SOURCE [--force] [--account ID] [--config FILE]'],
    options: [
      ['--from SOURCE', 'a token store file, a redis:// URL, or - for exported JSON on stdin (required)'],
      ['--force', 'replace the stored grant even when it is newer'],
      ACCOUNT_OPTION,
      CONFIG_OPTION,
    ],
  },
  'xmlrpc-report': {
    purpose:
      'list the XML-RPC methods the request log lines show, with calls, when, and whether the proxy can translate them',
    usage: ['keap-proxy xmlrpc report [--log FILE]... [--json]'],
    options: [
      ['--log FILE', 'a log file to read (repeatable; default: stdin)'],
      ['--json', 'the report as JSON'],
    ],
    notes: ['Needs no configuration.'],
  },
};

/** `keap-proxy <command> --help`: the command's purpose, usage and options. */
export function commandHelpText(kind: Kind): string {
  const help = COMMANDS[kind];
  const all: [string, string][] = [...help.options, ['--help', 'show this help']];
  const width = Math.max(...all.map(([name]) => name.length));
  const options = all.flatMap(([name, meaning]) => {
    const head = `  ${name.padEnd(width)}  `;
    return wrap(plain(meaning), WIDTH - head.length).map(
      (line, i) => (i === 0 ? head : ' '.repeat(head.length)) + line,
    );
  });
  return [
    ...wrap(`${label(kind)}: ${plain(help.purpose)}`, WIDTH),
    '',
    'Usage:',
    ...help.usage.map((u) => `  ${u}`),
    '',
    'Options:',
    ...options,
    ...(help.notes !== undefined ? ['', ...help.notes.flatMap((n) => wrap(n, WIDTH))] : []),
    '',
    'Exit codes: 0 done, 1 failed, 2 bad usage or configuration.',
    'All commands, and the settings: keap-proxy --help',
  ].join('\n');
}
