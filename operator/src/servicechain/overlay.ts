import { isIPv4 } from "node:net";
import {
  checkBuiltinConfig,
  OVERLAY_SEGMENTS_ANNOTATION,
  OverlayTables,
  type OverlaySegment,
} from "../../../common/api/builtins/index.ts";
import {
  matchesLabelSelector,
  Reason,
  type LabelSelector,
  type ResolvedFunction,
} from "../../../common/api/index.ts";
import { AddressParseError, parseCidr } from "../../../common/net/ip.ts";
import type { KubeNode } from "../../../common/store.ts";

/**
 * The overlay's segment table from the cluster: every node a chain selects that carries the
 * annotation `sluice.dev/overlay-segments` ("10.1.0.0/24, fd00:1::/64") hosts those segments at
 * its InternalIP (the first IPv4 one in `status.addresses`). The operator writes the result into
 * the `segments` table of every `overlay` of the chain, after the entries the NetworkFunction
 * lists itself, so that the same table reaches every node and nobody lists node IPs by hand.
 */

/** A node's entry that cannot go into the table, for the chain's Ready condition. */
export interface OverlayProblem {
  reason: typeof Reason.InvalidSpec;
  message: string;
  /** The field at fault, on the Node or the chain. */
  path: string;
}

/** The underlay address of a node: its first IPv4 InternalIP, or undefined. */
export function nodeInternalIpv4(node: KubeNode): string | undefined {
  return node.status?.addresses?.find((a) => a.type === "InternalIP" && isIPv4(a.address))?.address;
}

/**
 * The segments `nodes` host, by their annotation (nodes without it host none), in node-name
 * order; a node whose annotation does not parse, or that has no IPv4 InternalIP, is a problem
 * naming the node and the field.
 */
export function clusterSegments(nodes: readonly KubeNode[]): {
  segments: OverlaySegment[];
  problems: OverlayProblem[];
} {
  const segments: OverlaySegment[] = [];
  const problems: OverlayProblem[] = [];
  const sorted = [...nodes].sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
  for (const node of sorted) {
    const value = node.metadata.annotations?.[OVERLAY_SEGMENTS_ANNOTATION];
    if (value === undefined) continue;
    const name = node.metadata.name;
    const field = `Node ${name}: metadata.annotations[${OVERLAY_SEGMENTS_ANNOTATION}]`;
    const prefixes = value
      .split(",")
      .map((p) => p.trim())
      .filter((p) => p !== "");
    let valid = true;
    for (const prefix of prefixes) {
      try {
        parseCidr(prefix);
      } catch (err) {
        if (!(err instanceof AddressParseError)) throw err;
        problems.push({ reason: Reason.InvalidSpec, message: `${field}: ${err.message}`, path: field });
        valid = false;
      }
    }
    const address = nodeInternalIpv4(node);
    if (address === undefined) {
      const path = `Node ${name}: status.addresses`;
      problems.push({
        reason: Reason.InvalidSpec,
        message: `${path}: no IPv4 InternalIP, which the overlay needs to reach the segments the node hosts`,
        path,
      });
      continue;
    }
    if (valid) for (const prefix of prefixes) segments.push({ prefix, node: address });
  }
  return { segments, problems };
}

/**
 * Adds the segments of the nodes `selector` picks to every `overlay` function of a plan (in
 * chain order, so an index is the function's position in `spec.functions`), in place, and checks
 * the whole table again: a segment claimed twice, by two nodes or by a node and the
 * NetworkFunction, is refused. Nodes being deleted host nothing.
 */
export function addClusterSegments(
  functions: ResolvedFunction[],
  nodes: readonly KubeNode[] | undefined,
  selector: LabelSelector | undefined,
): OverlayProblem[] {
  const overlays = functions
    .map((f, index) => ({ f, index }))
    .filter(({ f }) => "builtin" in f.source && f.source.builtin === "overlay");
  if (overlays.length === 0) return [];
  const selected = (nodes ?? []).filter(
    (n) =>
      n.metadata.deletionTimestamp === undefined && matchesLabelSelector(selector, n.metadata.labels ?? {}),
  );
  const { segments, problems } = clusterSegments(selected);
  for (const { f, index } of overlays) {
    const own = OverlayTables.safeParse(f.tables ?? {});
    // The function's own tables were checked when it was resolved.
    if (!own.success) continue;
    const tables = { ...f.tables, segments: [...own.data.segments, ...segments] };
    const checked = checkBuiltinConfig("overlay", { parameters: f.parameters, tables });
    if (!checked.ok) {
      problems.push({
        reason: Reason.InvalidSpec,
        message: `NetworkFunction ${f.networkFunction} with the segments of the chain's nodes: ${checked.error.message}`,
        path: `spec.functions[${index}].name`,
      });
      continue;
    }
    functions[index] = { ...f, tables };
  }
  return problems;
}

/** Whether any of `functions` is the built-in overlay (then planning needs the Nodes). */
export function usesOverlay(
  functions: Iterable<{ spec: { source: object } } | { invalid: string }>,
): boolean {
  for (const nf of functions) {
    if ("spec" in nf && "builtin" in nf.spec.source && nf.spec.source.builtin === "overlay") return true;
  }
  return false;
}
