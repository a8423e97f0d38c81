// deploy/kubernetes is checked against the code: every env name is a setting (or a secret's
// _FILE), every value loads, probe paths and ports are the server's, the user is the image's.
import { describe, it, expect, afterAll } from 'vitest';
import { readdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import { parseAllDocuments } from 'yaml';
import { SETTINGS, loadConfig } from '../src/config/config.js';
import { send, startRawRig, tempDir, type RawRig } from './harness.js';

const ROOT = path.resolve(import.meta.dirname, '..');
const DEPLOY = path.join(ROOT, 'deploy/kubernetes');

type Obj = Record<string, unknown>;
interface Doc {
  file: string;
  doc: Obj;
}

function yamlFiles(dir: string): string[] {
  return (readdirSync(dir, { recursive: true }) as string[])
    .filter((f) => f.endsWith('.yaml'))
    .map((f) => path.join(dir, f));
}

function docs(): Doc[] {
  const out: Doc[] = [];
  for (const file of yamlFiles(DEPLOY)) {
    for (const d of parseAllDocuments(readFileSync(file, 'utf8'))) {
      expect(d.errors, file).toEqual([]);
      const doc = d.toJS() as Obj | null;
      if (doc !== null) out.push({ file: path.relative(DEPLOY, file), doc });
    }
  }
  return out;
}

const get = (o: unknown, ...keys: string[]): unknown =>
  keys.reduce<unknown>((v, k) => (v === null || v === undefined ? undefined : (v as Obj)[k]), o);

interface ProxyContainer {
  file: string;
  pod: Obj;
  container: Obj;
  init: boolean;
}

function proxyContainers(): ProxyContainer[] {
  const found: ProxyContainer[] = [];
  for (const { file, doc } of docs()) {
    const pod = get(doc, 'spec', 'template', 'spec') as Obj | undefined;
    if (pod === undefined) continue;
    for (const [list, init] of [
      ['containers', false],
      ['initContainers', true],
    ] as const) {
      for (const c of (pod[list] as Obj[] | undefined) ?? [])
        if (c.name === 'keap-proxy') found.push({ file, pod, container: c, init });
    }
  }
  return found;
}

const envOf = (c: Obj): { name: string; value: string }[] => (c.env as { name: string; value: string }[]) ?? [];

function portNumber(c: Obj, port: unknown): number {
  if (typeof port === 'number') return port;
  const named = ((c.ports as Obj[]) ?? []).find((p) => p.name === port);
  return Number(named?.containerPort);
}

const SECRET = new Set(SETTINGS.filter((s) => s.secret).map((s) => s.name));
const NAMES = new Set(SETTINGS.map((s) => s.name));

describe('deploy/kubernetes', () => {
  it('is kustomize: every resource a kustomization names exists', () => {
    const kustomizations = yamlFiles(DEPLOY).filter((f) => f.endsWith('kustomization.yaml'));
    expect(kustomizations.length).toBe(3);
    for (const k of kustomizations) {
      const doc = parseAllDocuments(readFileSync(k, 'utf8'))[0]?.toJS() as { resources: string[] };
      for (const r of doc.resources) expect(existsSync(path.resolve(path.dirname(k), r)), `${k}: ${r}`).toBe(true);
    }
  });

  it('runs keap-proxy as a native sidecar in one overlay and as a Deployment behind a Service in the other', () => {
    const containers = proxyContainers();
    expect(containers.map((c) => [c.file, c.init])).toEqual([
      ['overlays/sidecar/deployment.yaml', true],
      ['overlays/standalone/deployment.yaml', false],
    ]);
    const sidecar = containers[0] as ProxyContainer;
    expect(sidecar.container.restartPolicy).toBe('Always');
    expect(docs().some(({ file, doc }) => file.startsWith('overlays/standalone') && doc.kind === 'Service')).toBe(true);
  });

  it('names only settings that exist (secrets through _FILE), and their values load', () => {
    for (const { file, container } of proxyContainers()) {
      const env: Record<string, string> = {};
      for (const { name, value } of envOf(container)) {
        const known = NAMES.has(name) || (name.endsWith('_FILE') && SECRET.has(name.slice(0, -5)));
        expect(known, `${file}: ${name}`).toBe(true);
        if (name.endsWith('_FILE')) expect(SECRET.has(name.slice(0, -5)), `${file}: ${name}`).toBe(true);
        // Secrets are read through files, never written into a manifest.
        expect(SECRET.has(name) && name !== 'REDIS_URL', `${file}: ${name} in plain text`).toBe(false);
        env[name] = value;
      }
      // The secret volume's files, stood in for by temporary ones.
      const dir = tempDir();
      for (const [name, value] of Object.entries(env)) {
        if (!name.endsWith('_FILE')) continue;
        const stand = path.join(dir, path.basename(value));
        writeFileSync(stand, name.startsWith('PROXY_CLIENT_KEYS') ? 'k'.repeat(40) : 'x'.repeat(40));
        env[name] = stand;
      }
      const config = loadConfig({ env, cwd: dir });
      expect(config.accounts[0]!.credentials.mode, file).toBe('oauth');
      const ports = ((container.ports as Obj[]) ?? []).map((p) => Number(p.containerPort));
      expect(ports.length, file).toBeGreaterThan(0);
      for (const p of ports) expect([config.port, config.probePort], `${file}: containerPort ${p}`).toContain(p);
    }
  });

  const rigs: RawRig[] = [];
  afterAll(async () => {
    for (const r of rigs) await r.close();
  });

  it('probes what the server answers, on a port it listens on, over HTTP (no process per probe)', async () => {
    const rig = await startRawRig({ PROBE_PORT: '0' });
    rigs.push(rig);
    for (const { file, container } of proxyContainers()) {
      const env = Object.fromEntries(envOf(container).map((e) => [e.name, e.value]));
      for (const probe of ['startupProbe', 'livenessProbe', 'readinessProbe']) {
        const spec = container[probe] as Obj | undefined;
        expect(spec, `${file}: ${probe}`).toBeDefined();
        expect(spec?.exec, `${file}: ${probe} spawns a process`).toBeUndefined();
        const httpGet = spec?.httpGet as { path: string; port: unknown };
        expect(['/healthz', '/readyz']).toContain(httpGet.path);
        const port = portNumber(container, httpGet.port);
        // The kubelet reaches the pod's address: a loopback-only listener must leave probes to PROBE_PORT.
        if (env.HOST === '127.0.0.1') expect(port, `${file}: ${probe}`).toBe(Number(env.PROBE_PORT));
        else expect(port, `${file}: ${probe}`).toBe(Number(env.PORT));
        expect((await send(rig.proxy.url, 'GET', httpGet.path)).status, httpGet.path).toBe(200);
      }
    }
  });

  it('runs as the image user, non-root, read-only, with no capabilities and the default seccomp profile', () => {
    const user = /^USER (\d+):(\d+)$/m.exec(readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8'));
    expect(user).not.toBeNull();
    for (const { file, pod, container } of proxyContainers()) {
      const sc = container.securityContext as Obj;
      expect(sc.runAsUser, file).toBe(Number(user?.[1]));
      expect(sc.runAsGroup, file).toBe(Number(user?.[2]));
      expect(sc.readOnlyRootFilesystem, file).toBe(true);
      expect(sc.allowPrivilegeEscalation, file).toBe(false);
      expect(get(sc, 'capabilities', 'drop'), file).toEqual(['ALL']);
      expect(get(pod, 'securityContext', 'runAsNonRoot'), file).toBe(true);
      expect(get(pod, 'securityContext', 'seccompProfile', 'type'), file).toBe('RuntimeDefault');
      // The memory limit holds the body budget and the process besides (README, Memory).
      const limit = String(get(container, 'resources', 'limits', 'memory'));
      expect(limit, file).toMatch(/^\d+Mi$/);
      const budget = Number(
        envOf(container).find((e) => e.name === 'BODY_BUFFER_BUDGET_BYTES')?.value ??
          SETTINGS.find((x) => x.name === 'BODY_BUFFER_BUDGET_BYTES')?.default,
      );
      expect(parseInt(limit, 10) * 1024 * 1024, file).toBeGreaterThanOrEqual(budget + 256 * 1024 * 1024);
      // SHUTDOWN_DELAY_MS + SHUTDOWN_GRACE_MS fit in the pod's grace period.
      const env = Object.fromEntries(envOf(container).map((e) => [e.name, Number(e.value)]));
      expect((env.SHUTDOWN_DELAY_MS ?? 0) + (env.SHUTDOWN_GRACE_MS ?? 0), file).toBeLessThan(
        Number(pod.terminationGracePeriodSeconds) * 1000,
      );
    }
  });

  it('lets keap-proxy pods out to Keap on 443, Redis and DNS only, and only them into Redis', () => {
    const policies = docs().filter(({ doc }) => doc.kind === 'NetworkPolicy');
    expect(policies.length).toBe(3);
    for (const { file, doc } of policies) {
      const egress = (get(doc, 'spec', 'egress') as Obj[] | undefined) ?? [];
      const ports = egress.flatMap((rule) => ((rule.ports as Obj[]) ?? []).map((p) => p.port)).sort();
      if (file.startsWith('base/')) expect(ports).toEqual([]);
      else expect(ports, file).toEqual([443, 53, 53, 6379].sort());
    }
  });
});
