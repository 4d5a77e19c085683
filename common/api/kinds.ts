import type { z } from "zod";
import { GitSource, GitSourceSpec, GitSourceStatus } from "./gitsource.ts";
import { NetworkFunction, NetworkFunctionSpec, NetworkFunctionStatus } from "./networkfunction.ts";
import { NodeChain, NodeChainSpec, NodeChainStatus } from "./nodechain.ts";
import { ServiceChain, ServiceChainSpec, ServiceChainStatus } from "./servicechain.ts";

/** An `additionalPrinterColumns` entry: a column of `kubectl get`. */
export interface PrinterColumn {
  name: string;
  type: "string" | "integer" | "number" | "boolean" | "date";
  jsonPath: string;
  description?: string;
  /** 0 shows in `kubectl get`; 1 only in `-o wide`. */
  priority?: number;
}

/** Everything the operator, the agent and the CRD generator need to know about one kind. */
export interface KindInfo {
  kind: string;
  listKind: string;
  plural: string;
  singular: string;
  shortNames: readonly string[];
  categories: readonly string[];
  namespaced: boolean;
  /** Whole object: apiVersion, kind, metadata, spec, status. */
  schema: z.ZodType;
  spec: z.ZodType;
  status: z.ZodType;
  printerColumns: readonly PrinterColumn[];
  /** Fields usable in `--field-selector` (CRD `selectableFields`). */
  selectableFields: readonly string[];
}

const ready: PrinterColumn = {
  name: "Ready",
  type: "string",
  jsonPath: '.status.conditions[?(@.type=="Ready")].status',
  description: "Status of the Ready condition.",
};
const status: PrinterColumn = {
  name: "Status",
  type: "string",
  jsonPath: '.status.conditions[?(@.type=="Ready")].message',
  description: "Message of the Ready condition.",
  priority: 1,
};
const age: PrinterColumn = { name: "Age", type: "date", jsonPath: ".metadata.creationTimestamp" };

/** The sluice kinds by kind name. */
export const KINDS = {
  GitSource: {
    kind: "GitSource",
    listKind: "GitSourceList",
    plural: "gitsources",
    singular: "gitsource",
    shortNames: ["gs"],
    categories: ["sluice"],
    namespaced: true,
    schema: GitSource,
    spec: GitSourceSpec,
    status: GitSourceStatus,
    printerColumns: [
      ready,
      {
        name: "Revision",
        type: "string",
        jsonPath: ".status.artifact.revision",
        description: "Revision of the last artifact.",
      },
      { name: "URL", type: "string", jsonPath: ".spec.url", priority: 1 },
      status,
      age,
    ],
    selectableFields: [],
  },
  NetworkFunction: {
    kind: "NetworkFunction",
    listKind: "NetworkFunctionList",
    plural: "networkfunctions",
    singular: "networkfunction",
    shortNames: ["nf"],
    categories: ["sluice"],
    namespaced: true,
    schema: NetworkFunction,
    spec: NetworkFunctionSpec,
    status: NetworkFunctionStatus,
    printerColumns: [
      {
        name: "Hooks",
        type: "string",
        jsonPath: ".spec.hooks",
        description: "Hooks the source has programs for.",
      },
      {
        name: "Builtin",
        type: "string",
        jsonPath: ".spec.source.builtin",
        description: "Built-in source, if any.",
      },
      {
        name: "Path",
        type: "string",
        jsonPath: ".spec.source.path",
        description: "Source file in the GitSource artifact, if any.",
      },
      age,
    ],
    selectableFields: [],
  },
  ServiceChain: {
    kind: "ServiceChain",
    listKind: "ServiceChainList",
    plural: "servicechains",
    singular: "servicechain",
    // Not "sc": kubectl resolves that to the built-in StorageClass, hiding ServiceChains.
    shortNames: ["sch"],
    categories: ["sluice"],
    namespaced: true,
    schema: ServiceChain,
    spec: ServiceChainSpec,
    status: ServiceChainStatus,
    printerColumns: [
      ready,
      {
        name: "Revision",
        type: "string",
        jsonPath: ".status.revision",
        description: "Revision of the current plan.",
      },
      {
        name: "Nodes",
        type: "string",
        jsonPath: ".status.nodes.summary",
        description: "Ready nodes on the current revision / selected nodes.",
      },
      {
        name: "Up-To-Date",
        type: "integer",
        jsonPath: ".status.nodes.updated",
        description: "Nodes whose plan is the current revision.",
      },
      {
        name: "Failed",
        type: "integer",
        jsonPath: ".status.nodes.failed",
        description: "Nodes that failed the current revision (the first few are in status.failedNodes).",
      },
      { name: "Hook", type: "string", jsonPath: ".spec.attachment.hook", priority: 1 },
      status,
      age,
    ],
    selectableFields: [],
  },
  NodeChain: {
    kind: "NodeChain",
    listKind: "NodeChainList",
    plural: "nodechains",
    singular: "nodechain",
    shortNames: ["nc"],
    categories: ["sluice"],
    namespaced: true,
    schema: NodeChain,
    spec: NodeChainSpec,
    status: NodeChainStatus,
    printerColumns: [
      { name: "Node", type: "string", jsonPath: ".spec.nodeName" },
      { name: "Chain", type: "string", jsonPath: ".spec.chain" },
      { name: "Phase", type: "string", jsonPath: ".status.phase" },
      {
        name: "Revision",
        type: "string",
        jsonPath: ".status.revision",
        description: "Revision live on the node.",
      },
      {
        name: "Wanted",
        type: "string",
        jsonPath: ".spec.revision",
        description: "Revision of the plan.",
        priority: 1,
      },
      age,
    ],
    selectableFields: [".spec.nodeName", ".spec.chain"],
  },
} as const satisfies Record<string, KindInfo>;

/** Name of a sluice kind. */
export type SluiceKind = keyof typeof KINDS;

/** Names of the sluice kinds, in dependency order (sources before what uses them). */
export const KIND_NAMES = Object.keys(KINDS) as SluiceKind[];

/** Any sluice object, discriminated by `kind`. */
export type SluiceObject = GitSource | NetworkFunction | ServiceChain | NodeChain;
