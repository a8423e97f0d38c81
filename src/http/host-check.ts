// DNS rebinding: a web page in a browser on this machine can point its own host name at
// 127.0.0.1 and then call the proxy, and through it the Keap account, as its own origin. The
// browser still sends the page's host name in Host, so the proxy serves only Host values it
// knows: loopback addresses and the names in ALLOWED_HOSTS.
import { isIPv4, isIPv6 } from 'node:net';

/**
 * Whether a request with this Host header may be served. `names`: lower-case host names (IPv6
 * addresses in brackets), as `parseAllowedHosts` returns them. The port is not compared.
 */
export function hostAllowed(host: string | undefined, names: ReadonlySet<string>): boolean {
  // HTTP/1.0 clients may send no Host; browsers always send one, so a request without one
  // is no rebinding page. An empty Host names no host either.
  if (host === undefined || host === '') return true;
  const name = hostName(host);
  return isLoopbackName(name) || names.has(name);
}

/**
 * The name in a Host header: lower-case, without the port or a trailing dot; an IPv6 address
 * keeps its brackets. '' for a shape no client should send (which matches nothing).
 */
export function hostName(host: string): string {
  let end: number;
  if (host.charCodeAt(0) === 91 /* [ */) {
    end = host.indexOf(']') + 1;
    if (end === 0 || (end < host.length && host.charCodeAt(end) !== 58) /* : */) return '';
  } else {
    const colon = host.indexOf(':');
    end = colon < 0 ? host.length : colon;
    if (end > 1 && host.charCodeAt(end - 1) === 46 /* . */) end--;
  }
  return host.slice(0, end).toLowerCase();
}

/** 127.0.0.0/8, localhost and [::1]: only this machine reaches the proxy by these. */
function isLoopbackName(name: string): boolean {
  return name === 'localhost' || name === '[::1]' || (name.startsWith('127.') && isIPv4(name));
}

/** The names a Host may carry besides loopback ones, built once from ALLOWED_HOSTS. */
export class AllowedHosts {
  private readonly names: ReadonlySet<string>;
  /**
   * The last Host value allowed: a client sends the same one on every request, so most
   * checks are one string compare. (Undefined to start with, which is allowed anyway.)
   */
  private last: string | undefined;

  constructor(names: readonly string[]) {
    this.names = new Set(names);
  }

  allows(host: string | undefined): boolean {
    if (host === this.last) return true;
    if (!hostAllowed(host, this.names)) return false;
    this.last = host;
    return true;
  }
}

const HOST_NAME = /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*\.?$/i;

/**
 * Parses ALLOWED_HOSTS: comma-separated host names or IP addresses, no ports, no wildcards.
 * Returns them as `hostName` gives a Host's name, so a lookup is one Set access.
 * Throws an Error saying what is wrong with an entry, the entry quoted by `show` (the
 * configuration passes its own, which never shows a URL's credentials).
 */
export function parseAllowedHosts(text: string, show: (entry: string) => string = (entry) => `"${entry}"`): string[] {
  const names: string[] = [];
  for (const raw of text.split(',')) {
    const entry = raw.trim();
    if (entry === '') continue;
    const bare = entry.startsWith('[') && entry.endsWith(']') ? entry.slice(1, -1) : entry;
    if (isIPv6(bare)) {
      // The form browsers send: compressed and lower-case.
      names.push(new URL(`http://[${bare}]/`).hostname);
    } else if (entry.includes('*')) {
      throw new Error(`${show(entry)}: wildcards are not supported; list every host name clients use`);
    } else if (entry.includes(':') || entry.includes('/')) {
      throw new Error(
        `${show(entry)}: give the host name alone, without scheme or port (the port is not compared), e.g. keap-proxy.internal`,
      );
    } else if (isIPv4(entry) || (entry.length <= 254 && HOST_NAME.test(entry))) {
      names.push(hostName(entry));
    } else {
      throw new Error(`${show(entry)} is not a host name or IP address, e.g. keap-proxy.internal`);
    }
  }
  return names;
}
