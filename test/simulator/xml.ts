// Minimal XML reader/writer for the simulator's XML-RPC endpoint.
// Just enough to read a methodCall (methodName, params) and to reject malformed
// documents the way Keap's XML-RPC backend does (HTTP 200 + <fault>).
// No dependencies: the simulator must only use Node built-ins.

export interface XmlElement {
  name: string;
  children: XmlElement[];
  /** Concatenated direct text content (entities decoded, CDATA included). */
  text: string;
}

export class XmlParseError extends Error {}

const NAMED_ENTITIES: Record<string, string> = { lt: '<', gt: '>', amp: '&', quot: '"', apos: "'" };
const ENTITY_RE = /&(#x[0-9a-fA-F]+|#[0-9]+|[A-Za-z]+);|&/g;
const TAG_RE = /^([A-Za-z_:][\w.:-]*)(?:\s[^]*)?$/;

export function decodeEntities(raw: string): string {
  if (!raw.includes('&')) return raw;
  return raw.replace(ENTITY_RE, (whole, ent: string | undefined) => {
    if (ent === undefined)
      throw new XmlParseError('The entity name must immediately follow the "&" in the entity reference.');
    if (ent.startsWith('#')) {
      const cp = ent[1] === 'x' ? parseInt(ent.slice(2), 16) : parseInt(ent.slice(1), 10);
      if (!Number.isFinite(cp) || cp > 0x10ffff) throw new XmlParseError(`Invalid character reference ${whole}`);
      return String.fromCodePoint(cp);
    }
    const v = NAMED_ENTITIES[ent];
    if (v === undefined) throw new XmlParseError(`The entity "${ent}" was referenced, but not declared.`);
    return v;
  });
}

export function escapeXml(s: string): string {
  return s.replace(/[<>&]/g, (c) => (c === '<' ? '&lt;' : c === '>' ? '&gt;' : '&amp;'));
}

/** Parses a whole document; returns its root element. Throws XmlParseError when not well-formed. */
export function parseXml(src: string): XmlElement {
  const doc: XmlElement = { name: '#document', children: [], text: '' };
  const stack: XmlElement[] = [doc];
  const n = src.length;
  let i = 0;
  while (i < n) {
    const lt = src.indexOf('<', i);
    const textEnd = lt === -1 ? n : lt;
    if (textEnd > i) {
      const raw = src.slice(i, textEnd);
      const top = stack[stack.length - 1]!;
      if (stack.length === 1) {
        if (raw.trim() !== '') throw new XmlParseError('Content is not allowed in prolog.');
      } else {
        top.text += decodeEntities(raw);
      }
    }
    if (lt === -1) break;
    if (src.startsWith('<?', lt)) {
      const end = src.indexOf('?>', lt + 2);
      if (end < 0) throw new XmlParseError('Unterminated processing instruction.');
      i = end + 2;
      continue;
    }
    if (src.startsWith('<!--', lt)) {
      const end = src.indexOf('-->', lt + 4);
      if (end < 0) throw new XmlParseError('Unterminated comment.');
      i = end + 3;
      continue;
    }
    if (src.startsWith('<![CDATA[', lt)) {
      const end = src.indexOf(']]>', lt + 9);
      if (end < 0 || stack.length === 1) throw new XmlParseError('Misplaced or unterminated CDATA section.');
      stack[stack.length - 1]!.text += src.slice(lt + 9, end);
      i = end + 3;
      continue;
    }
    if (src.startsWith('<!', lt)) throw new XmlParseError('DOCTYPE is disallowed.');
    const gt = src.indexOf('>', lt + 1);
    if (gt < 0) throw new XmlParseError('XML document structures must start and end within the same entity.');
    let tag = src.slice(lt + 1, gt);
    i = gt + 1;
    if (tag.startsWith('/')) {
      const name = tag.slice(1).trim();
      const open = stack.pop();
      if (stack.length === 0 || !open || open.name !== name) {
        throw new XmlParseError(
          `The end-tag for element type "${open?.name ?? ''}" must end with the '>' delimiter (got </${name}>).`,
        );
      }
      continue;
    }
    const selfClosing = tag.endsWith('/');
    if (selfClosing) tag = tag.slice(0, -1);
    const m = TAG_RE.exec(tag);
    if (!m) throw new XmlParseError(`Malformed tag <${tag}>.`);
    const el: XmlElement = { name: m[1]!, children: [], text: '' };
    if (stack.length === 1 && doc.children.length > 0) {
      throw new XmlParseError('The markup in the document following the root element must be well-formed.');
    }
    stack[stack.length - 1]!.children.push(el);
    if (!selfClosing) stack.push(el);
  }
  if (stack.length !== 1) throw new XmlParseError('XML document structures must start and end within the same entity.');
  const root = doc.children[0];
  if (!root) throw new XmlParseError('Premature end of file.');
  return root;
}

export interface XmlRpcCall {
  methodName: string;
  /** Number of <param> elements in <params>. */
  paramCount: number;
  /** The first param's value as text (entities decoded), undefined when there are no params. */
  firstParam: string | undefined;
}

/** Reads a methodCall. Throws XmlParseError when malformed or not a methodCall. */
export function parseMethodCall(body: string): XmlRpcCall {
  const root = parseXml(body);
  if (root.name !== 'methodCall') throw new XmlParseError(`Expected methodCall, got ${root.name}.`);
  const nameEl = root.children.find((c) => c.name === 'methodName');
  const methodName = nameEl?.text.trim() ?? '';
  if (!methodName) throw new XmlParseError('Missing methodName.');
  const params = root.children.find((c) => c.name === 'params');
  const paramEls = params ? params.children.filter((c) => c.name === 'param') : [];
  let firstParam: string | undefined;
  const first = paramEls[0];
  if (first) {
    const value = first.children.find((c) => c.name === 'value');
    if (!value) throw new XmlParseError('param without value.');
    // <value><string>x</string></value>, another typed value, or bare <value>x</value> (a string per the spec).
    const typed = value.children[0];
    firstParam = typed ? typed.text : value.text;
  }
  return { methodName, paramCount: paramEls.length, firstParam };
}

type RpcMember = [name: string, type: 'string' | 'int', value: string | number];

export function methodResponseStruct(members: RpcMember[]): string {
  let s = '<?xml version="1.0"?><methodResponse><params><param><value><struct>';
  for (const [name, type, value] of members) {
    s += `<member><name>${name}</name><value><${type}>${escapeXml(String(value))}</${type}></value></member>`;
  }
  return s + '</struct></value></param></params></methodResponse>';
}

export function methodResponseFault(faultCode: number, faultString: string): string {
  return (
    '<?xml version="1.0"?><methodResponse><fault><value><struct>' +
    `<member><name>faultCode</name><value><int>${faultCode}</int></value></member>` +
    `<member><name>faultString</name><value><string>${escapeXml(faultString)}</string></value></member>` +
    '</struct></value></fault></methodResponse>'
  );
}

// ---------------------------------------------------------------- typed values (classic methods)

/** An XML-RPC dateTime.iso8601, kept as its wire text (YYYYMMDDTHH:MM:SS, Keap: US Eastern). */
export class RpcDateTime {
  constructor(readonly text: string) {}
}
/** A double, so 5.0 is not written back as an int. */
export class RpcDouble {
  constructor(readonly value: number) {}
}
export type RpcValue = string | number | boolean | RpcDateTime | RpcDouble | RpcValue[] | RpcStruct;
export interface RpcStruct {
  [member: string]: RpcValue;
}

function readValue(value: XmlElement): RpcValue {
  const typed = value.children[0];
  if (!typed) return value.text; // bare <value>x</value>: a string
  switch (typed.name) {
    case 'string':
      return typed.text;
    case 'i4':
    case 'int':
    case 'i8': {
      const t = typed.text.trim();
      if (!/^[+-]?\d+$/.test(t)) throw new XmlParseError(`For input string: "${t}"`);
      return Number(t);
    }
    case 'boolean': {
      const t = typed.text.trim();
      if (t !== '0' && t !== '1') throw new XmlParseError(`Failed to parse boolean value: ${t}`);
      return t === '1';
    }
    case 'double': {
      const n = Number(typed.text.trim());
      if (!Number.isFinite(n)) throw new XmlParseError(`Failed to parse double value: ${typed.text}`);
      return new RpcDouble(n);
    }
    case 'dateTime.iso8601':
      return new RpcDateTime(typed.text.trim());
    case 'base64':
      return Buffer.from(typed.text.trim(), 'base64').toString('utf8');
    case 'nil':
      return '';
    case 'array': {
      const data = typed.children.find((c) => c.name === 'data');
      return (data?.children ?? []).filter((c) => c.name === 'value').map(readValue);
    }
    case 'struct': {
      const out: RpcStruct = {};
      for (const m of typed.children) {
        if (m.name !== 'member') continue;
        const name = m.children.find((c) => c.name === 'name')?.text ?? '';
        const v = m.children.find((c) => c.name === 'value');
        if (!v) throw new XmlParseError('member without value.');
        out[name] = readValue(v);
      }
      return out;
    }
    default:
      throw new XmlParseError(`Unknown type: ${typed.name}`);
  }
}

/** Reads a methodCall with every param's value typed. Throws XmlParseError when malformed. */
export function parseMethodCallValues(body: string): { methodName: string; params: RpcValue[] } {
  const root = parseXml(body);
  if (root.name !== 'methodCall') throw new XmlParseError(`Expected methodCall, got ${root.name}.`);
  const methodName = root.children.find((c) => c.name === 'methodName')?.text.trim() ?? '';
  if (!methodName) throw new XmlParseError('Missing methodName.');
  const paramsEl = root.children.find((c) => c.name === 'params');
  const params = (paramsEl?.children ?? [])
    .filter((c) => c.name === 'param')
    .map((p) => {
      const v = p.children.find((c) => c.name === 'value');
      if (!v) throw new XmlParseError('param without value.');
      return readValue(v);
    });
  return { methodName, params };
}

/** Keap's wire style (VCR recordings): untyped strings, <i4> ints, <boolean>0|1</boolean>. */
export function writeValue(v: RpcValue): string {
  if (typeof v === 'string') return `<value>${escapeXml(v)}</value>`;
  if (typeof v === 'number') return `<value><i4>${v}</i4></value>`;
  if (typeof v === 'boolean') return `<value><boolean>${v ? 1 : 0}</boolean></value>`;
  if (v instanceof RpcDateTime) return `<value><dateTime.iso8601>${v.text}</dateTime.iso8601></value>`;
  if (v instanceof RpcDouble) return `<value><double>${v.value}</double></value>`;
  if (Array.isArray(v)) return `<value><array><data>${v.map(writeValue).join('')}</data></array></value>`;
  let s = '<value><struct>';
  for (const [k, m] of Object.entries(v)) s += `<member><name>${escapeXml(k)}</name>${writeValue(m)}</member>`;
  return s + '</struct></value>';
}

const KEAP_PROLOG = '<?xml version="1.0" encoding="utf-8"?>';

export function keapResponse(v: RpcValue): string {
  return `${KEAP_PROLOG}<methodResponse><params><param>${writeValue(v)}</param></params></methodResponse>`;
}

/** A fault as Keap writes it (VCR data_auth_user_failure): <i4> code, untyped string. */
export function keapFault(code: number, faultString: string): string {
  return (
    `${KEAP_PROLOG}<methodResponse><fault><value><struct>` +
    `<member><name>faultCode</name><value><i4>${code}</i4></value></member>` +
    `<member><name>faultString</name><value>${escapeXml(faultString)}</value></member>` +
    '</struct></value></fault></methodResponse>'
  );
}

/** Reads a methodResponse (for tests): its value, or its fault's code and string. */
export function parseMethodResponse(body: string): { value?: RpcValue; fault?: { code: number; string: string } } {
  const root = parseXml(body);
  if (root.name !== 'methodResponse') throw new XmlParseError(`Expected methodResponse, got ${root.name}.`);
  const f = root.children.find((c) => c.name === 'fault');
  if (f) {
    const v = f.children.find((c) => c.name === 'value');
    if (!v) throw new XmlParseError('fault without value.');
    const s = readValue(v) as RpcStruct;
    return { fault: { code: s.faultCode as number, string: s.faultString as string } };
  }
  const v = root.children
    .find((c) => c.name === 'params')
    ?.children.find((c) => c.name === 'param')
    ?.children.find((c) => c.name === 'value');
  if (!v) throw new XmlParseError('methodResponse without a value.');
  return { value: readValue(v) };
}
