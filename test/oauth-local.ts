// Playing the browser with plain HTTP: the authorize page's GET and POST, redirects not followed.
import type { KeapSimulator } from './simulator/keap-simulator.js';

export interface Answer {
  status: number;
  location: string | null;
  body: string;
  headers: Headers;
}

export async function get(url: string): Promise<Answer> {
  const res = await fetch(url, { redirect: 'manual' });
  return { status: res.status, location: res.headers.get('location'), body: await res.text(), headers: res.headers };
}

export async function post(url: string, form: URLSearchParams): Promise<Answer> {
  const res = await fetch(url, {
    method: 'POST',
    redirect: 'manual',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: form.toString(),
  });
  return { status: res.status, location: res.headers.get('location'), body: await res.text(), headers: res.headers };
}

/** The form's hidden fields, as a browser would post them back (values un-escaped). */
export function hiddenFields(html: string): URLSearchParams {
  const form = new URLSearchParams();
  for (const m of html.matchAll(/<input type="hidden" name="([^"]+)" value="([^"]*)">/g))
    form.set(
      m[1]!,
      m[2]!.replace(/&#(\d+);/g, (_, n: string) => String.fromCharCode(Number(n))),
    );
  return form;
}

export function authorizeQuery(sim: KeapSimulator, fields: Record<string, string>): string {
  const url = new URL(sim.authorizeUrl);
  for (const [k, v] of Object.entries(fields)) url.searchParams.set(k, v);
  return url.href;
}
