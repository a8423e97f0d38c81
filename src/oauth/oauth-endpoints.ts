// GET /oauth/start and GET /oauth/callback: authorizing the running proxy from a browser, for
// any of its accounts. Answered here, before the pipeline; never forwarded to Keap.
//
// `/oauth/start` is the default account's flow; `/oauth/start?account=<id>` that account's
// (an idle one is started). Every account's flow hands out its states from one table, each
// state marked with the account it was issued for: the callback completes the flow of the
// account its state names, and an `account` in the callback's query is only ever checked
// against that, never believed on its own.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Account } from '../accounts/account.js';
import type { AccountRegistry } from '../accounts/registry.js';
import { DEFAULT_ACCOUNT, type Config } from '../config/config.js';
import type { Logger } from '../observability/log.js';
import { ClientKeys } from '../pipeline/stages.js';
import { tenantOf } from '../tokens/grant.js';
import { HttpError, sendError, sendJson } from '../http/http-error.js';
import { OAuthFlow, STATE_TTL_MS, StateTable } from './oauth-flow.js';
import { sendPage } from './oauth-page.js';

export const OAUTH_START = '/oauth/start';
export const OAUTH_CALLBACK = '/oauth/callback';

export interface OAuthEndpointsOptions {
  config: Pick<Config, 'keapAuthorizeUrl' | 'proxyClientKeys'>;
  accounts: Pick<AccountRegistry, 'get' | 'primary' | 'ids'>;
  logger: Logger;
  /** The states every account's flow issues from (tests give one with a clock). */
  states?: StateTable;
}

export class OAuthEndpoints {
  private readonly states: StateTable;
  private readonly clientKeys: ClientKeys;
  /** Each account's flow, made on its first use; an account made again (after the LRU let it go) gets a new one. */
  private readonly flows = new WeakMap<Account, OAuthFlow>();

  constructor(private readonly options: OAuthEndpointsOptions) {
    this.states = options.states ?? new StateTable();
    this.clientKeys = new ClientKeys(options.config.proxyClientKeys);
  }

  /** True when the request was one of ours and is being answered. */
  handle(req: IncomingMessage, res: ServerResponse): boolean {
    const url = req.url ?? '';
    const q = url.indexOf('?');
    const path = q < 0 ? url : url.slice(0, q);
    if (path !== OAUTH_START && path !== OAUTH_CALLBACK) return false;
    if (req.method !== 'GET') {
      sendJson(res, 405, { error: 'method_not_allowed', message: `${path} answers GET only.` }, { allow: 'GET' });
      return true;
    }
    const query = new URLSearchParams(q < 0 ? '' : url.slice(q + 1));
    if (path === OAUTH_START) void this.start(req, res, query);
    else void this.callback(res, query);
    return true;
  }

  private async start(req: IncomingMessage, res: ServerResponse, query: URLSearchParams): Promise<void> {
    // Whoever starts a flow decides which Keap account an account of the proxy will serve:
    // the same client-key gate as proxied requests, before anything about the accounts is said.
    if (this.clientKeys.enabled && !this.clientKeys.matches(bearer(req.headers.authorization) ?? '')) {
      sendError(
        res,
        new HttpError(
          401,
          'client_unauthorized',
          `Send \`Authorization: Bearer <client key>\` with one of the keys in PROXY_CLIENT_KEYS to start an authorization.`,
          { 'www-authenticate': 'Bearer realm="keap-proxy"' },
        ),
      );
      return;
    }
    try {
      const account = await this.accountNamed(query.get('account'));
      const flow = this.flowOf(account);
      const { url } = flow.begin();
      this.options.logger.info(
        { event: 'oauth_started', account: account.id },
        'authorization started: redirecting to Keap',
      );
      sendJson(
        res,
        302,
        {
          authorizeUrl: url.href,
          ...(account.id !== DEFAULT_ACCOUNT ? { account: account.id } : {}),
          message: `Open authorizeUrl in a browser and log in to the Keap account${account.id !== DEFAULT_ACCOUNT ? ` for account "${account.id}"` : ''}; Keap then redirects to ${flow.redirectUri}, which must reach this proxy's ${OAUTH_CALLBACK}.`,
        },
        { location: url.href, 'referrer-policy': 'no-referrer' },
      );
    } catch (err) {
      this.fail(res, err, 'oauth_start_failed');
    }
  }

  // Not behind the client-key gate: it is Keap's browser redirect, which cannot carry our
  // header. What protects it is the state: unguessable, one use, 10 minutes, and handed
  // out only by /oauth/start, to a caller who passed the gate.
  private async callback(res: ServerResponse, query: URLSearchParams): Promise<void> {
    const { logger } = this.options;
    try {
      const account = await this.callbackAccount(query);
      const grant = await this.flowOf(account).complete(query);
      const tenant = tenantOf(grant);
      logger.info(
        { event: 'oauth_authorized', account: account.id, tenant },
        'authorization completed: new grant in use',
      );
      const which = account.id !== DEFAULT_ACCOUNT ? ` (account "${account.id}")` : '';
      sendPage(
        res,
        200,
        'keap-proxy is authorized',
        `Keap authorized keap-proxy${tenant !== undefined ? ` for ${tenant}` : ''}${which}; the proxy uses the new grant now. You can close this tab.`,
      );
    } catch (err) {
      this.fail(res, err, 'oauth_callback_failed');
    }
  }

  /**
   * The account whose flow a callback completes: the one its state was issued for. A state we
   * do not know (or none) is the default account's to refuse, which also says why that account
   * has no flow, if it has none.
   */
  private async callbackAccount(query: URLSearchParams): Promise<Account> {
    const state = query.get('state');
    const owner = state === null ? undefined : this.states.ownerOf(state);
    const claimed = query.get('account');
    if (owner === undefined) {
      // With one account, its own answer (invalid_state, Keap's error, or why it has no flow);
      // with several, the default account's only when it has a flow to refuse the state with.
      const { primary } = this.options.accounts;
      if (primary !== undefined && (this.options.accounts.ids().length <= 1 || this.hasFlow(primary))) return primary;
      throw invalidState(`open ${OAUTH_START}?account=<id> again`);
    }
    // An account in the query (a redirect URI that names it) must be the state's: a state is
    // never taken to another account's flow, and the flow it belongs to is not cancelled.
    if (claimed !== null && claimed !== owner)
      throw invalidState(`open ${OAUTH_START}?account=${encodeURIComponent(claimed.slice(0, 64))} again`);
    return this.accountNamed(owner);
  }

  /** The account an `account` parameter names, started if it was idle; the default one without. */
  private async accountNamed(id: string | null): Promise<Account> {
    const { accounts } = this.options;
    if (id === null) {
      if (accounts.primary !== undefined) return accounts.primary;
      const ids = accounts.ids();
      throw new HttpError(
        400,
        'account_required',
        `This proxy serves several Keap accounts and none is the default: name one, ${OAUTH_START}?account=<id> (configured: ${listed(ids)}).`,
      );
    }
    const found = id === '' ? undefined : accounts.get(id);
    if (found === undefined)
      throw new HttpError(
        404,
        'unknown_account',
        `No Keap account "${printable(id).slice(0, 64)}" is configured here; name one of ACCOUNTS_FILE's accounts in ${OAUTH_START}?account=<id>.`,
      );
    try {
      return await found;
    } catch (err) {
      this.options.logger.error(
        { event: 'account_start_failed', account: id, err: err instanceof Error ? err.message : String(err) },
        'the account could not be started for an authorization',
      );
      throw new HttpError(
        503,
        'account_unavailable',
        `Account "${id}" could not be started; see the proxy's log, then try again.`,
      );
    }
  }

  private hasFlow(account: Account): boolean {
    try {
      this.flowOf(account);
      return true;
    } catch {
      return false;
    }
  }

  /** The account's flow; an HttpError saying why when it cannot have one. */
  private flowOf(account: Account): OAuthFlow {
    const made = this.flows.get(account);
    if (made !== undefined) return made;
    const c = account.parts.config?.credentials;
    const broker = account.parts.broker;
    const client = account.parts.tokenClient;
    const named = account.id !== DEFAULT_ACCOUNT;
    if (c?.mode !== 'oauth' || broker === undefined || client === undefined)
      throw new HttpError(
        404,
        'not_found',
        named
          ? `OAuth endpoints exist only for accounts in OAuth mode (KEAP_CLIENT_ID + KEAP_CLIENT_SECRET); account "${account.id}" uses a key.`
          : 'OAuth endpoints exist only in OAuth mode (KEAP_CLIENT_ID + KEAP_CLIENT_SECRET); this proxy runs in key mode.',
      );
    if (c.redirectUri === undefined)
      throw new HttpError(
        503,
        'redirect_uri_not_configured',
        `Set KEAP_REDIRECT_URI${named ? ` (in ACCOUNTS_FILE for account "${account.id}", or for every account in the settings)` : ''} to the redirect URI registered for the Keap app, pointing at this proxy's ${OAUTH_CALLBACK}, and restart the proxy.`,
      );
    const flow = new OAuthFlow({
      authorizeUrl: this.options.config.keapAuthorizeUrl,
      clientId: c.clientId,
      redirectUri: c.redirectUri,
      client,
      // The broker checks the grant's app (KEAP_APP) before it stores anything.
      keep: (grant) => broker.adoptGrant(grant),
      states: this.states,
      owner: account.id,
      restartHint: `open ${OAUTH_START}${named ? `?account=${account.id}` : ''} again`,
    });
    this.flows.set(account, flow);
    return flow;
  }

  private fail(res: ServerResponse, err: unknown, event: string): void {
    const { logger } = this.options;
    if (!(err instanceof HttpError)) {
      logger.error({ event, err: err instanceof Error ? err.message : String(err) }, 'authorization endpoint failed');
      sendJson(res, 500, {
        error: 'internal_error',
        message: `The proxy failed to complete the authorization; see its log, then open ${OAUTH_START} again.`,
      });
      return;
    }
    // The code is never logged: only why the request was refused.
    logger.warn(
      {
        event: event === 'oauth_callback_failed' ? 'oauth_callback_refused' : 'oauth_start_refused',
        reason: err.code,
        status: err.status,
      },
      err.message,
    );
    sendError(res, err);
  }
}

function invalidState(restartHint: string): HttpError {
  return new HttpError(
    400,
    'invalid_state',
    `The state parameter is unknown, already used or expired (states last ${STATE_TTL_MS / 60_000} minutes and work once); ${restartHint}.`,
  );
}

function listed(ids: readonly string[]): string {
  return ids.length > 20 ? `${ids.slice(0, 20).join(', ')} and ${ids.length - 20} more` : ids.join(', ');
}

/** An id from a query comes from whoever sent the request: shown as a short, plain string. */
function printable(s: string): string {
  return s.replace(/[^\x20-\x7e]/g, '?');
}

function bearer(header: string | undefined): string | undefined {
  if (header === undefined || header.length <= 7 || header.slice(0, 7).toLowerCase() !== 'bearer ') return undefined;
  return header.slice(7).trim();
}
