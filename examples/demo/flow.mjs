// UDP traffic of the demo: a numbered flow from one host to the other, counted at both ends so
// that a lost packet shows up by its sequence number. Started inside a host's network namespace
// (nsenter --net=...); speaks JSON lines on stdout and stops on "stop" from stdin (or when stdin
// closes, that is when the demo went away).
//
// usage: node flow.mjs recv <bind ip> <port> <magic hex>
//          prints {"ready":true}, then {"received":N,"highest":H} every 250 ms;
//          on stop: {"done":true,"received":N,"duplicates":D,"socketDrops":S,"missingSample":[...]}
//        node flow.mjs send <dst ip> <port> <rate> <magic hex> [<probe port> <probe rate>]
//          prints {"started":true}, then {"sent":N} every 250 ms;
//          on stop: finishes its sends, prints {"done":true,"sent":N,"failed":F,"probes":P}
//          Probes are unnumbered packets to another port (the demo's firewall change denies it),
//          sent at <probe rate> per second; they are not part of the loss count.
import dgram from "node:dgram";
import { readFileSync } from "node:fs";
import { clearInterval, setInterval } from "node:timers";

const [mode, ...args] = process.argv.slice(2);
const PROGRESS_MS = 250;

function print(obj, exit = false) {
  process.stdout.write(`${JSON.stringify(obj)}\n`, () => exit && process.exit(0));
}

function onStop(fn) {
  let input = "";
  let stopped = false;
  const once = () => {
    if (stopped) return;
    stopped = true;
    fn();
  };
  process.stdin.on("data", (chunk) => {
    input += Buffer.from(chunk).toString();
    if (input.includes("stop")) once();
  });
  process.stdin.on("end", once);
}

if (mode === "recv") {
  const [ip, portArg, magicArg] = args;
  const magic = Number.parseInt(magicArg ?? "", 16) >>> 0;
  let seen = new Uint8Array(1 << 20);
  let received = 0;
  let duplicates = 0;
  let highest = -1;
  const socket = dgram.createSocket({ type: "udp4", recvBufferSize: 8 << 20 });
  socket.on("message", (msg) => {
    if (msg.length < 8 || msg.readUInt32BE(0) !== magic) return;
    const seq = msg.readUInt32BE(4);
    if (seq >= seen.length) {
      // Grow by doubling: an hour at 10k packets/s is 36M sequence numbers.
      let size = seen.length;
      while (size <= seq) size *= 2;
      const bigger = new Uint8Array(size);
      bigger.set(seen);
      seen = bigger;
    }
    if (seen[seq]) duplicates++;
    else {
      seen[seq] = 1;
      received++;
      if (seq > highest) highest = seq;
    }
  });
  /** Packets the kernel dropped at this socket (receive buffer full), from /proc/net/udp. */
  const socketDrops = (port) => {
    const hexPort = port.toString(16).toUpperCase().padStart(4, "0");
    for (const line of readFileSync("/proc/net/udp", "utf8").split("\n").slice(1)) {
      const fields = line.trim().split(/\s+/);
      if (fields[1]?.endsWith(`:${hexPort}`)) return Number(fields.at(-1));
    }
    return 0;
  };
  socket.bind(Number(portArg), ip, () => {
    const { port } = socket.address();
    print({ ready: true, port });
    const progress = setInterval(() => print({ received, highest }), PROGRESS_MS);
    onStop(() => {
      clearInterval(progress);
      const missingSample = [];
      for (let seq = 0; seq <= highest && missingSample.length < 20; seq++)
        if (!seen[seq]) missingSample.push(seq);
      print({ done: true, received, duplicates, socketDrops: socketDrops(port), missingSample }, true);
    });
  });
} else if (mode === "send") {
  const [dst, portArg, rateArg, magicArg, probePortArg, probeRateArg] = args;
  const rate = Number(rateArg);
  const magic = Number.parseInt(magicArg ?? "", 16) >>> 0;
  const probePort = Number(probePortArg ?? 0);
  const probeRate = Number(probeRateArg ?? 0);
  let next = 0;
  let inFlight = 0;
  let sent = 0;
  let failed = 0;
  let probes = 0;
  let stopping = false;
  let start = 0n;
  const socket = dgram.createSocket("udp4");
  // Unconnected, so that ICMP port-unreachable answers to probes never surface as errors.
  const probeSocket = dgram.createSocket("udp4");
  const finish = () => print({ done: true, sent, failed, probes }, true);
  const send = (seq) => {
    const packet = Buffer.alloc(64);
    packet.writeUInt32BE(magic, 0);
    packet.writeUInt32BE(seq, 4);
    inFlight++;
    socket.send(packet, (err) => {
      inFlight--;
      if (err) failed++;
      else sent++;
      if (stopping && inFlight === 0) finish();
    });
  };
  const tick = () => {
    if (stopping) return;
    const elapsedS = Number(process.hrtime.bigint() - start) / 1e9;
    const due = Math.floor(elapsedS * rate) + 1;
    // Behind schedule (a busy machine): catch up in bounded bursts rather than all at once.
    let burst = 0;
    while (next < due && burst++ < 256) send(next++);
    setTimeout(tick, next < due ? 0 : Math.max(1, Math.floor(((next + 1) / rate - elapsedS) * 1000)));
  };
  socket.connect(Number(portArg), dst, () => {
    start = process.hrtime.bigint();
    print({ started: true });
    tick();
    const progress = setInterval(() => print({ sent }), PROGRESS_MS);
    const probe =
      probePort > 0 && probeRate > 0
        ? setInterval(() => {
            probeSocket.send(Buffer.alloc(64), probePort, dst, (err) => err || probes++);
          }, 1000 / probeRate)
        : undefined;
    onStop(() => {
      stopping = true;
      clearInterval(progress);
      if (probe) clearInterval(probe);
      if (inFlight === 0) finish();
    });
  });
} else {
  process.stderr.write(
    "usage: flow.mjs recv <ip> <port> <magic> | send <dst> <port> <rate> <magic> [<probe port> <probe rate>]\n",
  );
  process.exit(2);
}
