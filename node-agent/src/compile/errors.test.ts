import { describe, expect, it } from "vitest";
import { MAX_STDERR_CHARS, sanitizeCompilerOutput } from "./errors.ts";

const ROOT = "/cache/artifacts/ab12/tree/network/nfs/guard";
const HEADERS = "/cache/objects/.system-include-0123";

describe("sanitizeCompilerOutput", () => {
  const cases: { name: string; stderr: string; kept: string[]; dropped: string[] }[] = [
    {
      name: "a diagnostic in the NF's own file keeps its quoted line and caret",
      stderr:
        "guard.bpf.c:3:9: error: use of undeclared identifier 'x'\n\treturn x;\n\t       ^\n1 error generated.",
      kept: ["guard.bpf.c:3:9: error", "\treturn x;", "^", "1 error generated."],
      dropped: [],
    },
    {
      name: "a diagnostic in a system header keeps its location but not the header's text",
      stderr: `${HEADERS}/linux/bpf.h:10:5: error: redefinition of 'bpf_attr'\nunion bpf_attr {\n      ^\nguard.bpf.c:1:10: note: in file included from here`,
      kept: ["linux/bpf.h:10:5: error: redefinition", "guard.bpf.c:1:10: note"],
      dropped: ["union bpf_attr {", HEADERS],
    },
    {
      name: "a diagnostic in a file above the NF's directory quotes nothing from it",
      stderr: "../../../secret.h:1:1: error: unknown type name 'TOPSECRET'\nTOPSECRET value\n^",
      kept: ["../../../secret.h:1:1: error"],
      dropped: ["TOPSECRET value"],
    },
    {
      name: "an absolute path inside the NF's directory is shown relative and quoted",
      stderr: `${ROOT}/inc/a.h:2:1: warning: unused\nint unused;\n^`,
      kept: ["inc/a.h:2:1: warning", "int unused;"],
      dropped: [ROOT],
    },
    {
      name: "an absolute path outside quotes nothing, even when it climbs back with ..",
      stderr: `${ROOT}/../../../../../../etc/hostname:1:1: error: unknown type name 'myhost'\nmyhost\n^`,
      kept: ["error: unknown type name"],
      dropped: ["\nmyhost\n"],
    },
    {
      name: "<command line> and <inline asm> quote nothing",
      stderr: "<command line>:1:9: warning: macro redefined\n#define X 1\n        ^",
      kept: ["<command line>:1:9: warning"],
      dropped: ["#define X 1"],
    },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const out = sanitizeCompilerOutput(c.stderr, ROOT, { [`${HEADERS}/`]: "" });
      for (const text of c.kept) expect(out).toContain(text);
      for (const text of c.dropped) expect(out).not.toContain(text);
    });
  }

  it(`clips long output to ${MAX_STDERR_CHARS} characters and says how much was left out`, () => {
    const line = "guard.bpf.c:1:1: warning: something long\n";
    const out = sanitizeCompilerOutput(line.repeat(1000), ROOT);
    expect(out.length).toBeLessThan(MAX_STDERR_CHARS + 100);
    expect(out).toMatch(/\.\.\. \(\d+ more characters\)$/);
  });
});
