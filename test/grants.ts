import type { Grant } from '../src/tokens/grant.js';

/** A grant for tests of stores and brokers; `extra` sets what the test is about. */
export function testGrant(extra: Partial<Grant> = {}): Grant {
  return {
    accessToken: 'access-token',
    refreshToken: 'refresh-token',
    tokenType: 'bearer',
    scope: 'full|ab123.infusionsoft.com',
    accessExpiresAt: 2e12,
    issuedAt: 1e12,
    refreshIssuedAt: 1e12,
    ...extra,
  };
}

/** A grant issued at `t` (access and refresh token both), its access token good for a day. */
export function grantIssuedAt(t: number, extra: Partial<Grant> = {}): Grant {
  return testGrant({ issuedAt: t, refreshIssuedAt: t, accessExpiresAt: t + 86_400_000, ...extra });
}
