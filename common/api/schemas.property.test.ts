import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  exampleGitNetworkFunction,
  exampleGitSource,
  exampleNetworkFunction,
  exampleNodeChain,
  exampleServiceChain,
} from "./examples.ts";
import { formatParseError, parseSluiceObject, type ParseResult } from "./index.ts";

/**
 * Whatever a repository or the API server hands over, `parseSluiceObject` answers with a result
 * (never throws), every refusal names at least one field with a message, and whatever it accepts
 * it accepts again after a JSON round trip (what the API server stores). Generated from the
 * valid examples with one or more fields replaced by hostile values, and from arbitrary JSON.
 */

const EXAMPLES = [
  exampleGitSource,
  exampleNetworkFunction,
  exampleGitNetworkFunction,
  exampleServiceChain,
  exampleNodeChain,
];

/** Every path to a value inside `obj`, as key lists. */
function paths(obj: unknown, prefix: (string | number)[] = []): (string | number)[][] {
  const out: (string | number)[][] = [prefix];
  if (Array.isArray(obj)) obj.forEach((v, i) => out.push(...paths(v, [...prefix, i])));
  else if (obj !== null && typeof obj === "object")
    for (const [k, v] of Object.entries(obj)) out.push(...paths(v, [...prefix, k]));
  return out;
}

function setPath(obj: unknown, path: (string | number)[], value: unknown, remove: boolean): unknown {
  if (path.length === 0) return value;
  const copy = structuredClone(obj) as Record<string | number, unknown>;
  let node = copy;
  for (const key of path.slice(0, -1)) node = node[key] as Record<string | number, unknown>;
  const last = path[path.length - 1]!;
  if (remove) {
    if (Array.isArray(node) && typeof last === "number") node.splice(last, 1);
    else delete node[last];
  } else {
    Object.defineProperty(node, last, { value, enumerable: true, writable: true, configurable: true });
  }
  return copy;
}

/** Values that break schemas in the ways people (and attackers) do. */
const hostileValue: fc.Arbitrary<unknown> = fc.oneof(
  fc.constantFrom(
    null,
    undefined,
    "",
    " ",
    "-1",
    -1,
    0,
    1e308,
    -0,
    Number.NaN,
    Number.POSITIVE_INFINITY,
    2 ** 53 + 1,
    true,
    [],
    {},
    "../../etc/passwd",
    "/etc/shadow",
    "a".repeat(10_000),
    "team-b",
    "file:///var/lib/sluice",
    "x\u0000y",
    "\u202e",
    "__proto__",
    { __proto__: { polluted: true } },
  ),
  fc.string({ maxLength: 80 }),
  fc.integer(),
  fc.double(),
  fc.jsonValue({ maxDepth: 3 }),
  fc.dictionary(
    fc.constantFrom("__proto__", "constructor", "name", "spec", "a"),
    fc.jsonValue({ maxDepth: 1 }),
  ),
);

function checkResult(result: ParseResult): void {
  if (result.ok) {
    const again = parseSluiceObject(JSON.parse(JSON.stringify(result.value)));
    expect(again.ok, again.ok ? "" : formatParseError(again.error)).toBe(true);
  } else {
    expect(result.error.issues.length).toBeGreaterThan(0);
    for (const issue of result.error.issues) {
      expect(typeof issue.path).toBe("string");
      expect(typeof issue.message).toBe("string");
      expect(issue.message.length).toBeGreaterThan(0);
    }
    expect(typeof formatParseError(result.error)).toBe("string");
  }
  expect(({} as Record<string, unknown>).polluted).toBeUndefined();
}

describe("API schema properties", () => {
  it("examples with hostile fields are parsed or refused with field issues (20,000 objects)", () => {
    const mutated = fc
      .tuple(
        fc.integer({ min: 0, max: EXAMPLES.length - 1 }),
        fc.array(fc.tuple(fc.nat(), hostileValue, fc.boolean()), { minLength: 1, maxLength: 3 }),
      )
      .map(([which, edits]) => {
        let obj: unknown = EXAMPLES[which]!();
        for (const [pick, value, remove] of edits) {
          const all = paths(obj);
          obj = setPath(obj, all[pick % all.length]!, value, remove);
        }
        return obj;
      });
    fc.assert(
      fc.property(mutated, (obj) => {
        const started = performance.now();
        let result: ParseResult | undefined;
        expect(() => (result = parseSluiceObject(obj))).not.toThrow();
        checkResult(result!);
        expect(performance.now() - started).toBeLessThan(1_000);
      }),
      { numRuns: 20_000 },
    );
  }, 120_000);

  it("arbitrary JSON is refused with issues, never thrown on (9,000 values)", () => {
    const kindish = fc.record(
      {
        apiVersion: fc.constantFrom("sluice.dev/v1alpha1", "sluice.dev/v1", "v1", ""),
        kind: fc.constantFrom("GitSource", "NetworkFunction", "ServiceChain", "NodeChain", "Secret"),
        metadata: fc.jsonValue({ maxDepth: 2 }),
        spec: fc.jsonValue({ maxDepth: 4 }),
      },
      { requiredKeys: [] },
    );
    fc.assert(
      fc.property(fc.oneof(fc.jsonValue({ maxDepth: 4 }), kindish), (value) => {
        let result: ParseResult | undefined;
        expect(() => (result = parseSluiceObject(value))).not.toThrow();
        checkResult(result!);
      }),
      { numRuns: 9_000 },
    );
  }, 60_000);
});
