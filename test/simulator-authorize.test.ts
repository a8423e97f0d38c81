// The simulator's login and consent page (its authorizeUrl), driven with real HTTP.
import { afterEach, describe, expect, it } from 'vitest';
import { authorizeQuery, get, hiddenFields, post } from './oauth-local.js';
import { KeapSimulator, SIM_CLIENT_ID, SIM_CLIENT_SECRET } from './simulator/keap-simulator.js';

describe("the simulator's authorize page", () => {
  let sim: KeapSimulator | undefined;
  afterEach(async () => {
    await sim?.close();
    sim = undefined;
  });

  it('shows a login and consent form naming the client and the scope, with every value escaped', async () => {
    sim = await KeapSimulator.start({ redirectUris: ['http://127.0.0.1:9/cb?x="<b>'] });
    const state = `<script>alert("x")</script>&'`;
    const page = await get(
      authorizeQuery(sim, {
        client_id: SIM_CLIENT_ID,
        redirect_uri: 'http://127.0.0.1:9/cb?x="<b>',
        response_type: 'code',
        scope: 'full',
        state,
      }),
    );
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect(page.headers.get('content-security-policy')).toBe("default-src 'none'");
    expect(page.body).toContain(SIM_CLIENT_ID);
    expect(page.body).toContain('<b>full</b>');
    expect(page.body).toContain('name="password"');
    expect(page.body).toContain('value="allow"');
    expect(page.body).toContain('value="deny"');
    expect(page.body).not.toContain('<script>');
    expect(page.body).not.toContain('x="<b>');
    expect(page.body).toContain('&#60;script&#62;alert(&#34;x&#34;)&#60;/script&#62;&#38;&#39;');
    // What the form posts back is what the page was asked.
    expect(hiddenFields(page.body).get('state')).toBe(state);
    expect(hiddenFields(page.body).get('redirect_uri')).toBe('http://127.0.0.1:9/cb?x="<b>');
  });

  it('refuses an unknown client id or an unregistered redirect URI with an error page, never a redirect', async () => {
    sim = await KeapSimulator.start({ redirectUris: ['http://127.0.0.1:9/cb'] });
    const good = { client_id: SIM_CLIENT_ID, redirect_uri: 'http://127.0.0.1:9/cb', response_type: 'code', state: 's' };
    const unknownClient = await get(authorizeQuery(sim, { ...good, client_id: '<i>other</i>' }));
    expect(unknownClient.status).toBe(400);
    expect(unknownClient.location).toBeNull();
    expect(unknownClient.body).toContain('Unknown application');
    expect(unknownClient.body).toContain('&#60;i&#62;other&#60;/i&#62;');
    const elsewhere = await get(authorizeQuery(sim, { ...good, redirect_uri: 'https://evil.example/cb' }));
    expect(elsewhere.status).toBe(400);
    expect(elsewhere.location).toBeNull();
    expect(elsewhere.body).toContain('Invalid redirect URI');
    // The POST is checked again: a tampered form cannot send the code elsewhere.
    const tampered = await post(
      sim.authorizeUrl,
      new URLSearchParams({ ...good, redirect_uri: 'https://evil.example/cb', decision: 'allow' }),
    );
    expect(tampered.status).toBe(400);
    expect(tampered.location).toBeNull();
    // Faults past those go back to the app, with its state.
    const token = await get(authorizeQuery(sim, { ...good, response_type: 'token' }));
    expect(token.status).toBe(302);
    const back = new URL(token.location!);
    expect(back.searchParams.get('error')).toBe('unsupported_response_type');
    expect(back.searchParams.get('state')).toBe('s');
  });

  it('Allow redirects with a code the token endpoint exchanges once, for that redirect URI; Deny with access_denied', async () => {
    sim = await KeapSimulator.start({ redirectUris: ['http://127.0.0.1:9/cb?app=1'] });
    const form = {
      client_id: SIM_CLIENT_ID,
      redirect_uri: 'http://127.0.0.1:9/cb?app=1',
      response_type: 'code',
      scope: 'full',
      state: 'st',
    };
    const allowed = await post(sim.authorizeUrl, new URLSearchParams({ ...form, decision: 'allow' }));
    expect(allowed.status).toBe(302);
    const back = new URL(allowed.location!);
    expect(`${back.origin}${back.pathname}`).toBe('http://127.0.0.1:9/cb');
    expect(back.searchParams.get('app')).toBe('1');
    expect(back.searchParams.get('state')).toBe('st');
    const code = back.searchParams.get('code')!;
    expect(code).toMatch(/^[\w-]{10,}$/);
    const exchange = (): Promise<Response> =>
      fetch(sim!.tokenUrl, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({
          grant_type: 'authorization_code',
          code,
          redirect_uri: form.redirect_uri,
          client_id: SIM_CLIENT_ID,
          client_secret: SIM_CLIENT_SECRET,
        }).toString(),
      });
    expect((await exchange()).status).toBe(200);
    expect((await exchange()).status).toBe(400);

    const denied = await post(sim.authorizeUrl, new URLSearchParams({ ...form, decision: 'deny' }));
    expect(denied.status).toBe(302);
    const refusal = new URL(denied.location!);
    expect(refusal.searchParams.get('error')).toBe('access_denied');
    expect(refusal.searchParams.get('state')).toBe('st');
    expect(refusal.searchParams.has('code')).toBe(false);
  });
});
