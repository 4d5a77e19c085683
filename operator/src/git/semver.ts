/**
 * Semantic-version ranges for `GitSource.spec.ref.semver`, with npm's own range grammar and
 * matching (the `semver` package): exact versions, comparators, AND by spaces, OR by `||`,
 * caret, tilde, x-ranges and hyphen ranges, written as users write them for packages.
 *
 * As in npm, a pre-release version (`1.3.0-rc.1`) only matches a range that names a
 * pre-release of the same major.minor.patch, so `^1.2.0` never picks a release candidate by
 * accident. Two rules are stricter than npm's, because a range in a GitSource picks what runs
 * in the kernel of every node: an empty range is an error (npm reads it as `*`), and so is a
 * number after a wildcard (`^x.1`, `1.x.3`; npm reads the first as `*`).
 */
import semver from "semver";

/** A parsed semantic version. */
export interface SemVer {
  major: number;
  minor: number;
  patch: number;
  /** Pre-release identifiers (`rc.1` → `["rc", 1]`); empty for a release. */
  prerelease: (string | number)[];
}

/** A parsed range, ready to test versions against. */
export type SemverRange = semver.Range;

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

/**
 * Parses a full version such as `1.2.3`, `v1.2.3` or `1.2.3-rc.1+build.5`; returns undefined for
 * anything else (so that non-version tags are simply not candidates).
 */
export function parseVersion(text: string): SemVer | undefined {
  const parsed = semver.parse(text.trim());
  if (!parsed) return undefined;
  const { major, minor, patch, prerelease } = parsed;
  return { major, minor, patch, prerelease: [...prerelease] };
}

/** The package's own form of a version (build metadata does not take part in matching). */
function toSemver(version: SemVer): semver.SemVer {
  const pre = version.prerelease.length > 0 ? `-${version.prerelease.join(".")}` : "";
  return new semver.SemVer(`${version.major}.${version.minor}.${version.patch}${pre}`);
}

/** Orders two versions by semver precedence: negative, zero or positive. */
export function compareVersions(a: SemVer, b: SemVer): number {
  return semver.compare(toSemver(a), toSemver(b));
}

/** Finds a partial version with a number after a wildcard (`x.1`, `1.*.3`) in a range. */
function numberAfterWildcard(text: string): string | undefined {
  for (const token of text.split(/\|\||\s+/)) {
    // The version part of a comparator, without operator, pre-release or build metadata.
    const version = token.replace(/^(<=|>=|<|>|=|\^|~>?)/, "").split(/[-+]/)[0]!;
    const parts = version.replace(/^v/, "").split(".");
    const wildcard = parts.findIndex((p) => /^[xX*]$/.test(p));
    if (wildcard >= 0 && parts.slice(wildcard + 1).some((p) => /^\d+$/.test(p))) return token;
  }
  return undefined;
}

/** Parses a range; throws {@link SemverRangeError} when it is not valid. */
export function parseRange(text: string): SemverRange {
  if (text.trim() === "") throw new SemverRangeError(text, "empty range");
  const wildcard = numberAfterWildcard(text);
  if (wildcard) throw new SemverRangeError(text, `"${wildcard}" has a number after a wildcard`);
  try {
    return new semver.Range(text);
  } catch (err) {
    // The package throws a TypeError such as "Invalid comparator: abc".
    const detail = err instanceof Error ? err.message : String(err);
    throw new SemverRangeError(text, detail.charAt(0).toLowerCase() + detail.slice(1));
  }
}

/** True when `version` lies in `range` (npm semantics for pre-releases, see module doc). */
export function satisfies(version: SemVer, range: SemverRange): boolean {
  return range.test(toSemver(version));
}

/**
 * Picks the highest tag whose name is a version in `range`. Tags that are not versions are
 * ignored. When two tags denote the same version (`v1.2.0` and `1.2.0`) the lexically smaller
 * name wins, so the choice does not depend on the order the server listed them in (which
 * `semver.maxSatisfying` does not promise).
 */
export function maxSatisfying(tags: readonly string[], range: SemverRange): string | undefined {
  let best: { tag: string; version: semver.SemVer } | undefined;
  for (const tag of tags) {
    const version = semver.parse(tag.trim());
    if (!version || !range.test(version)) continue;
    const cmp = best ? semver.compare(version, best.version) : 1;
    if (!best || cmp > 0 || (cmp === 0 && tag < best.tag)) best = { tag, version };
  }
  return best?.tag;
}
