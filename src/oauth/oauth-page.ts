// The small page a browser lands on after Keap redirects back to us.
import type { ServerResponse } from 'node:http';

export function sendPage(res: ServerResponse, status: number, title: string, text: string): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const html = `<!doctype html>\n<html><head><meta charset="utf-8"><title>${escapeHtml(title)}</title></head>\n<body><h1>${escapeHtml(title)}</h1><p>${escapeHtml(text)}</p></body></html>\n`;
  res.writeHead(status, {
    'content-type': 'text/html; charset=utf-8',
    'content-length': Buffer.byteLength(html),
    'cache-control': 'no-store',
    // The address bar holds the authorization code: no script, no subresource, no Referer.
    'content-security-policy': "default-src 'none'",
    'referrer-policy': 'no-referrer',
  });
  res.end(html);
}

export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
