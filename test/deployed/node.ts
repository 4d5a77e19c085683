/**
 * The node of the local cluster (`scripts/cluster.sh`) as the deployed tests see it from the
 * host: its address, its container runtime, and the processes and metrics of the pods it runs.
 */
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { promisify } from "node:util";

const execFileAsync = promisify(execFile);

/** The node's name and address (scripts/cluster.sh: node_name, node_ip). */
export const NODE_NAME = "slk-node";
export const NODE_IP = "10.237.0.1";
/** The API server, on the node's address (pods reach it through the `kubernetes` Service). */
export const API_SERVER = `https://${NODE_IP}:6443`;
/** An address of the Service range (10.239.0.0/24) the API server does not hand out first. */
export const OPERATOR_CLUSTER_IP = "10.239.0.80";
/** containerd's socket (scripts/cluster.sh: containerd_sock). */
export const CONTAINERD_SOCKET = "/run/sluice-kind/containerd/containerd.sock";

/** Runs `ctr` in containerd's Kubernetes namespace and returns its stdout. */
export async function ctr(...args: string[]): Promise<string> {
  const { stdout } = await execFileAsync("ctr", ["--address", CONTAINERD_SOCKET, "-n", "k8s.io", ...args]);
  return stdout;
}

/**
 * The host pid of a container's first process, from the pod's `containerID`
 * (`containerd://<id>`), as containerd reports its task.
 */
export async function containerPid(containerId: string): Promise<number> {
  const id = containerId.replace(/^containerd:\/\//, "");
  const line = (await ctr("tasks", "ls")).split("\n").find((l) => l.split(/\s+/)[0] === id);
  const pid = Number(line?.split(/\s+/)[1]);
  if (!Number.isInteger(pid) || pid <= 0) throw new Error(`containerd has no running task ${id}`);
  return pid;
}

/** `pid` and every process below it (a container's init and what it started). */
export function processTree(pid: number): number[] {
  const children = readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8")
    .trim()
    .split(/\s+/)
    .filter(Boolean)
    .map(Number);
  return [pid, ...children.flatMap((child) => processTree(child))];
}

/** The uid (real, effective, saved, fs) of a process. */
export function uids(pid: number): number[] {
  const line = /^Uid:\s*(.+)$/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  if (!line) throw new Error(`/proc/${pid}/status has no Uid line`);
  return line[1]!.trim().split(/\s+/).map(Number);
}

/** One sample of a Prometheus text exposition. */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses the Prometheus text format (what `GET /metrics` returns). */
export function parseMetrics(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    samples.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return samples;
}

/** Scrapes the agent's metrics endpoint on the node, as Prometheus would. */
export async function scrapeAgent(port = 9471): Promise<Sample[]> {
  const response = await fetch(`http://${NODE_IP}:${port}/metrics`, { signal: AbortSignal.timeout(5_000) });
  if (!response.ok) throw new Error(`GET http://${NODE_IP}:${port}/metrics: HTTP ${response.status}`);
  return parseMetrics(await response.text());
}

/** The per-NF packet counters of one chain: NF name -> packets. */
export async function nfPackets(chain: RegExp): Promise<Record<string, number>> {
  const counters: Record<string, number> = {};
  for (const s of await scrapeAgent()) {
    if (s.name === "sluice_nf_packets_total" && chain.test(s.labels.chain ?? "") && s.labels.nf) {
      counters[s.labels.nf] = (counters[s.labels.nf] ?? 0) + s.value;
    }
  }
  return counters;
}

/**
 * What the local cluster changes on the host, as one comparable snapshot: the kernel settings
 * the kubelet, kube-proxy and the bridge plugin write, interfaces and network namespaces named
 * slk*, mounts below the cluster's directories, kube-proxy's nftables tables, the propagation of
 * /sys/fs/bpf, pinned chains of slk-* namespaces, the kubelet's cgroups. `npm run cluster --
 * down` must bring it back to what it was before `up`.
 */
export async function hostFootprint(clusterDirs: readonly string[]): Promise<Record<string, string>> {
  const run = async (file: string, args: string[]): Promise<string> =>
    execFileAsync(file, args).then(
      (r) => r.stdout.trim(),
      () => "",
    );
  const sysctls = [
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
    "net.ipv4.ip_forward",
  ];
  const footprint: Record<string, string> = {};
  for (const key of sysctls) footprint[key] = await run("sysctl", ["-n", key]);
  const names = (text: string): string =>
    text
      .split("\n")
      .map((line) => line.split(/[\s@:]+/).find(Boolean) ?? "")
      .filter((name) => name.startsWith("slk"))
      .sort()
      .join(" ");
  footprint.links = names(await run("ip", ["-br", "link"]));
  footprint.netns = names(await run("ip", ["netns", "list"]));
  footprint.mounts = (await run("findmnt", ["-rn", "-o", "TARGET"]))
    .split("\n")
    .filter((target) => clusterDirs.some((dir) => target.startsWith(dir)))
    .join(" ");
  footprint.nftables = (await run("nft", ["list", "tables"]))
    .split("\n")
    .filter((line) => line.includes("kube-proxy"))
    .join(" ");
  footprint.bpffsPropagation = await run("findmnt", ["-n", "-o", "PROPAGATION", "/sys/fs/bpf"]);
  footprint.pins = (await run("ls", ["/sys/fs/bpf/sluice"]))
    .split("\n")
    .filter((name) => name.startsWith("slk-"))
    .join(" ");
  footprint.cgroups = (await run("sh", ["-c", "ls -d /sys/fs/cgroup/*/slk 2>/dev/null"])).replace(/\n/g, " ");
  return footprint;
}
