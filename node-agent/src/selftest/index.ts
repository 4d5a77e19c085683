/**
 * The in-kernel self-test: test vectors run with BPF_PROG_TEST_RUN on a new chain before it is
 * switched in; any mismatch stops the switch.
 */
export {
  assertSelfTestPassed,
  hasVectors,
  runSelfTest,
  SelfTestError,
  type SelfTestReport,
  type SelfTestTarget,
  type SelfTestVectors,
  type VectorResult,
} from "./selftest.ts";
