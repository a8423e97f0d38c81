import { SETTINGS } from './config.js';

export function helpText(): string {
  const width = Math.max(...SETTINGS.map((s) => s.name.length));
  const lines = SETTINGS.map((s) => `  ${s.name.padEnd(width)}  ${s.meaning}${s.default !== '' ? ` [default: ${s.default}]` : ''}`);
  return [
    'keap-proxy: a token-brokering reverse proxy for the Keap (Infusionsoft) API',
    '',
    'Usage:',
    '  keap-proxy [--config FILE]     run the proxy',
    '  keap-proxy --help              show this help',
    '',
    'Settings come from environment variables, over a config file (--config FILE, or',
    'KEAP_PROXY_CONFIG, or ./config/keap-proxy.properties when present), over the',
    'defaults below. Every secret can instead be read from a file named by <NAME>_FILE.',
    '',
    'Settings:',
    ...lines,
    '',
    'Mode: KEAP_CLIENT_ID + KEAP_CLIENT_SECRET is OAuth mode; KEAP_API_KEY alone is key mode.',
    'Local endpoints: GET /healthz, GET /readyz.',
  ].join('\n');
}

