// The simulator's authorize page (Keap's is https://accounts.infusionsoft.com/app/oauth/authorize):
// a person logs in and allows (or denies) an app access to their Keap account. GET shows the
// login and consent form; POST is the person's answer. As Keap (and RFC 6749 4.1.2.1) does, a
// client id or redirect URI that is not the app's gets an error page and never a redirect, so
// the page cannot be used to send a browser anywhere; other faults, and the answer, go back
// to the redirect URI with the state.
import type { IncomingMessage, ServerResponse } from 'node:http';

export const AUTHORIZE_PATH = '/app/oauth/authorize';

export interface AuthorizeApp {
  clientId: string;
  /** The app (tenant) the simulated person logs in to, e.g. 'ab123'. */
  tenant: string;
  /** The redirect URIs registered for the client; undefined: any absolute http(s) URI without a fragment. */
  redirectUris: ReadonlySet<string> | undefined;
  /** A one-use code for the redirect URI, exchanged at the token endpoint. */
  issueCode(redirectUri: string): string;
}

export function handleAuthorize(app: AuthorizeApp, req: IncomingMessage, res: ServerResponse, body: Buffer): void {
  const method = req.method ?? 'GET';
  if (method !== 'GET' && method !== 'POST') {
    page(res, 405, 'Method not allowed', '<p>This page answers GET and POST.</p>', { allow: 'GET, POST' });
    return;
  }
  const url = req.url ?? '';
  const q = url.indexOf('?');
  // GET carries the request in its query; the form posts it back in its body.
  const params =
    method === 'GET' ? new URLSearchParams(q < 0 ? '' : url.slice(q + 1)) : new URLSearchParams(body.toString('utf8'));
  const clientId = params.get('client_id') ?? '';
  const redirectUri = params.get('redirect_uri') ?? '';
  if (clientId !== app.clientId) {
    page(
      res,
      400,
      'Unknown application',
      `<p>No application has the client id <code>${escapeHtml(clientId)}</code>.</p>`,
    );
    return;
  }
  if (!redirectAllowed(app, redirectUri)) {
    page(
      res,
      400,
      'Invalid redirect URI',
      `<p>The redirect URI <code>${escapeHtml(redirectUri)}</code> is not registered for this application.</p>`,
    );
    return;
  }
  const state = params.get('state');
  const back = (fields: Record<string, string>): void => redirect(res, redirectUri, fields, state);
  if (params.get('response_type') !== 'code') {
    back({ error: 'unsupported_response_type', error_description: 'response_type must be code' });
    return;
  }
  const scope = params.get('scope') ?? 'full';
  if (scope !== 'full') {
    back({ error: 'invalid_scope', error_description: 'scope must be full' });
    return;
  }
  if (method === 'GET') {
    consentForm(res, app, clientId, redirectUri, state);
    return;
  }
  const decision = params.get('decision');
  if (decision === 'allow') back({ code: app.issueCode(redirectUri) });
  else back({ error: 'access_denied', error_description: 'The user denied access' });
}

function redirectAllowed(app: AuthorizeApp, redirectUri: string): boolean {
  if (app.redirectUris !== undefined) return app.redirectUris.has(redirectUri);
  try {
    const u = new URL(redirectUri);
    return (u.protocol === 'http:' || u.protocol === 'https:') && u.hash === '' && !redirectUri.includes('#');
  } catch {
    return false;
  }
}

function redirect(
  res: ServerResponse,
  redirectUri: string,
  fields: Record<string, string>,
  state: string | null,
): void {
  const to = new URL(redirectUri);
  for (const [k, v] of Object.entries(fields)) to.searchParams.set(k, v);
  if (state !== null) to.searchParams.set('state', state);
  res.writeHead(302, { location: to.href, 'cache-control': 'no-store', 'content-length': 0 });
  res.end();
}

function consentForm(
  res: ServerResponse,
  app: AuthorizeApp,
  clientId: string,
  redirectUri: string,
  state: string | null,
): void {
  const hidden = (name: string, value: string): string =>
    `<input type="hidden" name="${name}" value="${escapeHtml(value)}">`;
  const tenant = `${app.tenant}.infusionsoft.com`;
  const body =
    `<p>Keap simulator: any email and password log in, as a person of the Keap app <b>${escapeHtml(tenant)}</b>.</p>\n` +
    `<form method="post" action="${AUTHORIZE_PATH}">\n` +
    `<p><label>Email <input type="email" name="email" value="demo@example.com"></label></p>\n` +
    `<p><label>Password <input type="password" name="password"></label></p>\n` +
    `<p>The application <b>${escapeHtml(clientId)}</b> asks for access to <b>${escapeHtml(tenant)}</b>.</p>\n` +
    `<p>Scopes: <b>full</b> (every API call the account can make).</p>\n` +
    `<p>After you answer, the browser goes to <code>${escapeHtml(redirectUri)}</code>.</p>\n` +
    hidden('client_id', clientId) +
    hidden('redirect_uri', redirectUri) +
    hidden('response_type', 'code') +
    hidden('scope', 'full') +
    (state === null ? '' : hidden('state', state)) +
    `\n<p><button type="submit" name="decision" value="allow">Allow</button> ` +
    `<button type="submit" name="decision" value="deny">Deny</button></p>\n</form>`;
  page(res, 200, 'Authorize application', body);
}

function page(
  res: ServerResponse,
  status: number,
  title: string,
  body: string,
  extra: Record<string, string> = {},
): void {
  const html = `<!doctype html>\n<html><head><meta charset="utf-8"><title>${escapeHtml(title)}</title></head>\n<body><h1>${escapeHtml(title)}</h1>\n${body}\n</body></html>\n`;
  res.writeHead(status, {
    'content-type': 'text/html; charset=utf-8',
    'content-length': Buffer.byteLength(html),
    'cache-control': 'no-store',
    // No script, style or subresource. No form-action: browsers apply it to the redirect
    // that answers the form too, which goes to the app's redirect URI, another origin.
    'content-security-policy': "default-src 'none'",
    'x-frame-options': 'DENY',
    ...extra,
  });
  res.end(html);
}

export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
