// GET /oauth/start and GET /oauth/callback: authorizing the running proxy from a browser.
// Answered here, before the pipeline; never forwarded to Keap.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from '../observability/log.js';
import type { ClientKeys } from '../pipeline/stages.js';
import { tenantOf } from '../tokens/grant.js';
import { HttpError, sendError, sendJson } from '../http/http-error.js';
import type { OAuthFlow } from './oauth-flow.js';
import { sendPage } from './oauth-page.js';

export const OAUTH_START = '/oauth/start';
export const OAUTH_CALLBACK = '/oauth/callback';

export interface OAuthEndpointsOptions {
  /** Undefined when the endpoints cannot work; `unavailable` then says why. */
  flow: OAuthFlow | undefined;
  unavailable: HttpError | undefined;
  clientKeys: ClientKeys;
  logger: Logger;
}

export class OAuthEndpoints {
  constructor(private readonly options: OAuthEndpointsOptions) {}

  /** True when the request was one of ours and has been answered. */
  handle(req: IncomingMessage, res: ServerResponse): boolean {
    const url = req.url ?? '';
    const q = url.indexOf('?');
    const path = q < 0 ? url : url.slice(0, q);
    if (path !== OAUTH_START && path !== OAUTH_CALLBACK) return false;
    if (req.method !== 'GET') {
      sendJson(res, 405, { error: 'method_not_allowed', message: `${path} answers GET only.` }, { allow: 'GET' });
      return true;
    }
    const { flow, unavailable } = this.options;
    if (flow === undefined) {
      sendError(res, unavailable ?? new HttpError(404, 'not_found', `${path} is not available.`));
      return true;
    }
    if (path === OAUTH_START) this.start(req, res, flow);
    else void this.callback(res, flow, new URLSearchParams(q < 0 ? '' : url.slice(q + 1)));
    return true;
  }

  private start(req: IncomingMessage, res: ServerResponse, flow: OAuthFlow): void {
    // Whoever starts a flow decides which Keap account the proxy will serve: the same
    // client-key gate as proxied requests.
    const keys = this.options.clientKeys;
    if (keys.enabled && !keys.matches(bearer(req.headers.authorization) ?? '')) {
      sendError(
        res,
        new HttpError(
          401,
          'client_unauthorized',
          `Send \`Authorization: Bearer <client key>\` with one of the keys in PROXY_CLIENT_KEYS to start an authorization.`,
          {
            'www-authenticate': 'Bearer realm="keap-proxy"',
          },
        ),
      );
      return;
    }
    const { url } = flow.begin();
    this.options.logger.info({ event: 'oauth_started' }, 'authorization started: redirecting to Keap');
    sendJson(
      res,
      302,
      {
        authorizeUrl: url.href,
        message: `Open authorizeUrl in a browser and log in to the Keap account; Keap then redirects to ${flow.redirectUri}, which must reach this proxy's ${OAUTH_CALLBACK}.`,
      },
      { location: url.href, 'referrer-policy': 'no-referrer' },
    );
  }

  // Not behind the client-key gate: it is Keap's browser redirect, which cannot carry our
  // header. What protects it is the state: unguessable, one use, 10 minutes, and handed
  // out only by /oauth/start, to a caller who passed the gate.
  private async callback(res: ServerResponse, flow: OAuthFlow, query: URLSearchParams): Promise<void> {
    const { logger } = this.options;
    try {
      const grant = await flow.complete(query);
      const tenant = tenantOf(grant);
      logger.info({ event: 'oauth_authorized', tenant }, 'authorization completed: new grant in use');
      sendPage(
        res,
        200,
        'keap-proxy is authorized',
        `Keap authorized keap-proxy${tenant !== undefined ? ` for ${tenant}` : ''}; the proxy uses the new grant now. You can close this tab.`,
      );
    } catch (err) {
      if (!(err instanceof HttpError)) {
        logger.error(
          { event: 'oauth_callback_failed', err: err instanceof Error ? err.message : String(err) },
          'authorization callback failed',
        );
        sendJson(res, 500, {
          error: 'internal_error',
          message: 'The proxy failed to complete the authorization; see its log, then open /oauth/start again.',
        });
        return;
      }
      // The code is never logged: only why the callback was refused.
      logger.warn({ event: 'oauth_callback_refused', reason: err.code, status: err.status }, err.message);
      sendError(res, err);
    }
  }
}

function bearer(header: string | undefined): string | undefined {
  if (header === undefined || header.length <= 7 || header.slice(0, 7).toLowerCase() !== 'bearer ') return undefined;
  return header.slice(7).trim();
}
