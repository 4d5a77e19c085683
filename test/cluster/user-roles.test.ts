/**
 * The ClusterRoles the chart ships for people (templates/user-roles.yaml, SECURITY.md): bound per
 * namespace, the editor role lets a team write the kinds that run kernel code in its own
 * namespace and nowhere else, and never the objects sluice writes itself; the viewer role reads.
 * Checked with `kubectl auth can-i` against the real API server's RBAC.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { findManifest, parseManifests, renderChart } from "./chart-support.ts";
import { createTestNamespace, kubectl, kubectlOk } from "./harness.ts";
import { installCrds } from "./sluice-support.ts";

const teamA = createTestNamespace("roles-a");
const teamB = createTestNamespace("roles-b");
const release = "people";
const editor = `${release}-sluice-networkfunction-editor`;
const viewer = `${release}-sluice-viewer`;
const alice = `alice-${teamA.slice(-6)}`;
const bob = `bob-${teamA.slice(-6)}`;
let rendered = "";

beforeAll(async () => {
  // `kubectl auth can-i` resolves the kinds through discovery: without the CRDs it answers for
  // a resource that does not exist, and the roles' grants never match.
  await installCrds();
  rendered = await renderChart(release, teamA, { showOnly: ["templates/user-roles.yaml"] });
  findManifest(parseManifests(rendered), "ClusterRole", editor);
  await kubectlOk(["apply", "--server-side", "-f", "-"], { input: rendered });
  await kubectlOk([
    "create",
    "rolebinding",
    "network",
    `--clusterrole=${editor}`,
    `--user=${alice}`,
    "-n",
    teamA,
  ]);
  await kubectlOk([
    "create",
    "rolebinding",
    "readers",
    `--clusterrole=${viewer}`,
    `--user=${bob}`,
    "-n",
    teamA,
  ]);
});

afterAll(async () => {
  if (rendered)
    await kubectl(["delete", "--ignore-not-found", "--wait=false", "-f", "-"], { input: rendered });
});

/** `kubectl auth can-i <verb> <resource> -n <namespace> --as=<user>` (subresource after a '/'). */
async function can(user: string, verb: string, resource: string, namespace: string): Promise<boolean> {
  const [plural, sub] = resource.split("/");
  const args = ["auth", "can-i", verb, plural!, ...(sub ? [`--subresource=${sub}`] : [])];
  const result = await kubectl([...args, "-n", namespace, `--as=${user}`]);
  const answer = result.stdout.trim();
  if (answer !== "yes" && answer !== "no") throw new Error(`kubectl ${args.join(" ")}: ${result.stderr}`);
  return answer === "yes";
}

describe("the NetworkFunction editor role, bound in team A's namespace", () => {
  const kinds = ["networkfunctions.sluice.dev", "servicechains.sluice.dev", "gitsources.sluice.dev"];

  it("lets the team create, change and delete the kinds that run kernel code there", async () => {
    for (const kind of kinds)
      for (const verb of ["create", "patch", "update", "delete", "get", "list", "watch"])
        expect(await can(alice, verb, kind, teamA), `${verb} ${kind}`).toBe(true);
    expect(await can(alice, "list", "nodechains.sluice.dev", teamA)).toBe(true);
  });

  it("gives nothing in another team's namespace", async () => {
    for (const kind of [...kinds, "nodechains.sluice.dev"])
      expect(await can(alice, "get", kind, teamB), `get ${kind} in team B`).toBe(false);
    expect(await can(alice, "create", "networkfunctions.sluice.dev", teamB)).toBe(false);
  });

  it("never lets people write what sluice writes: NodeChains, statuses, Secrets", async () => {
    for (const [verb, resource] of [
      ["create", "nodechains.sluice.dev"],
      ["patch", "nodechains.sluice.dev"],
      ["patch", "nodechains.sluice.dev/status"],
      ["patch", "servicechains.sluice.dev/status"],
      ["patch", "gitsources.sluice.dev/status"],
      ["get", "secrets"],
    ] as const) {
      expect(await can(alice, verb, resource, teamA), `${verb} ${resource}`).toBe(false);
    }
  });
});

describe("the viewer role", () => {
  it("reads every sluice kind and writes none", async () => {
    for (const kind of ["gitsources", "networkfunctions", "servicechains", "nodechains"]) {
      expect(await can(bob, "list", `${kind}.sluice.dev`, teamA)).toBe(true);
      expect(await can(bob, "create", `${kind}.sluice.dev`, teamA)).toBe(false);
    }
    expect(await can(bob, "list", "networkfunctions.sluice.dev", teamB)).toBe(false);
  });
});
