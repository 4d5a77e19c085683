import type { ChainPlan } from "../../../common/api/index.ts";

/**
 * The artifacts that live plans name. A NodeChain keeps the artifact reference it was written
 * with until its revision changes (see `stablePlan`), so it may name an artifact older than the
 * last few a GitSource published; a ServiceChain's last good plan, which nodes return to on a
 * rollback, may too. The artifact server keeps serving, and the artifact store keeps, every
 * artifact named here, so that an agent that restarts, or a node that joins, can still fetch it.
 */
export class ArtifactReferences {
  /** Artifact keys (`<namespace>/<name>/<hex>`) named by each object (`<kind>/<namespace>/<name>`). */
  private readonly byObject = new Map<string, Set<string>>();
  /** How many objects name each artifact key. */
  private readonly counts = new Map<string, number>();

  /** Records the artifacts `plans` name as those of `object`, replacing what it named before. */
  set(object: string, plans: readonly (ChainPlan | undefined)[]): void {
    const next = new Set<string>();
    for (const plan of plans) for (const key of artifactKeysOf(plan)) next.add(key);
    this.delete(object);
    if (next.size === 0) return;
    this.byObject.set(object, next);
    for (const key of next) this.counts.set(key, (this.counts.get(key) ?? 0) + 1);
  }

  /** Forgets what `object` named (it was deleted). */
  delete(object: string): void {
    const previous = this.byObject.get(object);
    if (!previous) return;
    this.byObject.delete(object);
    for (const key of previous) {
      const left = (this.counts.get(key) ?? 1) - 1;
      if (left > 0) this.counts.set(key, left);
      else this.counts.delete(key);
    }
  }

  /** Whether a live plan names artifact `digest` (`sha256:<hex>` or hex) of source `namespace/name`. */
  has(namespace: string, name: string, digest: string): boolean {
    const hex = /^(?:sha256:)?([0-9a-f]{64})$/.exec(digest)?.[1];
    return hex !== undefined && this.counts.has(`${namespace}/${name}/${hex}`);
  }
}

const ARTIFACT_URL_PATH = /\/artifacts\/([a-z0-9.-]{1,253})\/([a-z0-9.-]{1,253})\/([0-9a-f]{64})\.tar\.gz$/;

/** The source (namespace, name) and hex digest an artifact URL of the operator's server names. */
export function artifactOfUrl(url: string): { namespace: string; name: string; hex: string } | undefined {
  let path: string;
  try {
    path = new URL(url).pathname;
  } catch {
    return undefined;
  }
  const m = ARTIFACT_URL_PATH.exec(path);
  return m ? { namespace: m[1]!, name: m[2]!, hex: m[3]! } : undefined;
}

/** `<namespace>/<name>/<hex>` of each artifact a plan names (from its URL path). */
function artifactKeysOf(plan: ChainPlan | undefined): string[] {
  const keys: string[] = [];
  for (const fn of plan?.functions ?? []) {
    if (!("artifact" in fn.source)) continue;
    const a = artifactOfUrl(fn.source.artifact.url);
    if (a) keys.push(`${a.namespace}/${a.name}/${a.hex}`);
  }
  return keys;
}
