import { lstat, readdir, readFile, realpath, stat } from "node:fs/promises";
import { isAbsolute, join, relative, sep } from "node:path";
import { LineCounter, parseAllDocuments, type Document } from "yaml";
import { BuiltinConfigError, checkBuiltinConfig } from "../../../common/api/builtins/index.ts";
import { Reason, parseSluiceObject, type SluiceObject } from "../../../common/api/index.ts";

/** Bounds on what one revision may hold, so a hostile repository cannot exhaust the operator. */
export interface ManifestLimits {
  /** Largest YAML file, in bytes. */
  maxFileBytes: number;
  /** Sum of all YAML files, in bytes. */
  maxTotalBytes: number;
  /** Number of YAML files. */
  maxFiles: number;
  /** Number of documents across all files. */
  maxDocuments: number;
  /**
   * yaml's `maxAliasCount`: how far aliases may multiply the data. Manifests rarely need
   * aliases at all; a low bound turns a "billion laughs" document into an error at once.
   */
  maxAliasCount: number;
}

/** Defaults: generous for hand-written manifests, small enough to keep a reconcile cheap. */
export const DEFAULT_MANIFEST_LIMITS: Readonly<ManifestLimits> = Object.freeze({
  maxFileBytes: 1 << 20,
  maxTotalBytes: 16 << 20,
  maxFiles: 1_000,
  maxDocuments: 5_000,
  maxAliasCount: 20,
});

/** One problem in a revision, precise enough to find and fix. */
export interface ManifestError {
  /** The file, relative to the loaded directory (with `displayPrefix` in front, if given). */
  file: string;
  /** 1-based position of the document in its file (`---`-separated); 0 for file-level problems. */
  documentIndex: number;
  /** 1-based line of the offending node (or of the document, when the node is missing). */
  line?: number;
  kind?: string;
  name?: string;
  namespace?: string;
  /** Field path such as `spec.functions[0].name`; empty for whole-document problems. */
  path: string;
  message: string;
  /**
   * Why, as a condition reason: `BuiltinNotFound` for a built-in name no built-in has,
   * `InvalidSpec` for anything else the revision cannot hold.
   */
  reason: typeof Reason.BuiltinNotFound | typeof Reason.InvalidSpec;
}

/** A {@link ManifestError} as the loader records it: without a reason, it is `InvalidSpec`. */
type ManifestProblem = Omit<ManifestError, "reason"> & Partial<Pick<ManifestError, "reason">>;

/** Outcome of {@link loadRevision}: every object, or every error (all-or-nothing). */
export type LoadRevisionResult =
  | { ok: true; objects: SluiceObject[]; files: string[] }
  | {
      ok: false;
      errors: ManifestError[];
      /** One line: the first error, plus how many more, e.g. for a condition message. */
      message: string;
    };

/** Options of {@link loadRevision}. */
export interface LoadRevisionOptions {
  limits?: Partial<ManifestLimits>;
  /** Prepended to file names in errors, e.g. the GitSource `path`, so they match the repository. */
  displayPrefix?: string;
  /** Namespace objects without `metadata.namespace` will get; used to detect duplicates. */
  defaultNamespace?: string;
  /**
   * Kinds a repository may define. Default: every sluice kind except NodeChain, which the
   * operator writes itself (one per node) and which a repository must not fight over.
   */
  allowedKinds?: readonly string[];
  /** `reject` (default) makes a non-sluice.dev object an error; `skip` ignores it. */
  foreignObjects?: "reject" | "skip";
  /**
   * Confines the revision to one namespace: an object whose `metadata.namespace` names another
   * namespace fails the whole revision (field `metadata.namespace`). A GitSource applies only into
   * its own namespace, so a team's repository cannot reach another team's objects or, through a
   * GitSource it plants there, another team's Secrets. Unset: any namespace is accepted.
   */
  confineToNamespace?: string;
}

const DEFAULT_KINDS = ["GitSource", "NetworkFunction", "ServiceChain"] as const;

/**
 * Well-known cluster-scoped kinds. Any non-sluice object is refused anyway; these get a message
 * that says why they can never come from a repository: they would reach beyond every namespace.
 */
const CLUSTER_SCOPED_KINDS = new Set([
  "Namespace",
  "Node",
  "PersistentVolume",
  "ClusterRole",
  "ClusterRoleBinding",
  "CustomResourceDefinition",
  "APIService",
  "StorageClass",
  "PriorityClass",
  "RuntimeClass",
  "IngressClass",
  "CSIDriver",
  "MutatingWebhookConfiguration",
  "ValidatingWebhookConfiguration",
  "ValidatingAdmissionPolicy",
  "ValidatingAdmissionPolicyBinding",
  "MutatingAdmissionPolicy",
  "MutatingAdmissionPolicyBinding",
]);
/** Errors kept per revision; past this, the first ones are enough to act on. */
const MAX_ERRORS = 100;

/** Formats one error as the single line users see in status and events. */
export function formatManifestError(e: ManifestError): string {
  const who = [e.kind, e.name].filter(Boolean).join(" ");
  const doc = e.documentIndex > 0 ? ` document ${e.documentIndex}${who ? ` (${who})` : ""}:` : "";
  return `${e.file}:${doc} ${e.path ? `${e.path}: ` : ""}${e.message}`;
}

/** `spec.functions[0]["a.b"]` → `["spec", "functions", 0, "a.b"]`. */
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

/** The line of the node at `path`, or of its nearest existing ancestor (for missing fields). */
function lineOf(doc: Document, lines: LineCounter, path: string): number | undefined {
  const segments = pathSegments(path);
  for (let n = segments.length; n >= 0; n--) {
    const node = n === 0 ? doc.contents : doc.getIn(segments.slice(0, n), true);
    const range = (node as { range?: [number, number, number] } | undefined)?.range;
    if (range) return lines.linePos(range[0]).line;
  }
  return undefined;
}

const byteOrder = (a: string, b: string) => Buffer.compare(Buffer.from(a), Buffer.from(b));
const isInside = (parent: string, child: string) => {
  const rel = relative(parent, child);
  return rel === "" || (rel !== ".." && !rel.startsWith(`..${sep}`) && !isAbsolute(rel));
};

/** Thrown inside the walk to stop at a limit; becomes a {@link ManifestError}. */
class StopLoading extends Error {
  constructor(readonly error: ManifestProblem) {
    super(error.message);
    this.name = "StopLoading";
  }
}

/**
 * Reads every `*.yaml`/`*.yml` file under `dir` (recursively, in byte order of their paths;
 * names starting with `.` are skipped, so `.github/` workflows and `.git/` stay out), parses
 * each multi-document stream, and validates every document with `parseSluiceObject`.
 *
 * All-or-nothing: one bad document fails the whole revision, so a half-valid commit is never
 * half-applied. Fails on YAML syntax errors (with lines), alias bombs, non-mapping documents,
 * objects of other API groups or disallowed kinds, schema violations (with field paths and the
 * line of the field), the same kind/namespace/name defined twice, symbolic links that leave
 * `dir` or point at directories, and any limit.
 */
export async function loadRevision(
  dir: string,
  options: LoadRevisionOptions = {},
): Promise<LoadRevisionResult> {
  const limits = { ...DEFAULT_MANIFEST_LIMITS, ...options.limits };
  const prefix = options.displayPrefix?.replace(/^\.?\/+|\/+$/g, "").replace(/^\.$/, "") ?? "";
  const shown = (rel: string) => (prefix ? `${prefix}/${rel}` : rel);
  const allowedKinds = new Set(options.allowedKinds ?? DEFAULT_KINDS);
  const errors: ManifestError[] = [];
  const objects: SluiceObject[] = [];
  const files: string[] = [];
  const seen = new Map<string, string>();
  let totalBytes = 0;
  let documents = 0;

  const fail = (error: ManifestProblem) => {
    if (errors.length < MAX_ERRORS) errors.push({ ...error, reason: error.reason ?? Reason.InvalidSpec });
  };

  let root: string;
  try {
    root = await realpath(dir);
    if (!(await stat(root)).isDirectory()) throw new Error("not a directory");
  } catch {
    fail({
      file: shown("."),
      documentIndex: 0,
      path: "",
      message: "directory does not exist in this revision",
    });
    return failed(errors);
  }

  // Collect the file list first: the order of documents must not depend on readdir order.
  const yamlFiles: string[] = [];
  const walk = async (relDir: string): Promise<void> => {
    const names = (await readdir(join(root, relDir))).filter((n) => !n.startsWith(".")).sort(byteOrder);
    for (const name of names) {
      const rel = relDir ? `${relDir}/${name}` : name;
      const abs = join(root, rel);
      let info = await lstat(abs);
      if (info.isSymbolicLink()) {
        const target = await realpath(abs).catch(() => undefined);
        if (!target || !isInside(root, target)) {
          fail({
            file: shown(rel),
            documentIndex: 0,
            path: "",
            message: "symbolic link points outside the source directory or nowhere",
          });
          continue;
        }
        info = await stat(target);
        if (info.isDirectory()) {
          fail({
            file: shown(rel),
            documentIndex: 0,
            path: "",
            message: "symbolic links to directories are not followed",
          });
          continue;
        }
      }
      if (info.isDirectory()) await walk(rel);
      else if (info.isFile() && /\.ya?ml$/i.test(name)) {
        if (yamlFiles.length >= limits.maxFiles) {
          throw new StopLoading({
            file: shown(rel),
            documentIndex: 0,
            path: "",
            message: `more than ${limits.maxFiles} YAML files`,
          });
        }
        yamlFiles.push(rel);
      }
    }
  };

  try {
    await walk("");
    for (const rel of yamlFiles) {
      const abs = join(root, rel);
      const size = (await stat(abs)).size;
      if (size > limits.maxFileBytes) {
        fail({
          file: shown(rel),
          documentIndex: 0,
          path: "",
          message: `file is ${size} bytes, over the ${limits.maxFileBytes}-byte limit`,
        });
        continue;
      }
      totalBytes += size;
      if (totalBytes > limits.maxTotalBytes) {
        throw new StopLoading({
          file: shown(rel),
          documentIndex: 0,
          path: "",
          message: `manifests exceed ${limits.maxTotalBytes} bytes in total`,
        });
      }
      files.push(shown(rel));
      const text = await readFile(abs, "utf8");
      loadFile(shown(rel), text);
    }
  } catch (err) {
    if (!(err instanceof StopLoading)) throw err;
    fail(err.error);
  }
  return errors.length > 0 ? failed(errors) : { ok: true, objects, files };

  function loadFile(file: string, text: string): void {
    const lines = new LineCounter();
    const docs = parseAllDocuments(text, { lineCounter: lines, prettyErrors: true, uniqueKeys: true });
    docs.forEach((doc, i) => {
      const documentIndex = i + 1;
      const startLine = doc.contents?.range ? lines.linePos(doc.contents.range[0]).line : undefined;
      if (doc.errors.length > 0) {
        for (const e of doc.errors) {
          fail({
            file,
            documentIndex,
            ...lineField(e.linePos?.[0]?.line),
            path: "",
            message: e.message.split("\n")[0]!.replace(/ at line \d+, column \d+:?$/, ""),
          });
        }
        return;
      }
      if (doc.contents === null) return; // an empty document, e.g. after a trailing `---`
      if (++documents > limits.maxDocuments)
        throw new StopLoading({
          file,
          documentIndex,
          path: "",
          message: `more than ${limits.maxDocuments} documents`,
        });
      let value: unknown;
      try {
        value = doc.toJS({ maxAliasCount: limits.maxAliasCount });
      } catch (err) {
        const message = /alias/i.test((err as Error).message)
          ? `YAML aliases expand too much (more than maxAliasCount ${limits.maxAliasCount}); write the values out`
          : (err as Error).message;
        fail({ file, documentIndex, ...lineField(startLine), path: "", message });
        return;
      }
      // An empty document (a trailing `---`, or comments only) holds nothing to apply.
      if (value === null || value === undefined) {
        documents--;
        return;
      }
      const meta = value !== null && typeof value === "object" ? (value as Record<string, unknown>) : {};
      const apiVersion = typeof meta.apiVersion === "string" ? meta.apiVersion : undefined;
      if (
        options.foreignObjects === "skip" &&
        apiVersion !== undefined &&
        !apiVersion.startsWith("sluice.dev/")
      )
        return;

      const kindName = typeof meta.kind === "string" ? meta.kind : undefined;
      if (kindName !== undefined && CLUSTER_SCOPED_KINDS.has(kindName)) {
        const md = meta.metadata;
        const objName =
          md !== null && typeof md === "object" && "name" in md && typeof md.name === "string"
            ? md.name
            : undefined;
        fail({
          file,
          documentIndex,
          ...lineField(lineOf(doc, lines, "kind")),
          ...who(kindName, objName),
          path: "kind",
          message: `${kindName} is cluster-scoped: objects from a repository are applied only into a namespace`,
        });
        return;
      }

      const parsed = parseSluiceObject(value);
      if (!parsed.ok) {
        const { kind, name, namespace, issues } = parsed.error;
        for (const issue of issues.length > 0 ? issues : [{ path: "", message: "invalid object" }]) {
          const line = issue.path ? lineOf(doc, lines, issue.path) : startLine;
          fail({
            file,
            documentIndex,
            ...lineField(line),
            ...who(kind, name, namespace),
            path: issue.path,
            message: issue.message,
          });
        }
        return;
      }
      const object = parsed.value;
      const { kind } = object;
      const { name, namespace } = object.metadata;
      if (!allowedKinds.has(kind)) {
        fail({
          file,
          documentIndex,
          ...lineField(lineOf(doc, lines, "kind")),
          ...who(kind, name, namespace),
          path: "kind",
          message: `${kind} objects cannot come from a repository (allowed: ${[...allowedKinds].join(", ")})`,
        });
        return;
      }
      const confined = options.confineToNamespace;
      if (confined !== undefined && namespace !== undefined && namespace !== confined) {
        fail({
          file,
          documentIndex,
          ...lineField(lineOf(doc, lines, "metadata.namespace")),
          ...who(kind, name, namespace),
          path: "metadata.namespace",
          message: `namespace ${namespace} is outside this GitSource's namespace ${confined}: objects are applied only into ${confined} (leave metadata.namespace out, or start the operator with --allow-cross-namespace)`,
        });
        return;
      }
      const key = `${kind}/${namespace ?? options.defaultNamespace ?? ""}/${name}`;
      const first = seen.get(key);
      if (first !== undefined) {
        fail({
          file,
          documentIndex,
          ...lineField(lineOf(doc, lines, "metadata.name")),
          ...who(kind, name, namespace),
          path: "metadata.name",
          message: `${kind} ${name} is defined twice (first in ${first})`,
        });
        return;
      }
      // Built-in parameters and tables are typed per built-in: checked here with the same
      // schemas the agent uses, so a bad value fails the revision before anything is applied.
      if (object.kind === "NetworkFunction" && "builtin" in object.spec.source) {
        const { parameters, tables } = object.spec;
        const checked = checkBuiltinConfig(object.spec.source.builtin, { parameters, tables });
        if (!checked.ok) {
          const { part, issues, reason } = checked.error;
          for (const issue of issues) {
            const path = BuiltinConfigError.specPath(part, issue);
            fail({
              file,
              documentIndex,
              ...lineField(lineOf(doc, lines, path)),
              ...who(kind, name, namespace),
              path,
              message:
                part === "name" ? issue.message : `${object.spec.source.builtin} ${part}: ${issue.message}`,
              reason,
            });
          }
          return;
        }
      }
      seen.set(key, `${file} document ${documentIndex}`);
      objects.push(object);
    });
  }
}

function lineField(line: number | undefined): { line?: number } {
  return line === undefined ? {} : { line };
}

function who(
  kind?: string,
  name?: string,
  namespace?: string,
): Pick<ManifestError, "kind" | "name" | "namespace"> {
  return {
    ...(kind !== undefined && { kind }),
    ...(name !== undefined && { name }),
    ...(namespace !== undefined && { namespace }),
  };
}

function failed(errors: ManifestError[]): LoadRevisionResult {
  const first = formatManifestError(errors[0]!);
  const more =
    errors.length > 1 ? ` (and ${errors.length - 1} more error${errors.length > 2 ? "s" : ""})` : "";
  return { ok: false, errors, message: `${first}${more}` };
}
