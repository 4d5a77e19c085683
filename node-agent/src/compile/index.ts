/**
 * Compiling NF sources to BPF objects with clang, cached by a content hash of everything that
 * decides the output.
 */
export {
  compile,
  systemIncludeArgs,
  BPF_DIR,
  BPF_INCLUDE_DIR,
  CLANG_FLAGS,
  type CompileOptions,
  type CompileResult,
} from "./compile.ts";
export {
  CompileError,
  ToolchainError,
  parseDiagnostics,
  trimCompilerOutput,
  MAX_STDERR_CHARS,
  type CompileFailure,
  type Diagnostic,
} from "./errors.ts";
export { treeDigest, SourceTreeError, DEFAULT_TREE_LIMITS, type TreeLimits } from "./digest.ts";
