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
