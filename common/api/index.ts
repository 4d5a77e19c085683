/**
 * The sluice API (group `sluice.dev`, version `v1alpha1`): zod schemas are the single source of
 * truth; TypeScript types, the CRDs and every parse of an object from Git or the apiserver come
 * from them.
 */
import type { z } from "zod";
import { API_VERSION, GROUP } from "./meta.ts";
import { KIND_NAMES, KINDS, type SluiceKind, type SluiceObject } from "./kinds.ts";

export * from "./meta.ts";
export * from "./conditions.ts";
export * from "./testvector.ts";
export * from "./gitsource.ts";
export * from "./networkfunction.ts";
export * from "./servicechain.ts";
export * from "./nodechain.ts";
export * from "./kinds.ts";
// The CRD generator (crd.ts, with the yaml package) is imported from its own module by the
// scripts that render CRDs: through this index it was loaded by every sluice process.

/**
 * One problem with one field, as data: where it is (file, document, field path) and what is
 * wrong. Parse errors, structured errors (common/errors.ts) and the CLI all use this one shape.
 */
export interface SluiceIssue {
  /** File the problem is in, relative to the source root (manifests from Git). */
  file?: string;
  /** 1-based index of the YAML document inside `file`. */
  document?: number;
  /** Field path as a user writes it: `spec.functions[2].name`; "" for the whole object. */
  path: string;
  message: string;
}

/** Why an object is not a valid sluice object; `kind` and `name` are filled in when they could be read. */
export interface SluiceParseError {
  kind?: string;
  name?: string;
  namespace?: string;
  issues: SluiceIssue[];
}

/** Result of {@link parseSluiceObject}. */
export type ParseResult = { ok: true; value: SluiceObject } | { ok: false; error: SluiceParseError };

/** Formats a zod issue path the way a user writes it: `spec.functions[2].name`, `metadata.labels["app.kubernetes.io/name"]`. */
export function formatIssuePath(path: readonly PropertyKey[]): string {
  let out = "";
  for (const key of path) {
    if (typeof key === "number") out += `[${key}]`;
    else if (typeof key === "string" && /^[A-Za-z_$][A-Za-z0-9_$]*$/.test(key))
      out += out === "" ? key : `.${key}`;
    else out += `[${JSON.stringify(String(key))}]`;
  }
  return out;
}

function valueAt(root: unknown, path: readonly PropertyKey[]): unknown {
  let v: unknown = root;
  for (const key of path) {
    if (v === null || typeof v !== "object") return undefined;
    v = (v as Record<PropertyKey, unknown>)[key];
  }
  return v;
}

/**
 * Whether a union branch failed because the input has another branch's shape: a field the branch
 * does not know, or not an object at all. A missing field is not such a failure: `{path}` without
 * `sourceRef` is the path branch with something missing.
 */
function isShapeMismatch(issue: z.core.$ZodIssue): boolean {
  return issue.path.length === 0 && (issue.code === "unrecognized_keys" || issue.code === "invalid_type");
}

function issueMessage(issue: z.core.$ZodIssue, input: unknown, path: readonly PropertyKey[]): string {
  switch (issue.code) {
    case "unrecognized_keys":
      return `unknown field${issue.keys.length > 1 ? "s" : ""} ${issue.keys.map((k) => `"${k}"`).join(", ")}`;
    case "invalid_type":
      return valueAt(input, path) === undefined ? "is required" : issue.message;
    case "invalid_key":
      return `key "${String(path[path.length - 1])}" ${issue.issues.map((i) => i.message).join("; ")}`;
    default:
      return issue.message;
  }
}

/**
 * zod issues as user-facing issues. A failed union whose input has the shape of exactly one
 * branch reports that branch's own issues (`spec.ref.commit: must be a full commit SHA-1`)
 * instead of the union's summary.
 */
export function toSluiceIssues(
  issues: readonly z.core.$ZodIssue[],
  input: unknown,
  prefix: readonly PropertyKey[] = [],
): SluiceIssue[] {
  const out: SluiceIssue[] = [];
  for (const issue of issues) {
    const path = [...prefix, ...issue.path];
    if (issue.code === "invalid_union" && issue.errors.length > 0) {
      const fitting = issue.errors.filter((branch) => !branch.some(isShapeMismatch));
      if (fitting.length === 1) {
        out.push(...toSluiceIssues(fitting[0] as z.core.$ZodIssue[], input, path));
        continue;
      }
    }
    out.push({ path: formatIssuePath(path), message: issueMessage(issue, input, path) });
  }
  return out;
}

function stringField(obj: Record<string, unknown>, ...path: string[]): string | undefined {
  const v = valueAt(obj, path);
  return typeof v === "string" ? v : undefined;
}

/**
 * Parses anything (a document from Git, an object from the apiserver) as a sluice object,
 * applying defaults. Objects of other API groups or unknown kinds are errors that say so.
 */
export function parseSluiceObject(obj: unknown): ParseResult {
  if (obj === null || typeof obj !== "object" || Array.isArray(obj)) {
    return {
      ok: false,
      error: {
        issues: [
          {
            path: "",
            message: "expected a Kubernetes object (a mapping with apiVersion, kind, metadata and spec)",
          },
        ],
      },
    };
  }
  const record = obj as Record<string, unknown>;
  const kind = stringField(record, "kind");
  const name = stringField(record, "metadata", "name");
  const namespace = stringField(record, "metadata", "namespace");
  const fail = (issues: SluiceIssue[]): ParseResult => ({
    ok: false,
    error: {
      ...(kind !== undefined && { kind }),
      ...(name !== undefined && { name }),
      ...(namespace !== undefined && { namespace }),
      issues,
    },
  });

  const apiVersion = record.apiVersion;
  if (typeof apiVersion !== "string")
    return fail([{ path: "apiVersion", message: `is required and must be ${API_VERSION}` }]);
  if (!apiVersion.startsWith(`${GROUP}/`)) {
    return fail([
      {
        path: "apiVersion",
        message: `${apiVersion} is not a sluice API version (${kind ?? "object"} is not a sluice kind); expected ${API_VERSION}`,
      },
    ]);
  }
  if (apiVersion !== API_VERSION) {
    return fail([
      { path: "apiVersion", message: `version ${apiVersion} is not served; expected ${API_VERSION}` },
    ]);
  }
  if (kind === undefined || !Object.hasOwn(KINDS, kind)) {
    return fail([
      {
        path: "kind",
        message: `${kind === undefined ? "is required" : `${kind} is not a sluice kind`}; expected one of ${KIND_NAMES.join(", ")}`,
      },
    ]);
  }
  const result = KINDS[kind as SluiceKind].schema.safeParse(obj);
  if (result.success) return { ok: true, value: result.data as SluiceObject };
  return fail(toSluiceIssues(result.error.issues, obj));
}

/** One line per issue: `ServiceChain default/web: spec.functions[2].name: must be ...`. */
export function formatParseError(error: SluiceParseError): string {
  const who = [error.kind ?? "object", [error.namespace, error.name].filter(Boolean).join("/")]
    .filter(Boolean)
    .join(" ");
  return error.issues.map((i) => `${who}: ${i.path === "" ? "" : `${i.path}: `}${i.message}`).join("\n");
}
