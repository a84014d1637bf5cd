// The overlay map page: polls /overlay on this admin listener and draws it (no framework,
// no network but this gateway).  Every name that came from the network is put in the page
// with textContent or setAttribute, never as markup.
"use strict";

(function () {
  const POLL_MS = 3000;
  const FETCH_TIMEOUT_MS = 5000;
  const MAX_NODES = 64;
  const SVG_NS = "http://www.w3.org/2000/svg";
  const ICON = { up: "\u2713", degraded: "!", down: "\u2715", unknown: "?" };

  let lastOk = null; // Date of the last good answer
  let timer = null;
  let inFlight = false;

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function stateName(state) {
    return Object.prototype.hasOwnProperty.call(ICON, state) ? state : "unknown";
  }

  function badge(state, label) {
    const s = stateName(state);
    return el("span", { class: "badge state-" + s }, ICON[s] + " " + (label || s));
  }

  function bytes(perSecond) {
    const units = ["B/s", "KiB/s", "MiB/s", "GiB/s"];
    let v = perSecond;
    let i = 0;
    while (v >= 1024 && i < units.length - 1) {
      v /= 1024;
      i += 1;
    }
    return (i === 0 ? v.toFixed(0) : v.toFixed(1)) + " " + units[i];
  }

  function rateText(rate, metrics) {
    if (!metrics) return "metrics off";
    if (!rate) return "measuring\u2026";
    return rate.requests_per_s.toFixed(1) + " req/s, " + bytes(rate.bytes_per_s);
  }

  function short(name, most) {
    // The drawing has room for so much; the full name is in the node's title, label and table.
    return name.length <= most ? name : name.slice(0, most - 1) + "\u2026";
  }

  function servicesSummary(node) {
    const all = node.services.length + (node.more_services || 0);
    if (all === 0) return "no services";
    const healthy = node.services.filter((s) => s.state === "up").length;
    const more = node.more_services ? " (first " + node.services.length + " shown)" : "";
    return healthy + " of " + all + " fully healthy" + more;
  }

  function key(site) {
    return "site:" + site;
  }

  // -- the SVG graph ---------------------------------------------------------------------

  function layout(nodes) {
    const cx = 400;
    const cy = 260;
    const peers = nodes.filter((n) => !n.local);
    const r = peers.length > 12 ? 220 : 190;
    const pos = new Map();
    for (const n of nodes) if (n.local) pos.set(n.site, [cx, cy]);
    // Peers on an ellipse around this site; one or two peers sit left and right, so the
    // labels of a link (mid-line) and of a site (under it) never overlap.
    const start = peers.length <= 2 ? 0 : -Math.PI / 2 + Math.PI / peers.length;
    peers.forEach((n, i) => {
      const a = start + (2 * Math.PI * i) / Math.max(peers.length, 1);
      pos.set(n.site, [cx + r * 1.45 * Math.cos(a), cy + r * Math.sin(a)]);
    });
    return pos;
  }

  function drawMap(doc) {
    const map = document.getElementById("map");
    const nodes = doc.nodes.slice(0, MAX_NODES);
    const pos = layout(nodes);
    const edgesLayer = svg("g", { class: "edges" });
    const nodesLayer = svg("g", { class: "nodes" });
    for (const e of doc.edges) {
      const a = pos.get(e.from);
      const b = pos.get(e.to);
      if (!a || !b) continue;
      const state = e.state === "up" ? "up" : "down";
      const line = svg("line", {
        class: "edge state-" + state,
        x1: a[0], y1: a[1], x2: b[0], y2: b[1],
        "data-edge": e.from + "\u2194" + e.to,
        "data-state": state,
      });
      edgesLayer.appendChild(line);
      const label = state === "up"
        ? "link up" + (e.rtt_ms === null ? "" : ", " + e.rtt_ms.toFixed(2) + " ms")
        : "LINK DOWN";
      const mx = (a[0] + b[0]) / 2;
      const my = (a[1] + b[1]) / 2;
      edgesLayer.appendChild(svg("text", { class: "edge-label", x: mx, y: my - 6, "text-anchor": "middle" }, label));
      if (doc.metrics && e.traffic) {
        edgesLayer.appendChild(svg("text", { class: "edge-label", x: mx, y: my + 12, "text-anchor": "middle" },
          rateText(e.traffic, true)));
      }
    }
    nodes.forEach((n, i) => {
      const p = pos.get(n.site);
      const s = stateName(n.state);
      const g = svg("g", {
        class: "node state-" + s + (n.local ? " local" : ""),
        tabindex: 0,
        role: "button",
        "data-key": key(n.site),
        "data-site": n.site,
        "data-state": s,
        "data-index": i,
        transform: "translate(" + p[0] + "," + p[1] + ")",
        "aria-label": (n.local ? "this site " : "site ") + n.site + ": " + s +
          (n.reasons.length ? " (" + n.reasons.join("; ") + ")" : ""),
      });
      g.appendChild(svg("title", {}, n.site + ": " + s));
      g.appendChild(svg("circle", { class: "ring", r: 30 }));
      g.appendChild(svg("text", { class: "icon", y: 0, "aria-hidden": "true" }, ICON[s]));
      g.appendChild(svg("text", { class: "name", y: 50 }, short(n.site, 24) + (n.local ? " (this site)" : "")));
      g.appendChild(svg("text", { class: "state", y: 67 }, s));
      nodesLayer.appendChild(g);
    });
    map.replaceChildren(edgesLayer, nodesLayer);
    // Fit the drawing: a few sites need less height than a ring of many.
    const xs = Array.from(pos.values(), (p) => p[0]);
    const ys = Array.from(pos.values(), (p) => p[1]);
    const x0 = Math.min(...xs) - 120;
    const y0 = Math.min(...ys) - 60;
    const w = Math.max(Math.max(...xs) + 120 - x0, 400);
    const h = Math.max(...ys) + 90 - y0;
    map.setAttribute("viewBox", [x0, y0, w, h].join(" "));
  }

  // -- the tables ------------------------------------------------------------------------

  function drawSites(doc) {
    const body = document.querySelector("#sites tbody");
    const edges = new Map(doc.edges.map((e) => [e.to, e]));
    const rows = doc.nodes.map((n) => {
      const s = stateName(n.state);
      const tr = el("tr", { tabindex: 0, "data-key": key(n.site), "data-site": n.site, "data-state": s });
      tr.appendChild(el("th", { scope: "row" }, n.site + (n.local ? " (this site)" : "")));
      const state = el("td");
      state.appendChild(badge(s));
      tr.appendChild(state);
      const e = edges.get(n.site);
      if (n.local) {
        tr.appendChild(el("td", {}, "\u2014"));
        tr.appendChild(el("td", {}, "\u2014"));
        const t = n.traffic || {};
        tr.appendChild(el("td", {}, "local: " + rateText(t.local, doc.metrics) +
          "; from peers: " + rateText(t.from_peers, doc.metrics)));
      } else if (e) {
        const linkCell = el("td");
        linkCell.appendChild(badge(e.state === "up" ? "up" : "down", e.state === "up" ? "up" : "down"));
        if (e.links.length) linkCell.appendChild(document.createTextNode(" " + e.links.join(" + ")));
        if (e.failed_attempts) linkCell.appendChild(document.createTextNode(", " + e.failed_attempts + " failed attempts"));
        tr.appendChild(linkCell);
        tr.appendChild(el("td", {}, e.rtt_ms === null ? "\u2014" : e.rtt_ms.toFixed(2) + " ms"));
        tr.appendChild(el("td", {}, rateText(e.traffic, doc.metrics)));
      } else {
        tr.appendChild(el("td", {}, "not a peer"));
        tr.appendChild(el("td", {}, "\u2014"));
        tr.appendChild(el("td", {}, "\u2014"));
      }
      tr.appendChild(el("td", {}, servicesSummary(n)));
      const why = n.reasons.slice();
      if (e && e.state !== "up" && e.last_error) why.push("last error: " + e.last_error);
      tr.appendChild(el("td", {}, why.join("; ") || "\u2014"));
      return tr;
    });
    if (doc.more_sites) {
      rows.push(el("tr", {}, doc.more_sites + " more sites not shown"));
    }
    body.replaceChildren(...rows);
  }

  function drawServices(doc) {
    const body = document.querySelector("#services tbody");
    const rows = [];
    for (const n of doc.nodes) {
      for (const svc of n.services) {
        const tr = el("tr", { tabindex: 0, "data-key": "svc:" + n.site + "/" + svc.namespace + "/" + svc.service, "data-site": n.site });
        tr.appendChild(el("td", {}, n.site));
        tr.appendChild(el("th", { scope: "row" }, svc.service));
        tr.appendChild(el("td", {}, svc.namespace));
        tr.appendChild(el("td", {}, (svc.healthy === null ? "?" : svc.healthy) + " / " + svc.total));
        const state = el("td");
        state.appendChild(badge(svc.state));
        if (svc.stale) {
          state.appendChild(document.createTextNode(" "));
          state.appendChild(el("span", { class: "badge stale" }, "stale"));
        }
        tr.appendChild(state);
        let to;
        if (svc.exported_to === null) to = n.local ? "unknown (catalog too large to check)" : "imported from " + n.site;
        else if (svc.exported_to.length === 0) to = "not exported";
        else to = svc.exported_to.join(", ");
        tr.appendChild(el("td", {}, to));
        rows.push(tr);
      }
      if (n.more_services) {
        const tr = el("tr");
        tr.appendChild(el("td", { colspan: 6 }, n.site + ": " + n.more_services + " more services not shown"));
        rows.push(tr);
      }
    }
    if (!rows.length) {
      const tr = el("tr");
      tr.appendChild(el("td", { colspan: 6 }, "No services known."));
      rows.push(tr);
    }
    body.replaceChildren(...rows);
  }

  // -- focus and keys: a re-render keeps the keyboard user's place -------------------------

  function focusedKey() {
    const a = document.activeElement;
    if (!a || !a.getAttribute) return null;
    const k = a.getAttribute("data-key");
    if (!k) return null;
    return { key: k, inMap: !!a.closest("#map") };
  }

  function restoreFocus(saved) {
    if (!saved) return;
    const scope = saved.inMap ? "#map" : "main table";
    for (const node of document.querySelectorAll(scope + " [data-key]")) {
      if (node.getAttribute("data-key") === saved.key) {
        node.focus({ preventScroll: true });
        return;
      }
    }
  }

  function onMapKey(event) {
    const node = event.target.closest && event.target.closest(".node");
    if (!node) return;
    const all = Array.from(document.querySelectorAll("#map .node"));
    const i = all.indexOf(node);
    let next = null;
    if (event.key === "ArrowRight" || event.key === "ArrowDown") next = all[(i + 1) % all.length];
    else if (event.key === "ArrowLeft" || event.key === "ArrowUp") next = all[(i - 1 + all.length) % all.length];
    else if (event.key === "Home") next = all[0];
    else if (event.key === "End") next = all[all.length - 1];
    else if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      showRow(node.getAttribute("data-key"));
      return;
    }
    if (next) {
      event.preventDefault();
      next.focus();
    }
  }

  function showRow(k) {
    for (const tr of document.querySelectorAll("#sites tbody tr")) {
      const hit = tr.getAttribute("data-key") === k;
      tr.classList.toggle("highlight", hit);
      if (hit) tr.focus();
    }
  }

  // -- polling ---------------------------------------------------------------------------

  function setStatus(text, failed, when) {
    // The live region changes only when what it says changes (a screen reader reads it out).
    const status = document.getElementById("status");
    if (status.textContent !== text) status.textContent = text;
    status.classList.toggle("failed", failed);
    document.body.classList.toggle("stale", failed);
    document.getElementById("updated").textContent = when;
  }

  function render(doc) {
    const saved = focusedKey();
    document.getElementById("site-name").textContent = doc.site;
    document.title = "Isthmus overlay: " + doc.site;
    drawMap(doc);
    drawSites(doc);
    drawServices(doc);
    restoreFocus(saved);
    document.body.dataset.renders = String(Number(document.body.dataset.renders || 0) + 1);
    const down = doc.nodes.filter((n) => n.state === "down").map((n) => n.site);
    const degraded = doc.nodes.filter((n) => n.state === "degraded").map((n) => n.site);
    let summary = doc.nodes.length + " sites";
    summary += down.length ? "; down: " + down.join(", ") : "; none down";
    if (degraded.length) summary += "; degraded: " + degraded.join(", ");
    setStatus(summary + ".", false, "Updated " + new Date().toLocaleTimeString() + ".");
  }

  async function poll() {
    timer = null;
    if (inFlight) return;
    inFlight = true;
    const abort = new AbortController();
    const guard = setTimeout(() => abort.abort(), FETCH_TIMEOUT_MS);
    try {
      const response = await fetch("overlay", { cache: "no-store", credentials: "omit", signal: abort.signal });
      if (!response.ok) throw new Error("HTTP " + response.status);
      const doc = await response.json();
      lastOk = new Date();
      render(doc);
    } catch (err) {
      const since = lastOk ? "last update " + lastOk.toLocaleTimeString() : "no update yet";
      setStatus("STALE: cannot reach this gateway's /overlay (" + (err && err.message ? err.message : err) +
        "). Retrying.", true, since + ".");
    } finally {
      clearTimeout(guard);
      inFlight = false;
      schedule();
    }
  }

  function schedule() {
    if (timer === null && !document.getElementById("pause").checked) {
      timer = setTimeout(poll, POLL_MS);
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.getElementById("map").addEventListener("keydown", onMapKey);
    document.getElementById("map").addEventListener("click", (event) => {
      const node = event.target.closest && event.target.closest(".node");
      if (node) showRow(node.getAttribute("data-key"));
    });
    document.getElementById("pause").addEventListener("change", (event) => {
      if (event.target.checked) {
        if (timer !== null) clearTimeout(timer);
        timer = null;
      } else {
        poll();
      }
    });
    poll();
  });
})();
