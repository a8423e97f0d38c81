/** An OAuth grant as Keap issued it, with the times we need to keep it alive. */
export interface Grant {
  accessToken: string;
  refreshToken: string;
  tokenType: string;
  scope: string;
  /** Epoch ms when the access token expires (from expires_in). */
  accessExpiresAt: number;
  /** Epoch ms when this access token was issued. */
  issuedAt: number;
  /** Epoch ms when the current refresh token was issued (Keap rotates it on every refresh). */
  refreshIssuedAt: number;
}

/** The account a grant belongs to: Keap's scope is `full|ab123.infusionsoft.com`. */
export function tenantOf(grant: Pick<Grant, 'scope'>): string | undefined {
  const bar = grant.scope.indexOf('|');
  return bar < 0 ? undefined : grant.scope.slice(bar + 1);
}

export function isGrant(value: unknown): value is Grant {
  if (typeof value !== 'object' || value === null) return false;
  const g = value as Record<string, unknown>;
  return (
    typeof g.accessToken === 'string' &&
    typeof g.refreshToken === 'string' &&
    typeof g.tokenType === 'string' &&
    typeof g.scope === 'string' &&
    typeof g.accessExpiresAt === 'number' &&
    typeof g.issuedAt === 'number' &&
    typeof g.refreshIssuedAt === 'number'
  );
}

/** A grant whose scope names another Keap app than the account's (KEAP_APP): it is refused, never stored. */
export class GrantForAnotherApp extends Error {
  readonly code = 'grant_for_another_app';
  constructor(
    readonly expected: string,
    readonly got: string | undefined,
  ) {
    super(
      `the grant is for Keap app ${got ?? '(none named)'}, but this account is ${expected} (KEAP_APP); sign in to ${expected} and authorize again`,
    );
    this.name = 'GrantForAnotherApp';
  }
}

/** Throws GrantForAnotherApp unless `grant` is for `app` (or no app is required). */
export function checkGrantApp(grant: Pick<Grant, 'scope'>, app: string | undefined): void {
  if (app === undefined) return;
  const got = tenantOf(grant)?.toLowerCase();
  if (got !== app) throw new GrantForAnotherApp(app, got);
}
