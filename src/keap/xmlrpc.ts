/**
 * Byte-level handling of the `privateKey` (first `<param>`) of Keap's legacy XML-RPC `methodCall`.
 *
 * The body is never parsed-and-reserialized: a single O(n) forward scan over a latin1 view of the
 * bytes (one char per byte, so string indices are byte offsets, and the bytes of a multibyte UTF-8
 * character, all >= 0x80, can never be mistaken for ASCII markup) finds the byte span of the first
 * param's value; `rewritePrivateKey` splices the new key into that span and copies every other byte
 * unchanged. The same scan checks the whole body is a well-formed `methodCall`, so both functions
 * accept and reject exactly the same bodies.
 *
 * Decisions:
 * - The first value may be any well-formed XML-RPC value. `<string>` content (text, entities, CDATA
 *   sections, comments) is replaced inside the existing `<string>` element; a bare `<value>x</value>`,
 *   an empty `<value></value>`, `<value/>`, `<string/>` and any other typed value (`<int>`,
 *   `<struct>`, ...: legacy clients send junk there) are replaced by `<string>KEY</string>`.
 * - `readPrivateKey` returns the decoded text of a string, bare or other scalar value (`<int>5</int>`
 *   gives "5"), "" for an empty value or `<nil/>`, and throws `XmlRpcError` for a `<struct>` or
 *   `<array>` (it can never be a key).
 * - No `<params>`: `<params><param>…</param></params>` is inserted right after `</methodName>`;
 *   `<params/>` is replaced by it; an empty `<params></params>` gets `<param>…</param>` right after
 *   its opening tag. `readPrivateKey` returns undefined for all three.
 * - DOCTYPE and other `<!` declarations are rejected (no entity expansion), as are a missing or
 *   empty `<methodName>`, a root other than `<methodCall>`, unclosed or mismatched elements anywhere,
 *   text outside the root, and a `<param>` without a `<value>`. Tags may carry attributes (XML-RPC
 *   has none; they are skipped) and whitespace before `>` / `/>`. Names are case-sensitive.
 * - Text is read as UTF-8 (a UTF-8 BOM is skipped); the key is written as UTF-8.
 */

export class XmlRpcError extends Error {
  readonly code = 'malformed_xmlrpc';
  constructor(message: string) {
    super(message);
    this.name = 'XmlRpcError';
  }
}

const PREFIX = 'XML-RPC body is not a well-formed methodCall: ';

function fail(why: string): never {
  throw new XmlRpcError(PREFIX + why);
}

const LT = 0x3c; // <
const GT = 0x3e; // >
const SLASH = 0x2f; // /
const BANG = 0x21; // !
const QMARK = 0x3f; // ?
const EQ = 0x3d; // =
const DQUOTE = 0x22; // "
const SQUOTE = 0x27; // '

function isWs(c: number): boolean {
  return c === 0x20 || c === 0x0a || c === 0x09 || c === 0x0d;
}

function skipWs(s: string, p: number): number {
  while (p < s.length && isWs(s.charCodeAt(p))) p++;
  return p;
}

/** End of a tag or attribute name starting at p (p itself when there is none). */
function scanName(s: string, p: number): number {
  const n = s.length;
  while (p < n) {
    const c = s.charCodeAt(p);
    if (isWs(c) || c === GT || c === SLASH || c === LT || c === EQ || c === DQUOTE || c === SQUOTE) break;
    p++;
  }
  return p;
}

function isWsOnly(s: string, start: number, end: number): boolean {
  for (let i = start; i < end; i++) if (!isWs(s.charCodeAt(i))) return false;
  return true;
}

type Token =
  | { t: 'open'; name: string; start: number; end: number; selfClosing: boolean }
  | { t: 'close'; name: string; start: number; end: number }
  | { t: 'text'; start: number; end: number }
  /** start/end: the whole section; innerStart/innerEnd: between `<![CDATA[` and `]]>`. */
  | { t: 'cdata'; start: number; end: number; innerStart: number; innerEnd: number }
  | { t: 'comment'; start: number; end: number }
  | { t: 'pi'; start: number; end: number }
  | { t: 'eof'; start: number; end: number };

/** Forward-only tokenizer; every step is an indexOf or a short scan, so a whole pass is O(n). */
class Lexer {
  pos: number;
  constructor(
    private readonly s: string,
    start: number,
  ) {
    this.pos = start;
  }

  next(): Token {
    const s = this.s;
    const start = this.pos;
    if (start >= s.length) return { t: 'eof', start, end: start };
    if (s.charCodeAt(start) !== LT) {
      let end = s.indexOf('<', start);
      if (end < 0) end = s.length;
      this.pos = end;
      return { t: 'text', start, end };
    }
    const c1 = s.charCodeAt(start + 1);
    if (c1 === SLASH) {
      const nameEnd = scanName(s, start + 2);
      if (nameEnd === start + 2) fail(`malformed closing tag at byte ${start}`);
      const name = s.slice(start + 2, nameEnd);
      const p = skipWs(s, nameEnd);
      if (s.charCodeAt(p) !== GT) fail(`unterminated closing tag </${name}> at byte ${start}`);
      this.pos = p + 1;
      return { t: 'close', name, start, end: p + 1 };
    }
    if (c1 === QMARK) {
      const q = s.indexOf('?>', start + 2);
      if (q < 0) fail(`unterminated processing instruction at byte ${start}`);
      this.pos = q + 2;
      return { t: 'pi', start, end: q + 2 };
    }
    if (c1 === BANG) {
      if (s.startsWith('<!--', start)) {
        const q = s.indexOf('-->', start + 4);
        if (q < 0) fail(`unterminated comment at byte ${start}`);
        this.pos = q + 3;
        return { t: 'comment', start, end: q + 3 };
      }
      if (s.startsWith('<![CDATA[', start)) {
        const innerStart = start + 9;
        const q = s.indexOf(']]>', innerStart);
        if (q < 0) fail(`unterminated CDATA section at byte ${start}`);
        this.pos = q + 3;
        return { t: 'cdata', start, end: q + 3, innerStart, innerEnd: q };
      }
      fail(`markup declarations such as <!DOCTYPE are not accepted (byte ${start})`);
    }
    const nameEnd = scanName(s, start + 1);
    if (nameEnd === start + 1) fail(`stray "<" at byte ${start}`);
    const name = s.slice(start + 1, nameEnd);
    let p = nameEnd;
    for (;;) {
      const afterWs = skipWs(s, p);
      const c = s.charCodeAt(afterWs);
      if (c === GT) {
        this.pos = afterWs + 1;
        return { t: 'open', name, start, end: afterWs + 1, selfClosing: false };
      }
      if (c === SLASH && s.charCodeAt(afterWs + 1) === GT) {
        this.pos = afterWs + 2;
        return { t: 'open', name, start, end: afterWs + 2, selfClosing: true };
      }
      if (afterWs >= s.length) fail(`unterminated tag <${name} at byte ${start}`);
      // An attribute (XML-RPC defines none; skipped): ws name ws? = ws? "value" | 'value'
      const attrEnd = scanName(s, afterWs);
      if (afterWs === p || attrEnd === afterWs) fail(`malformed tag <${name} at byte ${start}`);
      let q = skipWs(s, attrEnd);
      if (s.charCodeAt(q) !== EQ) fail(`malformed attribute in tag <${name} at byte ${start}`);
      q = skipWs(s, q + 1);
      const quote = s.charCodeAt(q);
      if (quote !== DQUOTE && quote !== SQUOTE) fail(`malformed attribute in tag <${name} at byte ${start}`);
      const close = s.indexOf(quote === DQUOTE ? '"' : "'", q + 1);
      if (close < 0) fail(`unterminated tag <${name} at byte ${start}`);
      p = close + 1;
    }
  }
}

/** Text that makes up a value: plain text (entities to decode) and CDATA sections (verbatim). */
interface Segment {
  cdata: boolean;
  start: number;
  end: number;
}

/** The span a text or CDATA token contributes to a value (a CDATA section's inside only). */
function segmentOf(tok: Extract<Token, { t: 'text' | 'cdata' }>): Segment {
  return tok.t === 'cdata'
    ? { cdata: true, start: tok.innerStart, end: tok.innerEnd }
    : { cdata: false, start: tok.start, end: tok.end };
}

/** What the first param's `<value>` holds: `<string>` (its content span) or another element. */
type StringChild = { kind: 'string'; start: number; end: number; segments: Segment[] };
type OtherChild = { kind: 'other'; name: string; compound: boolean; segments: Segment[] };

type Wrap = 'params' | 'param' | 'value' | 'string' | 'none';

interface Plan {
  /** The <methodName>'s text, as it stands between the tags (trimmed). */
  methodName: string;
  /** Byte span to replace with the key, wrapped in the elements named by `wrap`. */
  start: number;
  end: number;
  wrap: Wrap;
  /** What readPrivateKey reports. */
  read: { kind: 'none' } | { kind: 'text'; segments: Segment[] } | { kind: 'compound'; name: string };
}

function describe(s: string, tok: Token): string {
  switch (tok.t) {
    case 'open':
      return `<${tok.name}${tok.selfClosing ? '/' : ''}>`;
    case 'close':
      return `</${tok.name}>`;
    case 'text': {
      const text = s.slice(tok.start, Math.min(tok.end, tok.start + 20)).trim();
      return `text "${text}${tok.end - tok.start > 20 ? '…' : ''}"`;
    }
    case 'cdata':
      return 'a CDATA section';
    case 'comment':
      return 'a comment';
    case 'pi':
      return 'a processing instruction';
    case 'eof':
      return 'the end of the body';
  }
}

class Parser {
  private readonly lx: Lexer;
  constructor(private readonly s: string) {
    // A UTF-8 byte order mark, seen through latin1.
    this.lx = new Lexer(s, s.startsWith('\u00ef\u00bb\u00bf') ? 3 : 0);
  }

  /** Next token, skipping comments, processing instructions and whitespace-only text. */
  private nextSignificant(): Token {
    for (;;) {
      const tok = this.lx.next();
      if (tok.t === 'comment' || tok.t === 'pi') continue;
      if (tok.t === 'text' && isWsOnly(this.s, tok.start, tok.end)) continue;
      return tok;
    }
  }

  parse(): Plan {
    const s = this.s;
    if (s.length === 0) fail('the body is empty');
    const root = this.nextSignificant();
    if (root.t === 'eof') fail('no root element; expected <methodCall>');
    if (root.t !== 'open') fail(`expected <methodCall> as the root element, found ${describe(s, root)}`);
    if (root.name !== 'methodCall') fail(`the root element is <${root.name}>, expected <methodCall>`);
    if (root.selfClosing) fail('<methodCall/> has no <methodName>');

    const mn = this.nextSignificant();
    if (mn.t !== 'open' || mn.name !== 'methodName') {
      fail(`expected <methodName> as the first child of <methodCall>, found ${describe(s, mn)}`);
    }
    if (mn.selfClosing) fail('<methodName> is empty');
    let nameHasText = false;
    let mnClose: Token;
    for (;;) {
      mnClose = this.lx.next();
      if (mnClose.t === 'text' || mnClose.t === 'cdata') {
        const a = mnClose.t === 'cdata' ? mnClose.innerStart : mnClose.start;
        const b = mnClose.t === 'cdata' ? mnClose.innerEnd : mnClose.end;
        if (!isWsOnly(s, a, b)) nameHasText = true;
        continue;
      }
      if (mnClose.t === 'comment' || mnClose.t === 'pi') continue;
      break;
    }
    if (mnClose.t === 'eof') fail('unclosed <methodName>');
    if (mnClose.t !== 'close' || mnClose.name !== 'methodName') {
      fail(`<methodName> must contain only text, found ${describe(s, mnClose)}`);
    }
    if (!nameHasText) fail('<methodName> is empty');
    const afterMethodName = mnClose.end;
    const methodName = s.slice(mn.end, mnClose.start).trim();

    const p = this.nextSignificant();
    if (p.t === 'close' && p.name === 'methodCall') {
      this.finish([]);
      return { methodName, start: afterMethodName, end: afterMethodName, wrap: 'params', read: { kind: 'none' } };
    }
    if (p.t !== 'open' || p.name !== 'params') {
      fail(`expected <params> or </methodCall> after </methodName>, found ${describe(s, p)}`);
    }
    if (p.selfClosing) {
      this.finish(['methodCall']);
      return { methodName, start: p.start, end: p.end, wrap: 'params', read: { kind: 'none' } };
    }

    const param = this.nextSignificant();
    if (param.t === 'close' && param.name === 'params') {
      this.finish(['methodCall']);
      return { methodName, start: p.end, end: p.end, wrap: 'param', read: { kind: 'none' } };
    }
    if (param.t !== 'open' || param.name !== 'param') {
      fail(`expected <param> or </params>, found ${describe(s, param)}`);
    }
    if (param.selfClosing) fail('the first <param> has no <value>');
    const value = this.nextSignificant();
    if (value.t === 'eof') fail('unclosed <param>');
    if (value.t !== 'open' || value.name !== 'value') {
      fail(`the first <param> must contain a <value>, found ${describe(s, value)}`);
    }
    const plan = this.parseValue(value);
    const paramClose = this.nextSignificant();
    if (paramClose.t === 'eof') fail('unclosed <param>');
    if (paramClose.t !== 'close' || paramClose.name !== 'param') {
      fail(`expected </param> after the first param's <value>, found ${describe(s, paramClose)}`);
    }
    this.finish(['methodCall', 'params']);
    return { methodName, ...plan };
  }

  /** The first param's `<value>` (its opening tag just read). */
  private parseValue(value: Extract<Token, { t: 'open' }>): Omit<Plan, 'methodName'> {
    const s = this.s;
    if (value.selfClosing) {
      return { start: value.start, end: value.end, wrap: 'value', read: { kind: 'text', segments: [] } };
    }
    const segments: Segment[] = [];
    let nonWsText = false;
    let child: { kind: 'string-empty'; start: number; end: number } | StringChild | OtherChild | undefined;
    let close: Token;
    for (;;) {
      const tok = this.lx.next();
      if (tok.t === 'comment' || tok.t === 'pi') continue;
      if (tok.t === 'text' || tok.t === 'cdata') {
        segments.push(segmentOf(tok));
        if (tok.t === 'cdata' || !isWsOnly(s, tok.start, tok.end)) nonWsText = true;
        continue;
      }
      if (tok.t === 'open') {
        if (child) fail(`the first param's <value> holds more than one element (<${tok.name}> at byte ${tok.start})`);
        if (tok.name === 'string') {
          child = tok.selfClosing ? { kind: 'string-empty', start: tok.start, end: tok.end } : this.parseString(tok);
        } else {
          child = this.skipElement(tok);
        }
        continue;
      }
      close = tok;
      break;
    }
    if (close.t === 'eof') fail('unclosed <value> in the first param');
    if (close.t !== 'close' || close.name !== 'value') {
      fail(`expected </value> in the first param, found ${describe(s, close)}`);
    }
    if (child && nonWsText) fail("the first param's <value> mixes text and elements");

    if (!child) {
      // A bare value is a string (whitespace included).
      return { start: value.end, end: close.start, wrap: 'string', read: { kind: 'text', segments } };
    }
    switch (child.kind) {
      case 'string-empty':
        return { start: child.start, end: child.end, wrap: 'string', read: { kind: 'text', segments: [] } };
      case 'string':
        return { start: child.start, end: child.end, wrap: 'none', read: { kind: 'text', segments: child.segments } };
      case 'other':
        return {
          start: value.end,
          end: close.start,
          wrap: 'string',
          read: child.compound ? { kind: 'compound', name: child.name } : { kind: 'text', segments: child.segments },
        };
    }
  }

  /** `<string>`'s content span (start/end) and text; it may hold text, CDATA and comments only. */
  private parseString(open: Extract<Token, { t: 'open' }>): StringChild {
    const segments: Segment[] = [];
    for (;;) {
      const tok = this.lx.next();
      switch (tok.t) {
        case 'text':
        case 'cdata':
          segments.push(segmentOf(tok));
          continue;
        case 'comment':
        case 'pi':
          continue;
        case 'eof':
          fail('unclosed <string> in the first param');
        case 'open':
          fail(`<string> must contain only text, found <${tok.name}> at byte ${tok.start}`);
        case 'close':
          if (tok.name !== 'string') fail(`expected </string> in the first param, found </${tok.name}>`);
          return { kind: 'string', start: open.end, end: tok.start, segments };
      }
    }
  }

  /** Skip a whole element (opening tag just read), collecting its direct text. */
  private skipElement(open: Extract<Token, { t: 'open' }>): OtherChild {
    const segments: Segment[] = [];
    const result: OtherChild = { kind: 'other', name: open.name, compound: false, segments };
    if (open.selfClosing) return result;
    const stack = [open.name];
    for (;;) {
      const tok = this.lx.next();
      switch (tok.t) {
        case 'text':
        case 'cdata':
          if (stack.length === 1) segments.push(segmentOf(tok));
          continue;
        case 'comment':
        case 'pi':
          continue;
        case 'eof':
          fail(`unclosed <${stack[stack.length - 1]}> in the first param`);
        case 'open':
          result.compound = true;
          if (!tok.selfClosing) stack.push(tok.name);
          continue;
        case 'close': {
          const top = stack[stack.length - 1];
          if (tok.name !== top) fail(`expected </${top}>, found </${tok.name}> at byte ${tok.start}`);
          stack.pop();
          if (stack.length === 0) {
            // <struct>/<array> are compound even when empty.
            if (open.name === 'struct' || open.name === 'array') result.compound = true;
            return result;
          }
        }
      }
    }
  }

  /** Check the rest of the body: the open elements in `stack` close in order, then nothing but misc. */
  private finish(stack: string[]): void {
    const s = this.s;
    while (stack.length > 0) {
      const tok = this.lx.next();
      switch (tok.t) {
        case 'eof':
          fail(`unclosed <${stack[stack.length - 1]}>`);
        case 'open':
          if (!tok.selfClosing) stack.push(tok.name);
          continue;
        case 'close': {
          const top = stack[stack.length - 1];
          if (tok.name !== top) fail(`expected </${top}>, found </${tok.name}> at byte ${tok.start}`);
          stack.pop();
          continue;
        }
        default:
          continue;
      }
    }
    for (;;) {
      const tok = this.nextSignificant();
      if (tok.t === 'eof') return;
      fail(`unexpected ${describe(s, tok)} after </methodCall>`);
    }
  }
}

function toBuffer(body: Buffer): Buffer {
  return Buffer.isBuffer(body)
    ? body
    : Buffer.from((body as Uint8Array).buffer, (body as Uint8Array).byteOffset, (body as Uint8Array).byteLength);
}

function plan(buf: Buffer): Plan {
  return new Parser(buf.toString('latin1')).parse();
}

const NAMED: Record<string, string> = { lt: '<', gt: '>', amp: '&', quot: '"', apos: "'" };

function isXmlChar(cp: number): boolean {
  return (
    cp === 0x9 ||
    cp === 0xa ||
    cp === 0xd ||
    (cp >= 0x20 && cp <= 0xd7ff) ||
    (cp >= 0xe000 && cp <= 0xfffd) ||
    (cp >= 0x10000 && cp <= 0x10ffff)
  );
}

function isRefChar(c: number): boolean {
  return (
    (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || c === 0x23 // 0-9 A-Z a-z #
  );
}

/** Decode the five predefined entities and numeric character references. Linear time. */
function decodeEntities(text: string): string {
  let amp = text.indexOf('&');
  if (amp < 0) return text;
  let out = '';
  let from = 0;
  while (amp >= 0) {
    let end = amp + 1;
    while (end < text.length && isRefChar(text.charCodeAt(end))) end++;
    if (text.charCodeAt(end) !== 0x3b /* ; */)
      fail('"&" not followed by an entity or character reference in the first param');
    const ref = text.slice(amp + 1, end);
    let decoded: string;
    if (ref.startsWith('#')) {
      const hex = ref[1] === 'x';
      const digits = ref.slice(hex ? 2 : 1);
      if (!(hex ? /^[0-9a-fA-F]+$/ : /^[0-9]+$/).test(digits))
        fail(`bad character reference &${ref}; in the first param`);
      const cp = parseInt(digits, hex ? 16 : 10);
      if (!isXmlChar(cp)) fail(`character reference &${ref}; is not an XML character`);
      decoded = String.fromCodePoint(cp);
    } else {
      const named = NAMED[ref];
      if (named === undefined) fail(`unknown entity &${ref}; in the first param`);
      decoded = named;
    }
    out += text.slice(from, amp) + decoded;
    from = end + 1;
    amp = text.indexOf('&', from);
  }
  return out + text.slice(from);
}

function readSegments(buf: Buffer, segments: Segment[]): string {
  let out = '';
  for (const seg of segments) {
    // XML end-of-line normalization applies to CDATA too; references (&#13;) survive it.
    const raw = buf.toString('utf8', seg.start, seg.end).replace(/\r\n?/g, '\n');
    out += seg.cdata ? raw : decodeEntities(raw);
  }
  return out;
}

/** The call's <methodName> (its text as sent, trimmed). Throws XmlRpcError when malformed. */
export function readMethodName(body: Buffer): string {
  return plan(toBuffer(body)).methodName;
}

/** First <param>'s value of a methodCall, entities decoded; undefined when the call has no params. Throws XmlRpcError when malformed. */
export function readPrivateKey(body: Buffer): string | undefined {
  const buf = toBuffer(body);
  const { read } = plan(buf);
  switch (read.kind) {
    case 'none':
      return undefined;
    case 'compound':
      throw new XmlRpcError(`XML-RPC privateKey (the first param) must be a string, not a <${read.name}>`);
    case 'text':
      return readSegments(buf, read.segments);
  }
}

// Characters XML 1.0 cannot carry at all, and lone surrogates (which UTF-8 cannot encode).
const NOT_XML_CHARS =
  /[\u0000-\u0008\u000b\u000c\u000e-\u001f\ufffe\uffff]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/gu;
const NOT_XML = new RegExp(NOT_XML_CHARS.source, 'u');

/** `s` without the characters XML 1.0 cannot carry. */
export function withoutNonXml(s: string): string {
  return s.replace(NOT_XML_CHARS, '');
}

/**
 * Body with the first param's value replaced by `key` (XML-escaped, written as
 * <value><string>KEY</string></value>, or inside the existing <string> element), every other byte
 * unchanged. A call with no <params> or empty <params></params> gets a first param inserted.
 * Throws XmlRpcError when malformed; throws a plain Error when `key` holds characters XML 1.0 cannot
 * represent (a configuration problem, not the client's).
 */
export function rewritePrivateKey(body: Buffer, key: string): Buffer {
  if (NOT_XML.test(key)) throw new Error('the configured XML-RPC key contains characters XML cannot represent');
  const buf = toBuffer(body);
  const { start, end, wrap } = plan(buf);
  const esc = escapeXml(key);
  let text: string;
  switch (wrap) {
    case 'none':
      text = esc;
      break;
    case 'string':
      text = `<string>${esc}</string>`;
      break;
    case 'value':
      text = `<value><string>${esc}</string></value>`;
      break;
    case 'param':
      text = `<param><value><string>${esc}</string></value></param>`;
      break;
    case 'params':
      text = `<params><param><value><string>${esc}</string></value></param></params>`;
      break;
  }
  return Buffer.concat([buf.subarray(0, start), Buffer.from(text, 'utf8'), buf.subarray(end)]);
}

const ESCAPES: Record<string, string> = {
  '&': '&amp;',
  '<': '&lt;',
  '>': '&gt;',
  '"': '&quot;',
  "'": '&apos;',
  // A literal CR would be normalized to LF by the reader; a reference survives.
  '\r': '&#13;',
};

export function escapeXml(s: string): string {
  return s.replace(/[&<>"'\r]/g, (c) => ESCAPES[c] ?? c);
}
