/**
 * Where a chain's kernel objects are pinned. One directory per chain under the manager's bpffs
 * root; bpffs holds no regular files, so state lives in pinned maps (`meta`).
 *
 * ```
 * <root>/<chain>/root_prog, root_array, root_stats   the root program, its 1-slot prog array, its miss counter
 *               /stats                               sluice_stats, shared by every revision
 *               /scratch                             sluice_scratch, shared by every revision
 *               /meta                                chain state: hook, attach mode, interfaces
 *               /link_<ifname>                       the root's bpf_link on each interface
 *               /rev/<generation>/progs, meta        one revision: its prog array and description
 *               /rev/<generation>/nfs/<nf>           the program of each NF of that revision
 *               /rev/<generation>/maps/<nf>/<map>    maps new in that revision, until it goes live
 *               /maps/<nf>/<map>                     NF-owned maps of the live revision (carried over)
 *               /handover/root_prog, root_array,     during a change of hook only: the new hook's root,
 *                         root_stats, meta,          what it changes to (meta), and its links, attached
 *                         link_<ifname>              next to the old hook's until the change completes
 * ```
 *
 * A change of hook is committed when `meta` names the hook that `handover/meta` names: before,
 * a new process undoes it (detaches the handover links); after, it completes it (detaches the old
 * hook's links and renames the handover pins into place).
 *
 * The live revision is the one whose prog array holds, in slot 0, the program that
 * `root_array[0]` holds: the kernel's own state is the truth, so a crash between any two steps
 * of a switch leaves something a new process can read back.
 *
 * Each NF program is pinned so that a new process can take the programs it reuses over by pin:
 * opening a program by id (what the prog array holds) needs CAP_SYS_ADMIN, which the agent
 * does not have.
 */
import { join } from "node:path";

/** Paths of one chain's pins. */
export interface ChainPaths {
  dir: string;
  rootProg: string;
  rootArray: string;
  rootStats: string;
  stats: string;
  /** sluice_scratch, shared by every revision (absent in chains of older agents). */
  scratch: string;
  meta: string;
  /** Directory of all revisions. */
  revs: string;
  /** Directory of the live revision's NF-owned maps. */
  maps: string;
  link(ifname: string): string;
  rev(generation: number): string;
  revProgs(generation: number): string;
  revMeta(generation: number): string;
  /** The program of NF `nf` of a revision. */
  revProg(generation: number, nf: string): string;
  /** Maps created for a revision, pinned here until it goes live. */
  revMaps(generation: number): string;
  revMap(generation: number, nf: string, map: string): string;
  map(nf: string, map: string): string;
  /** The new hook's root and links while a change of hook is under way. */
  handover: HandoverPaths;
}

/** Pins of a change of hook in progress (see the module comment). */
export interface HandoverPaths {
  dir: string;
  rootProg: string;
  rootArray: string;
  rootStats: string;
  /** The chain meta the change leads to: its hook is the new one. */
  meta: string;
  link(ifname: string): string;
}

/** Prefix of link pins: `link_<ifname>`. */
export const LINK_PREFIX = "link_";

/** The pin paths of chain `name` under bpffs directory `root`. */
export function chainPaths(root: string, name: string): ChainPaths {
  const dir = join(root, name);
  const rev = (generation: number) => join(dir, "rev", String(generation));
  return {
    dir,
    rootProg: join(dir, "root_prog"),
    rootArray: join(dir, "root_array"),
    rootStats: join(dir, "root_stats"),
    stats: join(dir, "stats"),
    scratch: join(dir, "scratch"),
    meta: join(dir, "meta"),
    revs: join(dir, "rev"),
    maps: join(dir, "maps"),
    link: (ifname) => join(dir, `${LINK_PREFIX}${ifname}`),
    rev,
    revProgs: (generation) => join(rev(generation), "progs"),
    revMeta: (generation) => join(rev(generation), "meta"),
    revProg: (generation, nf) => join(rev(generation), "nfs", nf),
    revMaps: (generation) => join(rev(generation), "maps"),
    revMap: (generation, nf, map) => join(rev(generation), "maps", nf, map),
    map: (nf, map) => join(dir, "maps", nf, map),
    handover: {
      dir: join(dir, "handover"),
      rootProg: join(dir, "handover", "root_prog"),
      rootArray: join(dir, "handover", "root_array"),
      rootStats: join(dir, "handover", "root_stats"),
      meta: join(dir, "handover", "meta"),
      link: (ifname) => join(dir, "handover", `${LINK_PREFIX}${ifname}`),
    },
  };
}
