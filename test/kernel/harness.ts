/**
 * Test harness for kernel tests: network namespaces joined by veth pairs, a private bpffs
 * subtree per test, BPF compilation of fixtures, and a scope that undoes all of it even when a
 * test fails.
 *
 * Names carry the test process id (`sltest-<pid>-<n>-a`, ifnames `sl<pid36><n36>a`) so that
 * several test processes can run side by side and the global setup can remove what a crashed
 * run left behind.
 */
import { execFile } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { onTestFinished } from "vitest";
import { z } from "zod";
import { ifIndex, netnsPath, withNetns } from "../../node-agent/src/netns/index.ts";
import { BPFFS_TEST_ROOT, NETNS_PREFIX } from "./global-setup.ts";

export { BPFFS_TEST_ROOT, NETNS_PREFIX };

const execFileAsync = promisify(execFile);

/** The repository root. */
export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
/** Fixtures of the kernel tests (C sources, helper scripts). */
export const fixturesDir = join(dirname(fileURLToPath(import.meta.url)), "fixtures");
/** Highest peer MTU at which veth accepts a non-frags native XDP program. */
export const VETH_NATIVE_XDP_MAX_MTU = 3506;

let counter = 0;

/** A name unique in this machine for this test process: `<pid>-<n>`. */
export function uniqueId(): string {
  return `${process.pid}-${++counter}`;
}

/** A short unique token for interface names (at most 9 characters). */
export function ifnameToken(): string {
  return `${process.pid.toString(36)}${(++counter).toString(36)}`;
}

/**
 * Cleanups to run after a test, in reverse order of registration. Every cleanup runs even when
 * an earlier one fails; the failures are reported together afterwards.
 */
export class TestScope {
  readonly #cleanups: (() => void | Promise<void>)[] = [];
  #disposed = false;

  /** Registers `cleanup` to run at {@link dispose}. */
  defer(cleanup: () => void | Promise<void>): void {
    if (this.#disposed) throw new Error("TestScope: defer after dispose");
    this.#cleanups.push(cleanup);
  }

  /** Runs every cleanup (last registered first); idempotent. */
  async dispose(): Promise<void> {
    if (this.#disposed) return;
    this.#disposed = true;
    const errors: unknown[] = [];
    for (const cleanup of this.#cleanups.reverse()) {
      try {
        await cleanup();
      } catch (err) {
        errors.push(err);
      }
    }
    if (errors.length === 1) throw errors[0];
    if (errors.length > 1) throw new AggregateError(errors, `${errors.length} test cleanups failed`);
  }
}

/**
 * A scope disposed when the current test finishes, passed or failed. Call it inside a test; in
 * `beforeAll`, make a `new TestScope()` and dispose it in `afterAll`.
 */
export function testScope(): TestScope {
  const scope = new TestScope();
  onTestFinished(() => scope.dispose());
  return scope;
}

/** Runs a command; a failure carries the command line and its stderr. */
export async function run(file: string, args: readonly string[], input?: string): Promise<string> {
  try {
    const child = execFileAsync(file, args, { maxBuffer: 16 << 20 });
    if (input !== undefined) {
      child.child.stdin?.end(input);
    }
    const { stdout } = await child;
    return stdout;
  } catch (err) {
    const e = err as Error & { stderr?: string };
    throw new Error(`${file} ${args.join(" ")} failed: ${e.stderr?.trim() || e.message}`);
  }
}

/** A network namespace made for a test. */
export interface TestNetns {
  /** Name under /run/netns. */
  name: string;
  /** `/run/netns/<name>`, for `withNetns` and `nsenter --net=`. */
  path: string;
}

/** Options of {@link createNetns}. */
export interface NetnsOptions {
  /** Keep IPv6 on; default off (no router solicitations or neighbour discovery to blur packet counts). */
  ipv6?: boolean;
  /** Forward IPv4 and IPv6 between its interfaces, as a router; default off. */
  forwarding?: boolean;
}

/**
 * Creates a network namespace with loopback up and IPv6 off unless `options.ipv6`; deleted when
 * `scope` is disposed.
 */
export async function createNetns(
  scope: TestScope,
  label = "n",
  options: NetnsOptions = {},
): Promise<TestNetns> {
  const name = `${NETNS_PREFIX}${uniqueId()}-${label}`;
  await run("ip", ["netns", "add", name]);
  scope.defer(() => run("ip", ["netns", "del", name]).then(() => undefined));
  const ns = { name, path: netnsPath(name) };
  withNetns(ns.path, () => {
    // /proc/sys/net resolves to the namespace of the thread that opens the file.
    for (const conf of ["all", "default"]) {
      const knob = `/proc/sys/net/ipv6/conf/${conf}/disable_ipv6`;
      if (existsSync(knob)) writeFileSync(knob, options.ipv6 ? "0" : "1");
    }
  });
  if (options.forwarding) sysctl(ns, { "ipv4/ip_forward": "1", "ipv6/conf/all/forwarding": "1" });
  await run("ip", ["-n", name, "link", "set", "lo", "up"]);
  return ns;
}

/** Writes `knobs` (paths below /proc/sys/net, e.g. `ipv4/ip_forward`) inside `ns`. */
export function sysctl(ns: { path: string }, knobs: Readonly<Record<string, string>>): void {
  // /proc/sys/net resolves to the namespace of the thread that opens the file.
  withNetns(ns.path, () => {
    for (const [knob, value] of Object.entries(knobs)) writeFileSync(`/proc/sys/net/${knob}`, value);
  });
}

/** What `ip -j link show` prints, as far as the tests read it. */
const IP_LINKS = z.array(z.object({ address: z.string().optional() }));

/** The MAC address of `ifname` in `ns`, `aa:bb:...`. */
export async function macOf(ns: { name: string }, ifname: string): Promise<string> {
  const [link] = IP_LINKS.parse(
    JSON.parse(await run("ip", ["-j", "-n", ns.name, "link", "show", "dev", ifname])),
  );
  if (!link?.address) throw new Error(`${ifname} in ${ns.name} has no MAC address`);
  return link.address;
}

/** An interface to be, by namespace and name. */
export interface LinkEnd {
  ns: { name: string };
  ifname: string;
}

/** Creates a veth pair joining two namespaces: `a.ifname` in `a.ns`, its peer `b.ifname` in `b.ns`. */
export async function createVethPair(a: LinkEnd, b: LinkEnd): Promise<void> {
  await run("ip", [
    "link",
    "add",
    a.ifname,
    "netns",
    a.ns.name,
    "type",
    "veth",
    "peer",
    "name",
    b.ifname,
    "netns",
    b.ns.name,
  ]);
}

/** Addresses of one interface of a routed topology: IPv4 (in a /24) and maybe IPv6 (in a /64). */
export interface PortAddress {
  v4: string;
  v6?: string;
}

/** One interface of a routed topology. */
export interface Port {
  ns: TestNetns;
  ifname: string;
  mac: string;
}

/**
 * Puts `address` on `ifname` in `ns` (IPv6 without duplicate address detection), sets its MTU
 * and brings it up; returns it with its MAC.
 */
export async function configurePort(
  ns: TestNetns,
  ifname: string,
  address: PortAddress,
  mtu = 1500,
): Promise<Port> {
  await run(
    "ip",
    ["-n", ns.name, "-batch", "-"],
    `addr add ${address.v4}/24 dev ${ifname}\n` +
      (address.v6 ? `addr add ${address.v6}/64 dev ${ifname} nodad\n` : "") +
      `link set ${ifname} mtu ${mtu} up\n`,
  );
  return { ns, ifname, mac: await macOf(ns, ifname) };
}

/** `ip -batch` lines that make `address` (each family it has) a permanent neighbour with `mac` on `self`. */
export function permanentNeighbor(self: { ifname: string }, address: PortAddress, mac: string): string {
  return [address.v4, address.v6]
    .filter((ip) => ip !== undefined)
    .map((ip) => `neigh replace ${ip} lladdr ${mac} dev ${self.ifname} nud permanent\n`)
    .join("");
}

/**
 * `ip -batch` lines for a host whose way out is `gateway` (at `address`): default routes via
 * each of its addresses, and its MAC known for good.
 */
export function viaGateway(self: Port, gateway: Port, address: PortAddress): string {
  return (
    `route add default via ${address.v4}\n` +
    (address.v6 ? `route add default via ${address.v6}\n` : "") +
    permanentNeighbor(self, address, gateway.mac)
  );
}

/**
 * Attaches the pass-everything XDP fixture (native) to each of `ends`: native XDP_REDIRECT into a
 * veth delivers only when the far end runs an XDP program.
 */
export async function attachXdpPass(scope: TestScope, ends: readonly LinkEnd[]): Promise<void> {
  const pass = await compileBpf(fixture("xdp-pass.bpf.c"), { scope });
  for (const end of ends)
    await run("ip", [
      "-n",
      end.ns.name,
      "link",
      "set",
      "dev",
      end.ifname,
      "xdpdrv",
      "obj",
      pass,
      "sec",
      "xdp",
    ]);
}

/** One end of a veth pair, inside its namespace. */
export interface VethEnd {
  /** The namespace this end lives in. */
  ns: TestNetns;
  /** Interface name (at most 15 characters). */
  ifname: string;
  /** Interface index inside `ns`. */
  ifindex: number;
  /** IPv4 address (no prefix length). */
  ip: string;
  /** MAC address, `aa:bb:...`. */
  mac: string;
  /** MTU. */
  mtu: number;
}

/** Two namespaces joined by a veth pair: `a` and `b` on one /24. */
export interface VethNetwork {
  a: VethEnd;
  b: VethEnd;
}

/** Options of {@link createVethNetwork}. */
export interface VethNetworkOptions {
  /** MTU of both ends; default 1500. Keep it at most {@link VETH_NATIVE_XDP_MAX_MTU} for native XDP. */
  mtu?: number;
  /** Third octet of the 10.77.x.0/24 subnet; default 0. The namespaces are private, so clashes do not matter. */
  subnet?: number;
}

/**
 * Creates namespaces A and B joined by a veth pair with addresses 10.77.<subnet>.1 (A) and
 * .2 (B), both up. Everything is removed when `scope` is disposed (deleting a namespace
 * deletes its veth end, and with it the pair and anything attached to it).
 */
export async function createVethNetwork(
  scope: TestScope,
  options: VethNetworkOptions = {},
): Promise<VethNetwork> {
  const mtu = options.mtu ?? 1500;
  const subnet = options.subnet ?? 0;
  const nsA = await createNetns(scope, "a");
  const nsB = await createNetns(scope, "b");
  const id = ifnameToken();
  const ifA = `sl${id}a`;
  const ifB = `sl${id}b`;
  await createVethPair({ ns: nsA, ifname: ifA }, { ns: nsB, ifname: ifB });
  const ends: VethEnd[] = [];
  for (const [ns, ifname, host] of [
    [nsA, ifA, 1],
    [nsB, ifB, 2],
  ] as const) {
    const ip = `10.77.${subnet}.${host}`;
    await run(
      "ip",
      ["-n", ns.name, "-batch", "-"],
      `addr add ${ip}/24 dev ${ifname}\nlink set ${ifname} mtu ${mtu} up\n`,
    );
    ends.push({ ns, ifname, ifindex: ifIndex(ifname, ns.path), ip, mac: await macOf(ns, ifname), mtu });
  }
  return { a: ends[0] as VethEnd, b: ends[1] as VethEnd };
}

/** A private bpffs directory for one test. */
export interface BpffsDir {
  /** `/sys/fs/bpf/sluice-test/<pid>-<n>`. */
  path: string;
  /** Paths (relative to `path`) of everything pinned below it, sorted. */
  listPinned(): string[];
}

/** Creates `/sys/fs/bpf/sluice-test/<unique>`; removed with everything pinned in it when `scope` is disposed. */
export function createBpffsDir(scope: TestScope): BpffsDir {
  const path = join(BPFFS_TEST_ROOT, uniqueId());
  mkdirSync(path, { recursive: true });
  scope.defer(() => rmSync(path, { recursive: true, force: true }));
  return { path, listPinned: () => listPinned(path) };
}

/** Every pinned object below `dir` (relative paths, sorted); directories themselves are not listed. */
export function listPinned(dir: string): string[] {
  const found: string[] = [];
  const walk = (sub: string) => {
    for (const entry of readdirSync(join(dir, sub), { withFileTypes: true })) {
      const rel = sub ? `${sub}/${entry.name}` : entry.name;
      if (entry.isDirectory()) walk(rel);
      else found.push(rel);
    }
  };
  walk("");
  return found.sort();
}

/** Options of {@link compileBpf}. */
export interface CompileOptions {
  /** `-D` definitions, e.g. `{ MAX_RULES: 64 }`. */
  defines?: Readonly<Record<string, string | number>>;
  /** Extra include directories (the repository's bpf/include is always there). */
  includeDirs?: readonly string[];
  /** Scope that deletes the object file afterwards. */
  scope?: TestScope;
}

/** Shared by test processes: file names carry the process id, and each test's scope deletes its files. */
const buildDir = join(tmpdir(), "sluice-kernel-test");

/**
 * Compiles a BPF C file (`clang -O2 -g -target bpf`) into a fresh object file and returns its
 * path. A compiler error carries clang's stderr.
 */
export async function compileBpf(source: string, options: CompileOptions = {}): Promise<string> {
  mkdirSync(buildDir, { recursive: true });
  const out = join(buildDir, `${basename(source).replace(/\.c$/, "")}-${uniqueId()}.o`);
  const args = [
    "-O2",
    "-g",
    "-target",
    "bpf",
    "-mcpu=v3",
    "-Wall",
    "-I/usr/include/x86_64-linux-gnu",
    `-I${join(repoRoot, "bpf/include")}`,
    ...(options.includeDirs ?? []).map((dir) => `-I${dir}`),
    ...Object.entries(options.defines ?? {}).map(([k, v]) => `-D${k}=${v}`),
    "-c",
    source,
    "-o",
    out,
  ];
  await run("clang", args);
  options.scope?.defer(() => rmSync(out, { force: true }));
  return out;
}

/** Path of a fixture file. */
export function fixture(name: string): string {
  return join(fixturesDir, name);
}
