import { z } from "zod";

/**
 * Building blocks shared by every sluice kind: the API group and version, Kubernetes name and
 * label rules, object metadata, durations, repository paths, label selectors, and the registry
 * that carries Kubernetes-only schema details (CEL rules, list types) to the CRD generator.
 */

/** API group of every sluice kind. */
export const GROUP = "sluice.dev";
/** The one served and stored version. */
export const VERSION = "v1alpha1";
/** `apiVersion` of every sluice object. */
export const API_VERSION = `${GROUP}/${VERSION}`;

/** Annotation that asks for an immediate reconcile; its value (any string, usually a timestamp) is echoed in `status.lastHandledReconcileAt` once handled. */
export const RECONCILE_AT_ANNOTATION = "sluice.dev/reconcile-at";
/** Annotation that promotes a paused canary: set it on a ServiceChain to the `status.revision` to roll out to the remaining nodes. */
export const PROMOTE_ANNOTATION = "sluice.dev/promote";
/** Label the operator puts on each NodeChain: the name of its ServiceChain. */
export const CHAIN_LABEL = "sluice.dev/chain";
/** Label the operator puts on each NodeChain: the name of its node. */
export const NODE_LABEL = "sluice.dev/node";

/** A CEL rule for `x-kubernetes-validations`; `fieldPath` points the apiserver's error at a child field. */
export interface CelRule {
  rule: string;
  message: string;
  fieldPath?: string;
}

/**
 * Schema details that only Kubernetes understands. zod cannot express them, so they ride along
 * in this registry and the CRD generator (`crd.ts`) copies them into the OpenAPI schema. The
 * matching zod checks sit next to each registration, so Git and the apiserver agree.
 */
export interface KubeSchemaDetails {
  /** CEL rules (`x-kubernetes-validations`). */
  validations?: CelRule[];
  /** `x-kubernetes-list-type`; `set` makes the apiserver reject duplicates. */
  listType?: "atomic" | "set" | "map";
  /** `x-kubernetes-list-map-keys` for `listType: map`. */
  listMapKeys?: string[];
  /** The apiserver keeps this value as is; its shape is checked elsewhere (zod, or the NF's own schema). */
  preserveUnknownFields?: boolean;
  /** `maxProperties` for a record (zod has no size check on records, see {@link boundedRecord}). */
  maxProperties?: number;
  /** What the keys of a record must be, for the message of the CEL rule generated from the key schema. */
  keyDescription?: string;
}

/** Registry of {@link KubeSchemaDetails}; register a schema last in its chain (`.register` returns the same instance). */
export const kube = z.registry<KubeSchemaDetails>();

const dns1123LabelPattern = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const dns1123SubdomainPattern = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** A DNS-1123 label: lower-case alphanumerics and '-', at most 63 characters (usable as a label value). */
export const Dns1123Label = z
  .string()
  .min(1, "must not be empty")
  .max(63, "must be at most 63 characters")
  .regex(
    dns1123LabelPattern,
    "must be a DNS-1123 label: lower-case letters, digits and '-', starting and ending with a letter or digit",
  );

/** A DNS-1123 subdomain: dot-separated labels, at most 253 characters (what Kubernetes allows for most object names). */
export const Dns1123Subdomain = z
  .string()
  .min(1, "must not be empty")
  .max(253, "must be at most 253 characters")
  .regex(
    dns1123SubdomainPattern,
    "must be a DNS-1123 subdomain: lower-case letters, digits, '-' and '.', starting and ending with a letter or digit",
  );

/** Kubernetes label value: empty, or at most 63 of [A-Za-z0-9-_.] starting and ending alphanumeric. */
export const LabelValue = z
  .string()
  .max(63, "must be at most 63 characters")
  .regex(
    /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/,
    "must be a label value: letters, digits, '-', '_' and '.', starting and ending with a letter or digit",
  );

/** RE2- and ECMAScript-compatible pattern of a label key (`prefix/name` or `name`); lengths are checked separately. */
export const LABEL_KEY_PATTERN =
  "^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$";

/** Kubernetes label key: optional DNS subdomain prefix (at most 253) and '/', then a name of at most 63. */
export const LabelKey = z
  .string()
  .max(317, "must be at most 317 characters")
  .regex(new RegExp(LABEL_KEY_PATTERN), "must be a label key like 'app' or 'example.com/tier'")
  .refine((key) => {
    const slash = key.lastIndexOf("/");
    return key.length - slash - 1 <= 63 && slash <= 253;
  }, "must have a name part of at most 63 characters and a prefix of at most 253");

/** A C identifier: parameter and table names become C symbols in the network function. */
export const CIdentifier = z
  .string()
  .max(63, "must be at most 63 characters")
  .regex(
    /^[A-Za-z_][A-Za-z0-9_]*$/,
    "must be a C identifier: letters, digits and '_', not starting with a digit",
  );

/**
 * A record with a cap on its number of keys. The cap bounds object size and keeps the apiserver's
 * CEL cost estimate finite for rules that walk the keys.
 */
export function boundedRecord<K extends z.ZodType<string>, V extends z.ZodType>(
  key: K,
  value: V,
  maxProperties: number,
  keyDescription?: string,
) {
  return z
    .record(key, value)
    .refine((r) => Object.keys(r).length <= maxProperties, `must have at most ${maxProperties} entries`)
    .register(kube, { maxProperties, ...(keyDescription !== undefined && { keyDescription }) });
}

/** A reference from an object to the object that owns it (deleted with it). */
export const OwnerReference = z.looseObject({
  apiVersion: z.string(),
  kind: z.string(),
  name: z.string(),
  uid: z.string(),
  controller: z.boolean().optional(),
  blockOwnerDeletion: z.boolean().optional(),
});
export type OwnerReference = z.infer<typeof OwnerReference>;

/**
 * Object metadata as far as sluice reads it. Loose: the apiserver adds fields (managedFields,
 * ownerReferences, ...) that pass through untouched. In the CRD, metadata is left to Kubernetes.
 */
export function objectMeta<N extends z.ZodType<string>>(name: N) {
  return z.looseObject({
    name,
    namespace: Dns1123Label.optional(),
    labels: z.record(LabelKey, LabelValue).optional(),
    annotations: z.record(LabelKey, z.string()).optional(),
    generation: z.number().int().optional(),
    uid: z.string().optional(),
    resourceVersion: z.string().optional(),
    creationTimestamp: z.string().optional(),
    deletionTimestamp: z.string().optional(),
    ownerReferences: z.array(OwnerReference).optional(),
  });
}

/** Metadata whose name is any DNS-1123 subdomain (the Kubernetes default). */
export const ObjectMeta = objectMeta(Dns1123Subdomain);
export type ObjectMeta = z.infer<typeof ObjectMeta>;

/** A root-level CEL rule for kinds whose names must also be valid label values (the operator labels objects with them). */
export const nameIsLabelRule: CelRule = {
  rule: "size(self.metadata.name) <= 63 && !self.metadata.name.contains('.')",
  message:
    "metadata.name must be a DNS-1123 label (at most 63 characters, no '.') because it is used as a label value",
};

const durationPattern = /^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$/;
const durationUnitMs: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 };

/** Milliseconds in a Go-style duration such as `1m`, `30s`, `1h30m` or `500ms`; NaN if it is not one. */
export function parseDuration(text: string): number {
  if (!durationPattern.test(text)) return Number.NaN;
  let total = 0;
  for (const m of text.matchAll(/([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)/g)) {
    total += Number(m[1]) * (durationUnitMs[m[2] as string] as number);
  }
  return total;
}

/** A positive Go-style duration (`1m`, `30s`, `1h30m`, `500ms`), as Flux writes intervals and timeouts. */
export const Duration = z
  .string()
  .max(32, "must be at most 32 characters")
  .regex(durationPattern, "must be a duration like 30s, 1m, 1h30m or 500ms")
  .refine((d) => parseDuration(d) > 0, "must be longer than 0s")
  .register(kube, {
    validations: [{ rule: "duration(self) > duration('0s')", message: "must be longer than 0s" }],
  });

// One path segment that is not "..": RE2 (the apiserver) has no lookahead, so spell it out.
const segment = "([^/.][^/]*|\\.[^/.][^/]*|\\.\\.[^/]+|\\.)";
const relativePathPattern = new RegExp(`^${segment}(/${segment})*/?$`);

/** A path inside a repository or artifact: relative, no empty segment, no `..`. */
export const RelativePath = z
  .string()
  .max(1024, "must be at most 1024 characters")
  .regex(
    relativePathPattern,
    "must be a relative path inside the repository, without '..' or empty segments",
  );

/** Where a chain is attached: XDP (driver or generic), or the tc ingress / egress hook (tcx). */
export const Hook = z.enum(["xdp", "tc-ingress", "tc-egress"]);
export type Hook = z.infer<typeof Hook>;

/**
 * A list of strings whose duplicates are an error (a `set` list for the apiserver).
 * `what` names the items in the error message.
 */
export function stringSet<T extends z.ZodType<string>>(item: T, what: string) {
  return z
    .array(item)
    .superRefine((list, ctx) => {
      const seen = new Set<string>();
      list.forEach((value, i) => {
        if (seen.has(value))
          ctx.addIssue({ code: "custom", path: [i], message: `duplicate ${what} "${value}"` });
        seen.add(value);
      });
    })
    .register(kube, { listType: "set" });
}

/** One requirement of a label selector, as in Kubernetes. */
export const LabelSelectorRequirement = z
  .strictObject({
    key: LabelKey,
    operator: z.enum(["In", "NotIn", "Exists", "DoesNotExist"]),
    values: z.array(LabelValue).max(64).optional(),
  })
  .superRefine((req, ctx) => {
    const hasValues = (req.values?.length ?? 0) > 0;
    if ((req.operator === "In" || req.operator === "NotIn") && !hasValues) {
      ctx.addIssue({
        code: "custom",
        path: ["values"],
        message: `operator ${req.operator} needs at least one value`,
      });
    }
    if ((req.operator === "Exists" || req.operator === "DoesNotExist") && hasValues) {
      ctx.addIssue({ code: "custom", path: ["values"], message: `operator ${req.operator} takes no values` });
    }
  })
  .register(kube, {
    validations: [
      {
        rule: "self.operator in ['In', 'NotIn'] ? has(self.values) && size(self.values) > 0 : !has(self.values) || size(self.values) == 0",
        message: "In and NotIn need at least one value; Exists and DoesNotExist take none",
      },
    ],
  });
export type LabelSelectorRequirement = z.infer<typeof LabelSelectorRequirement>;

/** A Kubernetes label selector; requirements are ANDed, and an empty selector matches every node. */
export const LabelSelector = z.strictObject({
  matchLabels: boundedRecord(LabelKey, LabelValue, 64, "label keys like 'app' or 'example.com/tier'")
    .optional()
    .describe("Labels a node must carry, with these values."),
  matchExpressions: z
    .array(LabelSelectorRequirement)
    .max(32)
    .optional()
    .describe("Set-based requirements on node labels."),
});
export type LabelSelector = z.infer<typeof LabelSelector>;

/** Whether `labels` satisfy `selector` (Kubernetes semantics). Used where there is no apiserver to ask. */
export function matchesLabelSelector(
  selector: LabelSelector | undefined,
  labels: Record<string, string>,
): boolean {
  if (!selector) return true;
  for (const [key, value] of Object.entries(selector.matchLabels ?? {})) {
    if (labels[key] !== value) return false;
  }
  for (const req of selector.matchExpressions ?? []) {
    const has = Object.hasOwn(labels, req.key);
    const value = labels[req.key];
    const inValues = has && (req.values ?? []).includes(value as string);
    switch (req.operator) {
      case "In":
        if (!inValues) return false;
        break;
      case "NotIn":
        if (inValues) return false;
        break;
      case "Exists":
        if (!has) return false;
        break;
      case "DoesNotExist":
        if (has) return false;
        break;
    }
  }
  return true;
}

/** The selector in the apiserver's `labelSelector=` query syntax (`a=b,c in (d,e),!f`); empty for "everything". */
export function labelSelectorToString(selector: LabelSelector | undefined): string {
  if (!selector) return "";
  const parts = Object.entries(selector.matchLabels ?? {})
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`);
  for (const req of selector.matchExpressions ?? []) {
    const values = [...(req.values ?? [])].sort().join(",");
    if (req.operator === "In") parts.push(`${req.key} in (${values})`);
    else if (req.operator === "NotIn") parts.push(`${req.key} notin (${values})`);
    else if (req.operator === "Exists") parts.push(req.key);
    else parts.push(`!${req.key}`);
  }
  return parts.join(",");
}

/** A reference to a Secret in the same namespace. */
export const LocalObjectReference = z.strictObject({
  name: Dns1123Subdomain.describe("Name of the object in the same namespace."),
});
export type LocalObjectReference = z.infer<typeof LocalObjectReference>;

/** An RFC 3339 timestamp as the apiserver writes it (`2025-01-02T03:04:05Z`). */
export const Timestamp = z.iso.datetime({
  offset: true,
  message: "must be an RFC 3339 time like 2025-01-02T03:04:05Z",
});

/** A sha256 digest as `sha256:<64 hex>`. */
export const Sha256Digest = z
  .string()
  .regex(/^sha256:[0-9a-f]{64}$/, "must be a digest like sha256:<64 lower-case hex digits>");

/** `metadata.generation` the status was computed for; -1 until the controller has seen the object (kstatus then reads it as in progress). */
export const ObservedGeneration = z
  .number()
  .int()
  .min(-1)
  .default(-1)
  .describe("metadata.generation this status describes; -1 until the controller has seen the object.");
