// What the process edge learns about the process itself, once, and hands to loadConfig as
// ProcessFacts: keap-proxy's version and whether it runs in a container. src/cli/cli.ts calls
// these with the real file system and process.env; nothing else reads either.
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The version in keap-proxy's package.json, found by walking up from `from` (a module's
 * import.meta.url or a directory): dist/src/cli/ in a build and in the image (/app/package.json),
 * src/cli/ under tsx. 'unknown' when no keap-proxy package.json is found.
 */
export function readPackageVersion(from: string): string {
  let dir = from.startsWith('file:') ? path.dirname(fileURLToPath(from)) : path.resolve(from);
  for (;;) {
    const file = path.join(dir, 'package.json');
    if (existsSync(file)) {
      try {
        const pkg = JSON.parse(readFileSync(file, 'utf8')) as { name?: unknown; version?: unknown };
        if (pkg.name === 'keap-proxy' && typeof pkg.version === 'string' && pkg.version !== '') return pkg.version;
      } catch {
        // Not ours, or not JSON: keep looking above it.
      }
    }
    const parent = path.dirname(dir);
    if (parent === dir) return 'unknown';
    dir = parent;
  }
}

/** How a container shows itself to a process inside it. */
export interface ContainerSigns {
  env: NodeJS.ProcessEnv;
  /** Whether a path exists (for /.dockerenv, /run/.containerenv). */
  exists: (file: string) => boolean;
  /** A file's text, or undefined when it cannot be read (for /proc/1/cgroup). */
  read: (file: string) => string | undefined;
}

/**
 * Whether this process runs in a container: Kubernetes sets KUBERNETES_SERVICE_HOST in every
 * pod, Docker writes /.dockerenv, Podman /run/.containerenv, and cgroup v1 names docker,
 * containerd, kubepods or lxc in /proc/1/cgroup. A guess, used only for a start-up hint.
 */
export function detectContainer(signs: ContainerSigns): boolean {
  if ((signs.env.KUBERNETES_SERVICE_HOST ?? '') !== '') return true;
  if (signs.exists('/.dockerenv') || signs.exists('/run/.containerenv')) return true;
  const cgroup = signs.read('/proc/1/cgroup') ?? '';
  return /docker|containerd|kubepods|libpod|lxc/.test(cgroup);
}

/** The real signs: the process's environment and file system. */
export function processContainerSigns(env: NodeJS.ProcessEnv): ContainerSigns {
  return {
    env,
    exists: existsSync,
    read: (file) => {
      try {
        return readFileSync(file, 'utf8');
      } catch {
        return undefined;
      }
    },
  };
}
