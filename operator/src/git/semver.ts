/**
 * A small semantic-version range matcher for `GitSource.spec.ref.semver`: enough of npm's
 * range grammar that users can write what they write for packages, without pulling a
 * dependency into the operator for one function.
 *
 * Supported: exact (`1.2.3`, `=1.2.3`, `v1.2.3`), comparators (`>`, `>=`, `<`, `<=`),
 * AND by spaces (`>=1.2.0 <2.0.0`), OR by `||`, caret (`^1.2.3`, `^0.2`), tilde (`~1.2.3`,
 * `~1.2`), x-ranges (`1.x`, `1.2.*`, `*`, and partial versions such as `1.2`) and hyphen
 * ranges (`1.2.3 - 2.0.0`). As in npm, a pre-release version (`1.3.0-rc.1`) only matches a
 * range that names a pre-release of the same major.minor.patch, so `^1.2.0` never picks a
 * release candidate by accident. Build metadata (`+build`) is ignored.
 */

/** A parsed semantic version. */
export interface SemVer {
  major: number;
  minor: number;
  patch: number;
  /** Pre-release identifiers (`rc.1` → `["rc", 1]`); empty for a release. */
  prerelease: (string | number)[];
}

/** A range that could not be parsed; a stalling error: the spec must change. */
export class SemverRangeError extends Error {
  constructor(
    readonly range: string,
    detail: string,
  ) {
    super(`invalid semver range "${range}": ${detail}`);
    this.name = "SemverRangeError";
  }
}

const NUM = "0|[1-9]\\d*";
const PRE_ID = "(?:0|[1-9]\\d*|\\d*[a-zA-Z-][0-9a-zA-Z-]*)";
const VERSION_RE = new RegExp(
  `^v?(${NUM})\\.(${NUM})\\.(${NUM})(?:-(${PRE_ID}(?:\\.${PRE_ID})*))?(?:\\+[0-9a-zA-Z-]+(?:\\.[0-9a-zA-Z-]+)*)?$`,
);

/**
 * Parses a full version such as `1.2.3`, `v1.2.3` or `1.2.3-rc.1+build.5`; returns undefined for
 * anything else (so that non-version tags are simply not candidates).
 */
export function parseVersion(text: string): SemVer | undefined {
  const m = VERSION_RE.exec(text.trim());
  if (!m) return undefined;
  return {
    major: Number(m[1]),
    minor: Number(m[2]),
    patch: Number(m[3]),
    prerelease: m[4] ? m[4].split(".").map((id) => (/^\d+$/.test(id) ? Number(id) : id)) : [],
  };
}

/** Orders two versions by semver precedence: negative, zero or positive. */
export function compareVersions(a: SemVer, b: SemVer): number {
  if (a.major !== b.major) return a.major - b.major;
  if (a.minor !== b.minor) return a.minor - b.minor;
  if (a.patch !== b.patch) return a.patch - b.patch;
  // A release ranks above any of its pre-releases.
  if (a.prerelease.length === 0 || b.prerelease.length === 0) {
    return b.prerelease.length - a.prerelease.length;
  }
  for (let i = 0; i < Math.max(a.prerelease.length, b.prerelease.length); i++) {
    const x = a.prerelease[i];
    const y = b.prerelease[i];
    if (x === undefined) return -1;
    if (y === undefined) return 1;
    if (x === y) continue;
    if (typeof x === "number" && typeof y === "number") return x - y;
    if (typeof x === "number") return -1; // numeric identifiers rank below alphanumeric ones
    if (typeof y === "number") return 1;
    return x < y ? -1 : 1;
  }
  return 0;
}

type Op = "<" | "<=" | ">" | ">=" | "=";
interface Comparator {
  op: Op;
  version: SemVer;
}
/** One `||` alternative: every comparator must hold. */
type ComparatorSet = Comparator[];

/** A parsed range, ready to test versions against. */
export interface SemverRange {
  readonly text: string;
  readonly sets: ComparatorSet[];
}

/** A version with possibly missing (`x`, `*`, absent) parts. */
interface Partial {
  major?: number;
  minor?: number;
  patch?: number;
  prerelease: (string | number)[];
}

const PARTIAL_RE = new RegExp(
  `^v?(${NUM}|[xX*])(?:\\.(${NUM}|[xX*])(?:\\.(${NUM}|[xX*])(?:-(${PRE_ID}(?:\\.${PRE_ID})*))?)?)?(?:\\+[0-9a-zA-Z.-]+)?$`,
);

function parsePartial(range: string, text: string): Partial {
  const m = PARTIAL_RE.exec(text);
  if (!m) throw new SemverRangeError(range, `"${text}" is not a version`);
  const part = (s: string | undefined) => (s === undefined || /^[xX*]$/.test(s) ? undefined : Number(s));
  const p: Partial = { major: part(m[1]), minor: part(m[2]), patch: part(m[3]), prerelease: [] };
  // `1.x.3` is meaningless: once a part is a wildcard, the rest must be too.
  if (
    (p.major === undefined && (p.minor ?? p.patch) !== undefined) ||
    (p.minor === undefined && p.patch !== undefined)
  ) {
    throw new SemverRangeError(range, `"${text}" has a number after a wildcard`);
  }
  if (m[4] && p.patch !== undefined) {
    p.prerelease = m[4].split(".").map((id) => (/^\d+$/.test(id) ? Number(id) : id));
  }
  return p;
}

const v = (major: number, minor: number, patch: number, prerelease: (string | number)[] = []): SemVer => ({
  major,
  minor,
  patch,
  prerelease,
});
/** The lowest version of a release line: `<2.0.0-0` excludes 2.0.0's pre-releases too. */
const floor = (major: number, minor: number, patch: number): SemVer => v(major, minor, patch, [0]);

function full(p: Partial): SemVer {
  return v(p.major ?? 0, p.minor ?? 0, p.patch ?? 0, p.prerelease);
}

function caret(p: Partial): Comparator[] {
  if (p.major === undefined) return [];
  const lower: Comparator = { op: ">=", version: full(p) };
  if (p.major > 0 || p.minor === undefined) return [lower, { op: "<", version: floor(p.major + 1, 0, 0) }];
  if (p.minor > 0 || p.patch === undefined) return [lower, { op: "<", version: floor(0, p.minor + 1, 0) }];
  return [lower, { op: "<", version: floor(0, 0, p.patch + 1) }];
}

function tilde(p: Partial): Comparator[] {
  if (p.major === undefined) return [];
  const lower: Comparator = { op: ">=", version: full(p) };
  if (p.minor === undefined) return [lower, { op: "<", version: floor(p.major + 1, 0, 0) }];
  return [lower, { op: "<", version: floor(p.major, p.minor + 1, 0) }];
}

/** `1.2` means `>=1.2.0 <1.3.0-0`; `*` means any release. */
function xrange(p: Partial): Comparator[] {
  if (p.major === undefined) return [];
  if (p.minor === undefined)
    return [
      { op: ">=", version: full(p) },
      { op: "<", version: floor(p.major + 1, 0, 0) },
    ];
  if (p.patch === undefined) {
    return [
      { op: ">=", version: full(p) },
      { op: "<", version: floor(p.major, p.minor + 1, 0) },
    ];
  }
  return [{ op: "=", version: full(p) }];
}

function comparator(range: string, op: Op, p: Partial): Comparator[] {
  if (op === "=") return xrange(p);
  if (p.major === undefined) {
    // `>=*` is anything; `<*` / `>*` is nothing.
    return op === ">=" || op === "<=" ? [] : [{ op: "<", version: floor(0, 0, 0) }];
  }
  const complete = p.patch !== undefined;
  if (complete) return [{ op, version: full(p) }];
  // Partial bounds round the way a reader expects: `>1.2` is `>=1.3.0`, `<=1.2` is `<1.3.0-0`.
  const next = p.minor === undefined ? floor(p.major + 1, 0, 0) : floor(p.major, p.minor + 1, 0);
  switch (op) {
    case ">=":
      return [{ op: ">=", version: full(p) }];
    case "<":
      return [{ op: "<", version: floor(p.major, p.minor ?? 0, 0) }];
    case ">":
      return [{ op: ">=", version: next }];
    case "<=":
      return [{ op: "<", version: next }];
  }
  throw new SemverRangeError(range, `unknown operator ${op}`);
}

function parseSet(range: string, text: string): ComparatorSet {
  const trimmed = text.trim();
  const hyphen = /^(\S+)\s+-\s+(\S+)$/.exec(trimmed);
  if (hyphen) {
    const lo = parsePartial(range, hyphen[1]!);
    const hi = parsePartial(range, hyphen[2]!);
    return [...comparator(range, ">=", lo), ...comparator(range, "<=", hi)];
  }
  // Allow `>= 1.2.3` as well as `>=1.2.3`.
  const tokens = trimmed
    .replace(/(<=|>=|<|>|=|\^|~>?)\s+/g, "$1")
    .split(/\s+/)
    .filter(Boolean);
  if (tokens.length === 0) return []; // empty set: any release
  const out: Comparator[] = [];
  for (const token of tokens) {
    const m = /^(<=|>=|<|>|=|\^|~>?)?(.*)$/.exec(token)!;
    const op = m[1] ?? "=";
    const p = parsePartial(range, m[2]!);
    if (op === "^") out.push(...caret(p));
    else if (op === "~" || op === "~>") out.push(...tilde(p));
    else out.push(...comparator(range, op as Op, p));
  }
  return out;
}

/** Parses a range; throws {@link SemverRangeError} when it is not valid. */
export function parseRange(text: string): SemverRange {
  if (text.trim() === "") throw new SemverRangeError(text, "empty range");
  return { text, sets: text.split("||").map((alt) => parseSet(text, alt)) };
}

function holds(c: Comparator, version: SemVer): boolean {
  const cmp = compareVersions(version, c.version);
  switch (c.op) {
    case "<":
      return cmp < 0;
    case "<=":
      return cmp <= 0;
    case ">":
      return cmp > 0;
    case ">=":
      return cmp >= 0;
    case "=":
      return cmp === 0;
  }
}

const sameTuple = (a: SemVer, b: SemVer) => a.major === b.major && a.minor === b.minor && a.patch === b.patch;

/** True when `version` lies in `range` (npm semantics for pre-releases, see module doc). */
export function satisfies(version: SemVer, range: SemverRange): boolean {
  return range.sets.some((set) => {
    if (!set.every((c) => holds(c, version))) return false;
    if (version.prerelease.length === 0) return true;
    // The synthetic `-0` floors of caret/tilde bounds do not count as "naming a pre-release".
    return set.some(
      (c) =>
        c.version.prerelease.length > 0 &&
        !(c.version.prerelease.length === 1 && c.version.prerelease[0] === 0 && c.op === "<") &&
        sameTuple(c.version, version),
    );
  });
}

/**
 * Picks the highest tag whose name is a version in `range`. Tags that are not versions are
 * ignored. When two tags denote the same version (`v1.2.0` and `1.2.0`) the lexically smaller
 * name wins, so the choice does not depend on the order the server listed them in.
 */
export function maxSatisfying(tags: readonly string[], range: SemverRange): string | undefined {
  let best: { tag: string; version: SemVer } | undefined;
  for (const tag of tags) {
    const version = parseVersion(tag);
    if (!version || !satisfies(version, range)) continue;
    const cmp = best ? compareVersions(version, best.version) : 1;
    if (!best || cmp > 0 || (cmp === 0 && tag < best.tag)) best = { tag, version };
  }
  return best?.tag;
}
