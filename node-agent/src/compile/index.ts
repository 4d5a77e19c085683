/**
 * Compiling NF sources to BPF objects with clang, cached by a content hash of everything that
 * decides the output. clang runs in a sandbox (Landlock, seccomp, resource limits) that sees only
 * the NF's own source tree and the headers sluice names.
 */
export {
  compile,
  systemIncludeArgs,
  BPF_DIR,
  BPF_INCLUDE_DIR,
  CLANG_FLAGS,
  DEFAULT_COMPILE_LIMITS,
  SYSTEM_HEADER_DIRS,
  type CompileLimits,
  type CompileOptions,
  type CompileResult,
} from "./compile.ts";
export {
  CompileError,
  CompileSandboxUnavailableError,
  sanitizeCompilerOutput,
  ToolchainError,
  parseDiagnostics,
  trimCompilerOutput,
  MAX_STDERR_CHARS,
  type CompileFailure,
  type Diagnostic,
} from "./errors.ts";
export { treeDigest, SourceTreeError, DEFAULT_TREE_LIMITS, type TreeLimits } from "./digest.ts";
export { checkObjectOpens, type ObjectCheck } from "./objectcheck.ts";
