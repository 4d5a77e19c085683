import { z } from "zod";
import { PortRange, Protocol, protocolNumber } from "./firewall.ts";

/** `IPS_MAX_SIGNATURES` of `bpf/nf/ips/ips_types.h`: most signatures one table holds. */
export const IPS_MAX_SIGNATURES = 128;
/** `IPS_MIN_CONTENT` and `IPS_MAX_CONTENT`: bounds on the bytes of one signature's content. */
export const IPS_MIN_CONTENT = 2;
export const IPS_MAX_CONTENT = 64;
/** `IPS_SCAN_MAX`: payload bytes scanned per packet (the first ones). */
export const IPS_SCAN_MAX = 2048;
/** Largest signature id; ids above it are the keys of the stateful rules' counters. */
export const IPS_MAX_SIGNATURE_ID = 0x7fffffff;

/** Parameters of `ips` (load-time settings). */
export const IpsParams = z.strictObject({
  mode: z
    .enum(["prevent", "detect"])
    .default("prevent")
    .describe("prevent: drop what a drop signature or a stateful rule matches; detect: only count it."),
  synFloodThreshold: z
    .number()
    .int()
    .min(0)
    .max(100_000_000)
    .default(0)
    .describe("TCP SYNs (without ACK) per second one source may send; the rest are dropped. 0: off."),
  portScanPorts: z
    .number()
    .int()
    .min(0)
    .max(512)
    .default(0)
    .refine((n) => n !== 1, "must be 0 (off) or at least 2")
    .describe(
      "Distinct destination ports (TCP SYN or UDP) one source may probe within portScanSeconds; from the one that reaches this number on, its probes are dropped until the window ends. 0: off.",
    ),
  portScanSeconds: z
    .number()
    .int()
    .min(1)
    .max(86_400)
    .default(10)
    .describe("Length of the port-scan window, in seconds."),
  scanBudget: z
    .number()
    .int()
    .min(64)
    .max(1_000_000)
    .default(8192)
    .describe(
      "Signatures one packet may try at positions its prefilter lets through; a payload built to make the scan slow runs out of it.",
    ),
  onScanBudget: z
    .enum(["drop", "pass"])
    .default("drop")
    .describe(
      "What happens to a packet that used its whole scanBudget (in mode prevent; counted either way).",
    ),
});
export type IpsParams = z.infer<typeof IpsParams>;

/**
 * Snort's content syntax: text, with bytes in hex between pipes (`"GET /|2e 2e|/"`). A literal
 * pipe is `|7c|`. Returns the bytes, or the reason the text is not content.
 */
export function parseContent(text: string): { ok: true; bytes: Buffer } | { ok: false; message: string } {
  const parts: Buffer[] = [];
  let rest = text;
  while (rest.length > 0) {
    const open = rest.indexOf("|");
    if (open < 0) {
      parts.push(Buffer.from(rest, "utf8"));
      break;
    }
    parts.push(Buffer.from(rest.slice(0, open), "utf8"));
    const close = rest.indexOf("|", open + 1);
    if (close < 0) return { ok: false, message: "a hex block opened with | is not closed" };
    const hex = rest.slice(open + 1, close).replace(/\s+/g, "");
    if (!/^([0-9a-fA-F]{2})*$/.test(hex))
      return { ok: false, message: `"|${rest.slice(open + 1, close)}|" is not hex bytes like |0d 0a|` };
    parts.push(Buffer.from(hex, "hex"));
    rest = rest.slice(close + 1);
  }
  return { ok: true, bytes: Buffer.concat(parts) };
}

/** Content text as Snort writes it, checked to be bytes the data plane can hold. */
export const Content = z
  .string()
  .max(1024)
  .describe('Bytes to find: text, with hex bytes between pipes ("GET /|2e 2e|/"); 2 to 64 bytes.')
  .superRefine((text, ctx) => {
    const parsed = parseContent(text);
    if (!parsed.ok) ctx.addIssue({ code: "custom", message: parsed.message });
    else if (parsed.bytes.length < IPS_MIN_CONTENT || parsed.bytes.length > IPS_MAX_CONTENT)
      ctx.addIssue({
        code: "custom",
        message: `is ${parsed.bytes.length} bytes; content must be ${IPS_MIN_CONTENT} to ${IPS_MAX_CONTENT} bytes`,
      });
  });

/** The bytes of a validated {@link Content}. */
export function contentBytes(text: string): Buffer {
  const parsed = parseContent(text);
  if (!parsed.ok) throw new RangeError(parsed.message);
  return parsed.bytes;
}

/** One signature: all the given conditions must hold for a packet to match. */
export const IpsSignature = z
  .strictObject({
    id: z
      .number()
      .int()
      .min(1)
      .max(IPS_MAX_SIGNATURE_ID)
      .describe("Unique id (Snort's sid); hit counters are reported by it."),
    content: Content,
    nocase: z.boolean().default(false).describe("Compare ASCII letters without regard to case."),
    offset: z
      .number()
      .int()
      .min(0)
      .max(IPS_SCAN_MAX - IPS_MIN_CONTENT)
      .default(0)
      .describe("The match starts at least this many bytes into the payload."),
    depth: z
      .number()
      .int()
      .min(IPS_MIN_CONTENT)
      .max(IPS_SCAN_MAX)
      .optional()
      .describe(
        "The match ends within this many bytes after offset (default: anywhere in the scanned payload).",
      ),
    proto: Protocol.optional(),
    srcPort: PortRange.optional().describe("Source port or range; the packet must be TCP or UDP."),
    dstPort: PortRange.optional().describe("Destination port or range; the packet must be TCP or UDP."),
    action: z
      .enum(["drop", "alert"])
      .default("drop")
      .describe("drop: count and drop (in mode prevent); alert: only count."),
    message: z.string().max(256).optional().describe("What the signature detects (Snort's msg)."),
  })
  .superRefine((sig, ctx) => {
    const parsed = parseContent(sig.content);
    if (!parsed.ok) return; // reported by the field's own check
    const length = parsed.bytes.length;
    if (sig.depth !== undefined && sig.depth < length)
      ctx.addIssue({
        code: "custom",
        path: ["depth"],
        message: `is shorter than the ${length}-byte content: nothing could match`,
      });
    if (sig.offset + length > IPS_SCAN_MAX)
      ctx.addIssue({
        code: "custom",
        path: ["offset"],
        message: `puts the content past the ${IPS_SCAN_MAX} scanned payload bytes: nothing could match`,
      });
    const hasPorts = sig.srcPort !== undefined || sig.dstPort !== undefined;
    if (hasPorts && sig.proto !== undefined && ![6, 17].includes(protocolNumber(sig.proto)))
      ctx.addIssue({ code: "custom", path: ["proto"], message: "ports need proto tcp or udp (or no proto)" });
  });
export type IpsSignature = z.infer<typeof IpsSignature>;

/** Runtime tables of `ips`: the signature set (every signature is tried; ids are unique). */
export const IpsTables = z.strictObject({
  signatures: z
    .array(IpsSignature)
    .max(IPS_MAX_SIGNATURES)
    .default([])
    .superRefine((list, ctx) => {
      const seen = new Map<number, number>();
      list.forEach((sig, i) => {
        const first = seen.get(sig.id);
        if (first !== undefined)
          ctx.addIssue({
            code: "custom",
            path: [i, "id"],
            message: `id ${sig.id} is also signatures[${first}]'s`,
          });
        else seen.set(sig.id, i);
      });
    })
    .describe(`Content signatures, at most ${IPS_MAX_SIGNATURES}.`),
});
export type IpsTables = z.infer<typeof IpsTables>;
