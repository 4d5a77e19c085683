// The live view's page script: no build step, no module loader, nothing fetched from elsewhere.
// It reads a snapshot and then one event a second from /live/events (server-sent events), and
// draws each network function's rates with uPlot, with markers where revisions changed.
/* global document, window, EventSource, uPlot */
"use strict";

(function () {
  const HISTORY_POINTS = 900;
  const COLORS = {
    packets: "#5fb3f9",
    drops: "#f25f5c",
    passes: "#6bd18b",
    errors: "#f5b841",
    ns: "#c792ea",
  };
  /** Per-function ns series (sampled time, `sluice run --time-functions`). */
  const FUNCTION_COLORS = ["#82aaff", "#f78c6c", "#c3e88d", "#ffcb6b", "#89ddff", "#ff5370"];
  const KIND_TEXT = {
    switch: "switched in",
    "switch-failed": "switch failed",
    "rollout-started": "rollout started",
    "rollout-halted": "rollout halted",
    "rolled-back": "rolled back",
  };

  /** @type {{title: string, chains: any[], points: any[], markers: any[], problems: any[], rollouts?: any[]}} */
  let state = { title: "", chains: [], points: [], markers: [], problems: [] };
  /** chain key -> { signature, element, graphs: Map<nf|"", {plot, element}> } */
  const cards = new Map();

  const $ = (id) => document.getElementById(id);
  const el = (tag, attrs, ...children) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null) continue;
      if (k === "class") node.className = v;
      else node.setAttribute(k, String(v));
    }
    for (const child of children) if (child !== undefined && child !== null) node.append(child);
    return node;
  };
  const time = (t) => new Date(t * 1000).toLocaleTimeString();
  const preciseTime = (ms) => {
    const d = new Date(ms);
    return `${d.toLocaleTimeString()}.${String(d.getMilliseconds()).padStart(3, "0")}`;
  };
  const shortRevision = (r) => (r || "").replace(/sha1:([0-9a-f]{7})[0-9a-f]{33}/, "sha1:$1");

  function markerPlugin(chainKey) {
    return {
      hooks: {
        draw: [
          (u) => {
            const ctx = u.ctx;
            const [min, max] = [u.scales.x.min, u.scales.x.max];
            ctx.save();
            ctx.font = `${Math.round(10 * devicePixelRatioOf())}px sans-serif`;
            ctx.textAlign = "left";
            ctx.textBaseline = "alphabetic";
            // A rollout's start and its switch come a second apart: one label per message.
            let labelled = "";
            // Labels take turns on three rows, so that close markers stay readable.
            let labels = 0;
            for (const m of state.markers) {
              if (`${m.node ?? nodeOfKey(chainKey)}/${m.chain}` !== chainKey) continue;
              if (m.t < min || m.t > max) continue;
              const x = Math.round(u.valToPos(m.t, "x", true));
              const bad =
                m.kind === "rolled-back" || m.kind === "rollout-halted" || m.kind === "switch-failed";
              ctx.strokeStyle = bad ? COLORS.drops : "#aab4c0";
              ctx.setLineDash([4, 3]);
              ctx.beginPath();
              ctx.moveTo(x, u.bbox.top);
              ctx.lineTo(x, u.bbox.top + u.bbox.height);
              ctx.stroke();
              ctx.fillStyle = ctx.strokeStyle;
              if (m.message !== labelled) {
                ctx.fillText(
                  `${KIND_TEXT[m.kind] ?? m.kind}: ${m.message}`.slice(0, 60),
                  x + 4,
                  u.bbox.top + 12 * devicePixelRatioOf() * ((labels++ % 3) + 1),
                );
                labelled = m.message;
              }
            }
            ctx.restore();
          },
        ],
      },
    };
  }
  const devicePixelRatioOf = () => window.devicePixelRatio || 1;
  const nodeOfKey = (chainKey) => chainKey.slice(0, chainKey.indexOf("/"));

  function plotOptions(chainKey, series, width) {
    return {
      width,
      height: 150,
      plugins: [markerPlugin(chainKey)],
      scales: { x: { time: true } },
      series: [
        {},
        ...series.map(([label, stroke]) => ({
          label,
          stroke,
          width: 1.5,
          spanGaps: false,
          points: { show: false },
        })),
      ],
      axes: [
        { stroke: "#8794a3", grid: { stroke: "#2a3540" } },
        { stroke: "#8794a3", grid: { stroke: "#2a3540" }, size: 60 },
      ],
      legend: { live: true },
      cursor: { drag: { x: false, y: false } },
    };
  }

  function functionData(key) {
    const xs = [];
    const ys = [[], [], [], []];
    for (const p of state.points) {
      xs.push(p.t);
      const r = p.functions[key];
      for (let i = 0; i < 4; i++) ys[i].push(r ? r[i] : null);
    }
    return [xs, ...ys];
  }

  // The whole chain (the root's run time) first, then each function's sampled time.
  function nsData(chainKey, fnKeys) {
    const xs = [];
    const ys = [chainKey, ...fnKeys].map(() => []);
    for (const p of state.points) {
      xs.push(p.t);
      [chainKey, ...fnKeys].forEach((k, i) => {
        const v = p.nsPerPacket[k];
        ys[i].push(v === undefined ? null : v);
      });
    }
    return [xs, ...ys];
  }

  function graphWidth(container) {
    return Math.max(300, (container.clientWidth || 420) - 4);
  }

  function buildCard(chain) {
    const graphs = new Map();
    const head = el("div", { class: "chain-head" });
    const pipeline = el("div", { class: "pipeline" });
    chain.functions.forEach((nf, i) => {
      if (i > 0) pipeline.append(el("span", { class: "arrow" }, "→"));
      pipeline.append(el("span", { class: "nf" }, nf));
    });
    const grid = el("div", { class: "graphs" });
    const maps = el("div", { class: "maps" });
    const element = el(
      "div",
      { class: "chain", "data-chain": chain.chain, "data-node": chain.node },
      head,
      pipeline,
      grid,
      maps,
    );
    $("chains").append(element);
    if (chain.noCounters) {
      const absent = el("p", { class: "note no-rates" });
      grid.append(absent);
      return { signature: signatureOf(chain), element, head, maps, graphs, absent };
    }
    for (const nf of chain.functions) {
      const box = el("div", {
        class: "graph fn",
        "data-chain": chain.chain,
        "data-node": chain.node,
        "data-nf": nf,
      });
      box.append(el("h3", {}, `${nf}: packets/s, drops/s, passes/s, errors/s`));
      grid.append(box);
      const key = `${chain.key}/${nf}`;
      const plot = new uPlot(
        plotOptions(
          chain.key,
          [
            ["packets/s", COLORS.packets],
            ["drops/s", COLORS.drops],
            ["passes/s", COLORS.passes],
            ["errors/s", COLORS.errors],
          ],
          graphWidth(box),
        ),
        functionData(key),
        box,
      );
      graphs.set(nf, { plot, element: box, key });
    }
    const nsBox = el("div", { class: "graph ns", "data-chain": chain.chain, "data-node": chain.node });
    nsBox.append(
      el("h3", {}, "mean ns per packet in the kernel: whole chain, and per function where sampled"),
    );
    const note = el("div", { class: "note" });
    nsBox.append(note);
    grid.append(nsBox);
    const fnKeys = chain.functions.map((nf) => `${chain.key}/${nf}`);
    const nsPlot = new uPlot(
      plotOptions(
        chain.key,
        [
          ["whole chain", COLORS.ns],
          ...chain.functions.map((nf, i) => [nf, FUNCTION_COLORS[i % FUNCTION_COLORS.length]]),
        ],
        graphWidth(nsBox),
      ),
      nsData(chain.key, fnKeys),
      nsBox,
    );
    graphs.set("", {
      plot: nsPlot,
      element: nsBox,
      key: chain.key,
      note,
      fnKeys,
      functions: chain.functions,
    });
    return { signature: signatureOf(chain), element, head, maps, graphs };
  }

  // A card is built again when its functions change, or when its counters come or go.
  const signatureOf = (chain) => `${chain.functions.join(",")}|${chain.noCounters ? "none" : "counted"}`;

  function fillHead(card, chain) {
    const field = (label, value, cls) =>
      el("span", { class: `field ${cls || ""}` }, `${label} `, el("b", {}, value));
    card.head.replaceChildren(
      el("span", { class: "name" }, chain.chain),
      field("node", chain.node),
      field("hook", chain.hook),
      field("revision", shortRevision(chain.revision)),
      field("phase", chain.phase, `phase-${chain.phase}`),
      field("last switch", chain.lastSwitch ? new Date(chain.lastSwitch).toLocaleTimeString() : "–"),
      field(
        "commit",
        chain.commit ? `${chain.commit.sha.slice(0, 7)} ${chain.commit.message}` : "–",
        "commit",
      ),
    );
    card.maps.textContent = chain.maps.length
      ? "maps: " + chain.maps.map((m) => `${m.nf}/${m.map} ${m.entries}/${m.maxEntries}`).join(", ")
      : "";
    if (card.absent)
      card.absent.textContent = `no rates: ${chain.countersAbsent || "on the node's own live view and its /metrics"}`;
    const ns = card.graphs.get("");
    if (ns) ns.note.textContent = chain.runTimeAbsent ? `not measured: ${chain.runTimeAbsent}` : "";
  }

  function renderChains() {
    const wanted = new Set(state.chains.map((c) => c.key));
    for (const [key, card] of cards)
      if (!wanted.has(key)) {
        card.element.remove();
        cards.delete(key);
      }
    $("chains").querySelector(".none")?.remove();
    if (state.chains.length === 0 && !$("chains").querySelector(".none"))
      $("chains").append(el("p", { class: "none" }, "no chain yet"));
    for (const chain of state.chains) {
      let card = cards.get(chain.key);
      if (card && card.signature !== signatureOf(chain)) {
        card.element.remove();
        cards.delete(chain.key);
        card = undefined;
      }
      if (!card) {
        card = buildCard(chain);
        cards.set(chain.key, card);
      }
      fillHead(card, chain);
    }
  }

  function updateGraphs() {
    for (const card of cards.values())
      for (const [nf, graph] of card.graphs) {
        const data = nf === "" ? nsData(graph.key, graph.fnKeys) : functionData(graph.key);
        graph.plot.setData(data);
        const counted = data[1].filter((v) => v !== null).length;
        graph.element.dataset.points = String(counted);
        if (nf === "") {
          // The last per-function figure of each function, for whoever reads the page's data.
          const last = {};
          graph.functions.forEach((name, i) => {
            const series = data[2 + i];
            for (let j = series.length - 1; j >= 0; j--)
              if (series[j] !== null) {
                last[name] = series[j];
                break;
              }
          });
          graph.element.dataset.functionNs = JSON.stringify(last);
        }
        if (nf !== "") {
          const last = state.points[state.points.length - 1];
          const rates = last && last.functions[graph.key];
          graph.element.dataset.packetsPerSecond = rates ? String(rates[0]) : "";
          graph.element.dataset.dropsPerSecond = rates ? String(rates[1]) : "";
        }
      }
  }

  function renderProblems() {
    const list = $("problems");
    list.replaceChildren();
    if (state.problems.length === 0) list.append(el("li", { class: "none" }, "none"));
    for (const p of state.problems)
      list.append(
        el(
          "li",
          { class: p.kind, "data-kind": p.kind, "data-node": p.node, "data-chain": p.chain, "data-nf": p.nf },
          `${p.node ? `${p.node} ` : ""}${p.chain}${p.nf ? ` / ${p.nf}` : ""}: ${p.message}`,
        ),
      );
  }

  function renderMarkers() {
    const list = $("markers");
    list.replaceChildren();
    if (state.markers.length === 0) list.append(el("li", { class: "none" }, "nothing yet"));
    for (const m of [...state.markers].reverse())
      list.append(
        el(
          "li",
          {
            class: `marker ${m.kind}`,
            "data-kind": m.kind,
            "data-chain": m.chain,
            "data-node": m.node,
            "data-revision": m.revision,
            "data-at-ms": m.atMs ?? m.t * 1000,
          },
          `${m.atMs ? preciseTime(m.atMs) : time(m.t)} `,
          el("span", { class: "kind" }, KIND_TEXT[m.kind] ?? m.kind),
          ` ${m.node ? `${m.node} ` : ""}${m.chain} ${shortRevision(m.revision)}: `,
          el("span", { class: "message" }, m.message),
        ),
      );
  }

  function renderRollouts() {
    const rollouts = state.rollouts || [];
    $("rollouts-section").hidden = rollouts.length === 0;
    const box = $("rollouts");
    box.replaceChildren();
    for (const r of rollouts) {
      const table = el(
        "table",
        {},
        el(
          "tr",
          {},
          el("th", {}, "node"),
          el("th", {}, "revision"),
          el("th", {}, "phase"),
          el("th", {}, "why"),
        ),
      );
      for (const n of r.nodes)
        table.append(
          el(
            "tr",
            { class: n.phase === "Failed" ? "failed" : "", "data-node": n.node, "data-revision": n.revision },
            el("td", {}, n.node),
            el("td", {}, shortRevision(n.revision)),
            el("td", {}, n.phase),
            el("td", {}, n.message || ""),
          ),
        );
      box.append(
        el(
          "div",
          { class: "rollout", "data-chain": r.chain },
          el(
            "div",
            {},
            el("b", {}, r.chain),
            ` target ${shortRevision(r.revision)} · ${r.reason || ""} ${r.message || ""}`,
          ),
          table,
        ),
      );
    }
  }

  function renderAll() {
    $("title").textContent = state.title;
    document.title = `sluice live · ${state.title}`;
    renderProblems();
    renderRollouts();
    renderChains();
    updateGraphs();
    renderMarkers();
  }

  function connect() {
    const source = new EventSource("/live/events");
    source.addEventListener("open", () => {
      $("connection").textContent = "live";
      $("connection").className = "connection live";
    });
    source.addEventListener("error", () => {
      $("connection").textContent = "reconnecting…";
      $("connection").className = "connection";
    });
    source.addEventListener("snapshot", (e) => {
      state = JSON.parse(e.data);
      renderAll();
    });
    source.addEventListener("point", (e) => {
      const event = JSON.parse(e.data);
      state.points.push(event.point);
      if (state.points.length > HISTORY_POINTS) state.points.shift();
      state.chains = event.chains;
      state.problems = event.problems;
      if (event.rollouts) state.rollouts = event.rollouts;
      renderProblems();
      renderRollouts();
      renderChains();
      updateGraphs();
    });
    source.addEventListener("marker", (e) => {
      state.markers.push(JSON.parse(e.data).marker);
      renderMarkers();
      for (const card of cards.values()) for (const graph of card.graphs.values()) graph.plot.redraw(false);
    });
  }

  window.addEventListener("resize", () => {
    for (const card of cards.values())
      for (const graph of card.graphs.values())
        graph.plot.setSize({ width: graphWidth(graph.element), height: 150 });
  });
  connect();
})();
