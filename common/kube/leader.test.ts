import { describe, expect, it } from "vitest";
import { rootLogger } from "../log.ts";
import { KubeClient } from "./client.ts";
import { KubeConfig } from "@kubernetes/client-node";
import {
  type LeaderElectionConfig,
  LeaderElectionConfigError,
  LeaderElector,
  leaderTimings,
} from "./leader.ts";

const client = (() => {
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: "c", server: "https://127.0.0.1:1" }],
    users: [{ name: "u" }],
    contexts: [{ name: "x", cluster: "c", user: "u" }],
    currentContext: "x",
  });
  return new KubeClient(kc);
})();

describe("leaderTimings", () => {
  it("keeps client-go's proportions: 15 s lease, 10 s renew deadline, 2 s retry", () => {
    expect(leaderTimings(15_000)).toEqual({
      leaseDurationMs: 15_000,
      renewDeadlineMs: 10_000,
      retryPeriodMs: 2_000,
    });
  });

  it("rounds the lease to whole seconds, as the Lease object stores it", () => {
    expect(leaderTimings(6_400).leaseDurationMs).toBe(6_000);
    expect(leaderTimings(200).leaseDurationMs).toBe(1_000);
  });

  it("gives timings the elector accepts", () => {
    for (const ms of [1_000, 3_000, 6_000, 15_000, 60_000]) {
      expect(
        () =>
          new LeaderElector(client, { namespace: "ns", leaseName: "l", ...leaderTimings(ms) }, rootLogger),
      ).not.toThrow();
    }
  });
});

describe("LeaderElector settings", () => {
  const cases: { name: string; timings: Partial<LeaderElectionConfig>; error: RegExp }[] = [
    {
      name: "a lease of a fraction of a second",
      timings: { leaseDurationMs: 1_500 },
      error: /whole seconds/,
    },
    {
      name: "a renew deadline as long as the lease (two leaders could overlap)",
      timings: { leaseDurationMs: 10_000, renewDeadlineMs: 10_000 },
      error: /renew deadline 10000 ms must be shorter than the lease/,
    },
    {
      name: "a retry period that leaves no second try before the deadline",
      timings: { leaseDurationMs: 15_000, renewDeadlineMs: 5_000, retryPeriodMs: 5_000 },
      error: /retry period 5000 ms must be shorter than the renew deadline/,
    },
  ];
  for (const c of cases) {
    it(`refuses ${c.name}`, () => {
      expect(
        () => new LeaderElector(client, { namespace: "ns", leaseName: "l", ...c.timings }, rootLogger),
      ).toThrow(LeaderElectionConfigError);
      expect(
        () => new LeaderElector(client, { namespace: "ns", leaseName: "l", ...c.timings }, rootLogger),
      ).toThrow(c.error);
    });
  }

  it("names itself after the host with a unique suffix unless given an identity", () => {
    const a = new LeaderElector(client, { namespace: "ns", leaseName: "l" }, rootLogger);
    const b = new LeaderElector(client, { namespace: "ns", leaseName: "l" }, rootLogger);
    expect(a.identity).not.toBe(b.identity);
    expect(
      new LeaderElector(client, { namespace: "ns", leaseName: "l", identity: "pod-0" }, rootLogger).identity,
    ).toBe("pod-0");
    expect(a.isLeader).toBe(false);
  });
});
