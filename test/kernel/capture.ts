/**
 * A packet socket in a namespace that reads back the UDP datagrams it received: addresses, TTL
 * or hop limit and UDP length, as a receiver sees them on its wire (for "arrived as sent").
 */
import koffi from "koffi";
import { withNetns } from "../../node-agent/src/netns/index.ts";
import { closeFn, MSG_DONTWAIT, recvFn, SOCK_CLOEXEC, SOCK_NONBLOCK, SOCK_RAW, socketFn } from "./traffic.ts";

const AF_PACKET = 17;
const ETH_P_ALL_BE = 0x0300;

/** One UDP datagram as the capture saw it, right after the Ethernet header. */
export interface SeenDatagram {
  family: 4 | 6;
  /** Dotted quad, or 32 hex digits for IPv6. */
  src: string;
  dst: string;
  /** TTL or hop limit. */
  ttl: number;
  udpLength: number;
}

/** A capture of everything `nsPath` receives, from now on; `close()` it when done. */
export function udpCapture(nsPath: string) {
  const fd = withNetns(nsPath, () =>
    socketFn(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, ETH_P_ALL_BE),
  );
  if (fd < 0) throw new Error(`packet socket in ${nsPath}: errno ${koffi.errno()}`);
  const frame = Buffer.alloc(4096);
  return {
    /** Plain IPv4/IPv6 UDP datagrams to `port` received (and still queued) so far. */
    datagrams(port: number): SeenDatagram[] {
      const seen: SeenDatagram[] = [];
      for (;;) {
        const n = recvFn(fd, frame, frame.length, MSG_DONTWAIT);
        if (n < 0) return seen;
        const type = frame.readUInt16BE(12);
        if (type === 0x0800 && n >= 42 && frame[23] === 17 && frame.readUInt16BE(36) === port) {
          seen.push({
            family: 4,
            src: [...frame.subarray(26, 30)].join("."),
            dst: [...frame.subarray(30, 34)].join("."),
            ttl: frame[22]!,
            udpLength: frame.readUInt16BE(38),
          });
        }
        if (type === 0x86dd && n >= 62 && frame[20] === 17 && frame.readUInt16BE(56) === port) {
          const hex = (at: number) => frame.subarray(at, at + 16).toString("hex");
          seen.push({
            family: 6,
            src: hex(22),
            dst: hex(38),
            ttl: frame[21]!,
            udpLength: frame.readUInt16BE(58),
          });
        }
      }
    },
    close: () => closeFn(fd),
  };
}
