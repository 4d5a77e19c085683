import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { isMap, isScalar, LineCounter, parseAllDocuments, type Document } from "yaml";

/**
 * Where each object of a directory of manifests is written, so that a problem found after
 * parsing (a plan, a compile, a verifier rejection, a failed vector) can still be reported as
 * `file:line` of the field that caused it, like the manifest loader does for schema errors.
 */

/** A position in a manifest file. */
export interface ManifestPosition {
  /** File relative to the checked directory. */
  file: string;
  /** 1-based line. */
  line: number;
}

interface IndexedDocument {
  file: string;
  doc: Document;
  lines: LineCounter;
}

/** Objects of a directory by `kind/namespace/name`, each with its parsed YAML document. */
export class ManifestIndex {
  readonly #docs = new Map<string, IndexedDocument>();

  private constructor() {}

  /**
   * Indexes every document of `files` (relative to `dir`, as the manifest loader lists them).
   * Call it after the loader accepted the directory: documents are not validated again here.
   */
  static async build(
    dir: string,
    files: readonly string[],
    defaultNamespace: string,
  ): Promise<ManifestIndex> {
    const index = new ManifestIndex();
    for (const file of files) {
      const text = await readFile(join(dir, file), "utf8");
      const lines = new LineCounter();
      for (const doc of parseAllDocuments(text, { lineCounter: lines })) {
        if (!isMap(doc.contents)) continue;
        const kind = doc.get("kind");
        const name = doc.getIn(["metadata", "name"]);
        const namespace = doc.getIn(["metadata", "namespace"]) ?? defaultNamespace;
        if (typeof kind !== "string" || typeof name !== "string") continue;
        index.#docs.set(key(kind, String(namespace), name), { file, doc, lines });
      }
    }
    return index;
  }

  /**
   * The position of `path` (e.g. `spec.tests[2].expect.verdict`) in the object's document, or of
   * its nearest ancestor that is written out; undefined for an object the index does not hold.
   */
  locate(kind: string, namespace: string, name: string, path = ""): ManifestPosition | undefined {
    const entry = this.#docs.get(key(kind, namespace, name));
    if (!entry) return undefined;
    const segments = pathSegments(path);
    for (let n = segments.length; n >= 0; n--) {
      const node = n === 0 ? entry.doc.contents : entry.doc.getIn(segments.slice(0, n), true);
      const range = (node as { range?: [number, number, number] } | null | undefined)?.range;
      if (range) return { file: entry.file, line: entry.lines.linePos(range[0]).line };
    }
    return undefined;
  }

  /**
   * The manifest line of line `cLine` of an NF's inline C source, so that a compiler error in
   * inline C points into the YAML file that holds it.
   */
  inlineSourceLine(namespace: string, name: string, cLine: number): ManifestPosition | undefined {
    const entry = this.#docs.get(key("NetworkFunction", namespace, name));
    const node = entry?.doc.getIn(["spec", "source", "inline"], true);
    if (!entry || !isScalar(node) || !node.range) return undefined;
    // A block scalar (`inline: |`) starts on the line after its indicator.
    const block = node.type === "BLOCK_LITERAL" || node.type === "BLOCK_FOLDED";
    const first = entry.lines.linePos(node.range[0]).line + (block ? 1 : 0);
    return { file: entry.file, line: first + cLine - 1 };
  }
}

function key(kind: string, namespace: string, name: string): string {
  return `${kind}/${namespace}/${name}`;
}

/** `spec.functions[0]["a.b"]` → `["spec", "functions", 0, "a.b"]` (the loader's path syntax). */
function pathSegments(path: string): (string | number)[] {
  const out: (string | number)[] = [];
  const re = /([A-Za-z_$][\w$-]*)|\[(\d+)\]|\[("(?:[^"\\]|\\.)*")\]/g;
  for (const m of path.matchAll(re)) {
    if (m[1] !== undefined) out.push(m[1]);
    else if (m[2] !== undefined) out.push(Number(m[2]));
    else if (m[3] !== undefined) out.push(JSON.parse(m[3]) as string);
  }
  return out;
}
