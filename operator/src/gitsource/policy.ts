/**
 * What a GitSource may reach, as the operator was started. The defaults are the safe ones for a
 * cluster shared by teams: a source applies only into its own namespace and follows only network
 * URLs. Single-host mode (`sluice run`) has one user and lifts both.
 */
export interface SourcePolicy {
  /**
   * Apply objects into namespaces other than the GitSource's own (`--allow-cross-namespace`).
   * Off: an object naming another namespace makes the whole revision invalid.
   */
  allowCrossNamespace?: boolean;
  /**
   * Follow `file://` URLs (`--allow-file-sources`). Off in a cluster: such a URL reads the
   * operator's own disk, including every other source's working clone.
   */
  allowFileSources?: boolean;
  /**
   * When set, only URLs on these hosts are followed (`--allowed-git-hosts`). An entry is a host
   * name (`git.example.com`), a host and port (`git.example.com:8443`), or `*.example.com` for
   * every host below that domain. Compared without regard to case.
   */
  allowedGitHosts?: readonly string[];
}

/** Whether the operator follows `url`; the refusal says which flag would allow it. */
export type UrlVerdict = { ok: true } | { ok: false; message: string };

/** Checks a GitSource URL against the policy, before any Secret is read or git is run. */
export function checkSourceUrl(url: string, policy: SourcePolicy): UrlVerdict {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return { ok: false, message: `spec.url ${JSON.stringify(url)} is not a URL` };
  }
  if (parsed.protocol === "file:") {
    return policy.allowFileSources
      ? { ok: true }
      : {
          ok: false,
          message:
            "file:// URLs read the operator's own disk and are not followed by this operator (start it with --allow-file-sources to allow them)",
        };
  }
  const hosts = policy.allowedGitHosts;
  if (hosts === undefined || hosts.length === 0) return { ok: true };
  const hostname = parsed.hostname.toLowerCase();
  const host = parsed.host.toLowerCase();
  const allowed = hosts.some((entry) => {
    const e = entry.trim().toLowerCase();
    if (e.startsWith("*.")) return hostname.endsWith(e.slice(1)) && hostname.length > e.length - 1;
    return e === hostname || e === host;
  });
  return allowed
    ? { ok: true }
    : {
        ok: false,
        message: `host ${host} is not among the operator's allowed Git hosts (${hosts.join(", ")})`,
      };
}

/**
 * The namespace of the GitSource that applied an object, from its `sluice.dev/source` label
 * (`<namespace>.<name>`; a namespace holds no dot), or undefined for an object made by hand.
 */
export function parentNamespace(
  labels: Record<string, string> | undefined,
  label: string,
): string | undefined {
  const value = labels?.[label];
  if (!value) return undefined;
  const dot = value.indexOf(".");
  return dot > 0 ? value.slice(0, dot) : undefined;
}
