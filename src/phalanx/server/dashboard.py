"""The live dashboard served at each node's admin `/`: one static page, no build step.

The page opens an EventSource on `/events` (server-sent events: one JSON snapshot of the node's
`/status` every half second) and draws from it: the topology (regions, zones, nodes with their
health colour, the shard replicas each node holds, leaders starred), ops/s and commit latency
sparklines (this node's view), the shards with their redundancy, and the recent events
(elections, failovers, node deaths, re-replication, splits). Buttons call the admin API:
switchover (`POST /failover {"shard": n}`) and drain / readmit (`POST /drain|/readmit
{"node": id}`), with the admin token typed into the page when the node has one.

Rules of this file: the page is plain HTML + CSS + JavaScript in one string (no framework, no
CDN: the machines have no internet); every value inserted into the DOM goes through
`textContent` or an escaping helper, never raw `innerHTML` of server data.
"""

from __future__ import annotations

DASHBOARD_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>phalanx __NODE__</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
:root { --ok:#1f9d55; --warn:#d69e2e; --bad:#e53e3e; --mute:#a0aec0; --ink:#1a202c;
        --line:#e2e8f0; --bg:#f7fafc; }
* { box-sizing: border-box; }
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: var(--ink); background: var(--bg); }
header { display:flex; gap:1.5rem; align-items:center; padding: .8rem 1.2rem;
         background:#1a202c; color:#fff; flex-wrap: wrap; }
header h1 { font-size: 1.2rem; margin:0; }
.badge { padding:.15rem .55rem; border-radius: 1rem; font-weight:600; font-size:.8rem; }
.badge.ok { background: var(--ok); } .badge.bad { background: var(--bad); }
.badge.warn { background: var(--warn); }
main { padding: 1rem 1.2rem; display:grid; gap:1rem;
       grid-template-columns: minmax(0,2fr) minmax(0,1fr); }
section { background:#fff; border:1px solid var(--line); border-radius:.5rem; padding:.8rem; }
section h2 { font-size: .95rem; margin: 0 0 .6rem 0; color:#4a5568; }
.regions { display:flex; gap:.8rem; flex-wrap:wrap; }
.region { border:1px dashed var(--mute); border-radius:.5rem; padding:.5rem; }
.region > .label, .zone > .label { font-size:.75rem; color:#718096; margin-bottom:.3rem; }
.zones { display:flex; gap:.6rem; }
.zone { background: var(--bg); border-radius:.4rem; padding:.4rem; min-width: 9rem; }
.node { border-left: 6px solid var(--ok); background:#fff; border-radius:.3rem; padding:.35rem .5rem;
        margin:.3rem 0; box-shadow: 0 1px 2px rgba(0,0,0,.08); }
.node.dead { border-left-color: var(--bad); opacity:.75; }
.node.draining, .node.decommissioned { border-left-color: var(--warn); }
.node.unreachable { border-left-color: var(--mute); }
.node .name { font-weight:700; }
.node .state, .node .host { font-size:.72rem; color:#718096; margin-left:.3rem; }
.chips { display:flex; flex-wrap:wrap; gap:.2rem; margin-top:.25rem; }
.chip { font-size:.72rem; border:1px solid var(--line); border-radius:.25rem; padding:0 .3rem; }
.chip.leader { background:#fefcbf; border-color:#d69e2e; font-weight:700; }
table { border-collapse: collapse; width:100%; font-size:.85rem; }
th, td { text-align:left; padding:.25rem .4rem; border-bottom:1px solid var(--line); }
td.full { color: var(--ok); font-weight:600; } td.repairing { color: var(--warn); font-weight:600; }
td.noleader { color: var(--bad); font-weight:700; }
button { font-size:.75rem; padding:.1rem .45rem; cursor:pointer; }
.spark { width:100%; height:60px; }
.events { list-style:none; padding:0; margin:0; max-height: 22rem; overflow:auto; font-size:.8rem; }
.events li { padding:.2rem 0; border-bottom:1px solid var(--line); }
.events .kind { font-weight:600; margin-right:.3rem; }
.muted { color:#718096; font-size:.8rem; }
#conn.bad { background: var(--bad); }
</style></head>
<body>
<header>
  <h1>phalanx <span id="node">__NODE__</span></h1>
  <span>map <b id="map_version">-</b></span>
  <span>goal <b id="goal">-</b></span>
  <span id="redundancy" class="badge warn">redundancy: ?</span>
  <span id="conn" class="badge warn">connecting</span>
  <label class="muted" style="color:#cbd5e0">admin token
    <input id="token" type="password" size="10" autocomplete="off"></label>
</header>
<main>
  <div style="display:grid; gap:1rem">
    <section><h2>Topology <span class="muted">(leaders starred; colour = node health)</span></h2>
      <div id="topology" class="regions"></div></section>
    <section><h2>Shards</h2>
      <table><thead><tr><th>shard</th><th>slots</th><th>leader</th><th>replicas</th>
        <th>redundancy</th><th></th></tr></thead><tbody id="shards"></tbody></table>
      <div id="action" class="muted"></div></section>
  </div>
  <div style="display:grid; gap:1rem; align-content:start">
    <section><h2>This node: ops/s <b id="ops">-</b></h2><svg id="ops_spark" class="spark"></svg>
      <h2>commit latency p99 <b id="lat">-</b> ms</h2><svg id="lat_spark" class="spark"></svg>
    </section>
    <section id="links_section" hidden><h2>Region links <span class="muted">(active-active:
      what this node pulls from each other region)</span></h2>
      <table><thead><tr><th>region</th><th>state</th><th>lag entries</th><th>lag s</th>
        <th>last pull s ago</th><th>last error</th></tr></thead><tbody id="links"></tbody>
      </table></section>
    <section><h2>Recent events</h2><ul id="events" class="events"></ul></section>
    <section><h2>API</h2><div class="muted">
      <a href="/health">/health</a> <a href="/ready">/ready</a> <a href="/primary">/primary</a>
      <a href="/replica">/replica</a> <a href="/status">/status</a> <a href="/metrics">/metrics</a>
      <a href="/analyze">/analyze</a> /events (SSE); POST /failover /drain /decommission
      /readmit /split /merge; /faults (chaos lab only)</div></section>
  </div>
</main>
<script>
"use strict";
const history = { ops: [], lat: [] };
let last = null;
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}
function spark(svg, values) {
  const w = svg.clientWidth || 300, h = svg.clientHeight || 60;
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  if (values.length < 2) return;
  const max = Math.max(...values, 1e-9);
  const pts = values.map((v, i) =>
    (i * w / (values.length - 1)).toFixed(1) + "," + (h - 2 - (v / max) * (h - 4)).toFixed(1));
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", pts.join(" "));
  line.setAttribute("fill", "none"); line.setAttribute("stroke", "#3182ce");
  line.setAttribute("stroke-width", "2");
  svg.appendChild(line);
}
async function act(path, body, what) {
  const headers = { "Content-Type": "application/json" };
  const token = document.getElementById("token").value;
  if (token) headers["Authorization"] = "Bearer " + token;
  const out = document.getElementById("action");
  out.textContent = what + " ...";
  try {
    const r = await fetch(path, { method: "POST", headers, body: JSON.stringify(body) });
    const j = await r.json();
    out.textContent = what + ": " + (r.ok ? JSON.stringify(j) : (j.error || r.status));
  } catch (e) { out.textContent = what + " failed: " + e; }
}
function render(s) {
  document.getElementById("map_version").textContent = s.map_version;
  document.getElementById("goal").textContent = s.survival_goal;
  const connected = {};
  for (const p of s.peers || []) connected[p.id] = p.connected !== false;
  connected[s.node] = true;
  // The map calls a silent node alive until dead_after; an unreachable one already costs
  // redundancy, so the badge says so at once.
  const unreachable = (s.nodes || []).filter(n => n.state === "alive" && !connected[n.id])
    .map(n => n.id);
  const red = document.getElementById("redundancy");
  if (!s.fully_replicated) { red.textContent = "repairing"; red.className = "badge warn"; }
  else if (unreachable.length) {
    red.textContent = "degraded: " + unreachable.join(", ") + " unreachable";
    red.className = "badge bad";
  } else { red.textContent = "fully redundant"; red.className = "badge ok"; }
  const leads = {}, holds = {};
  for (const sh of s.shards || []) {
    if (sh.leader) leads[sh.leader + "/" + sh.id] = true;
    for (const n of (sh.voters && sh.voters.length ? sh.voters : sh.replicas))
      (holds[n] = holds[n] || []).push(sh.id);
  }
  const topo = document.getElementById("topology");
  while (topo.firstChild) topo.removeChild(topo.firstChild);
  const regions = {};
  for (const n of s.nodes || []) {
    ((regions[n.region] = regions[n.region] || {})[n.zone] =
      regions[n.region][n.zone] || []).push(n);
  }
  for (const region of Object.keys(regions).sort()) {
    const r = el("div", "region"); r.appendChild(el("div", "label", "region " + region));
    const zs = el("div", "zones");
    for (const zone of Object.keys(regions[region]).sort()) {
      const z = el("div", "zone"); z.appendChild(el("div", "label", "zone " + zone));
      for (const n of regions[region][zone].sort((a, b) => a.id.localeCompare(b.id))) {
        let health = n.state;
        if (n.state === "alive" && !connected[n.id]) health = "unreachable";
        const card = el("div", "node " + health);
        card.id = "node-" + n.id;
        card.dataset.state = health;
        card.appendChild(el("span", "name", n.id));
        card.appendChild(el("span", "state", health));
        if (n.host) card.appendChild(el("span", "host", "host " + n.host));
        const chips = el("div", "chips");
        for (const sid of (holds[n.id] || []).sort((a, b) => a - b)) {
          const lead = leads[n.id + "/" + sid];
          chips.appendChild(el("span", "chip" + (lead ? " leader" : ""),
                               (lead ? "\\u2605 " : "") + "shard " + sid));
        }
        card.appendChild(chips);
        if (n.state === "alive" && n.id) {
          const b = el("button", null, "drain");
          b.onclick = () => act("/drain", { node: n.id }, "drain " + n.id);
          card.appendChild(b);
        } else if (n.state === "draining") {
          const b = el("button", null, "readmit");
          b.onclick = () => act("/readmit", { node: n.id }, "readmit " + n.id);
          card.appendChild(b);
        }
        z.appendChild(card);
      }
      zs.appendChild(z);
    }
    r.appendChild(zs); topo.appendChild(r);
  }
  const body = document.getElementById("shards");
  while (body.firstChild) body.removeChild(body.firstChild);
  for (const sh of s.shards || []) {
    const tr = el("tr"); tr.id = "shard-" + sh.id;
    tr.appendChild(el("td", null, sh.id));
    tr.appendChild(el("td", null, (sh.slots || []).map(r => r[0] + "-" + r[1]).join(",")));
    const leader = el("td", sh.leader ? "leader" : "noleader", sh.leader || "none");
    leader.dataset.leader = sh.leader || "";
    tr.appendChild(leader);
    tr.appendChild(el("td", null, (sh.replicas || []).join(", ")));
    tr.appendChild(el("td", sh.fully_replicated ? "full" : "repairing",
                      sh.fully_replicated ? "full" : "repairing"));
    const cell = el("td"); const b = el("button", null, "switchover");
    b.onclick = () => act("/failover", { shard: sh.id }, "switchover shard " + sh.id);
    cell.appendChild(b); tr.appendChild(cell); body.appendChild(tr);
  }
  const links = ((s.active_active || {}).links) || [];
  document.getElementById("links_section").hidden = !s.active_active;
  const lbody = document.getElementById("links");
  while (lbody.firstChild) lbody.removeChild(lbody.firstChild);
  for (const l of links) {
    const tr = el("tr"); tr.id = "link-" + l.region; tr.dataset.state = l.state;
    tr.appendChild(el("td", null, l.region));
    tr.appendChild(el("td", l.state === "up" ? "full" : "repairing", l.state));
    tr.appendChild(el("td", null, l.lag_entries));
    tr.appendChild(el("td", null, l.lag_seconds));
    tr.appendChild(el("td", null, l.last_ok_seconds_ago === null ? "never" :
                                  l.last_ok_seconds_ago));
    tr.appendChild(el("td", "muted", l.last_error || ""));
    lbody.appendChild(tr);
  }
  const now = performance.now() / 1000;
  if (last && s.commands_total >= last.commands) {
    history.ops.push((s.commands_total - last.commands) / Math.max(0.05, now - last.t));
  }
  last = { commands: s.commands_total, t: now };
  const p99 = (s.commit_latency_ms || {}).p99;
  history.lat.push(p99 || 0);
  for (const k of ["ops", "lat"]) if (history[k].length > 120) history[k].shift();
  document.getElementById("ops").textContent =
    history.ops.length ? history.ops[history.ops.length - 1].toFixed(0) : "-";
  document.getElementById("lat").textContent = p99 === undefined || p99 === null ? "-" :
    p99.toFixed(1);
  spark(document.getElementById("ops_spark"), history.ops);
  spark(document.getElementById("lat_spark"), history.lat);
  const list = document.getElementById("events");
  while (list.firstChild) list.removeChild(list.firstChild);
  for (const e of (s.events || []).slice().reverse().slice(0, 40)) {
    const li = el("li");
    li.appendChild(el("span", "muted", new Date(e.time * 1000).toLocaleTimeString() + " "));
    li.appendChild(el("span", "kind", e.kind));
    li.appendChild(el("span", null, e.text));
    list.appendChild(li);
  }
  document.body.dataset.updated = String(Date.now());
}
function connect() {
  const conn = document.getElementById("conn");
  const source = new EventSource("/events");
  source.onopen = () => { conn.textContent = "live"; conn.className = "badge ok"; };
  source.onmessage = (m) => { try { render(JSON.parse(m.data)); } catch (e) { console.error(e); } };
  source.onerror = () => { conn.textContent = "reconnecting"; conn.className = "badge bad"; };
}
connect();
</script>
</body></html>
"""


def dashboard_page(node_id: str) -> bytes:
    """The page for `node_id` (the id is escaped for HTML)."""
    safe = (node_id.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))
    return DASHBOARD_HTML.replace("__NODE__", safe).encode()


__all__ = ["dashboard_page"]
