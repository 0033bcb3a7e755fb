// Ember's console: every data call goes to the admin endpoints under /v3/{project}, with
// the token the operator typed (kept in sessionStorage, so it dies with the tab).
"use strict";

const POLL_MS = 2000;
const COLOURS = {
  SUCCESS: "#2e7d32", RUNNING: "#1565c0", RESUMING: "#1565c0", PENDING: "#9e9e9e",
  SUSPENDED: "#9e9e9e", SUSPENDING: "#9e9e9e", FAILURE: "#c62828", REVERTING: "#ef6c00",
  REVERTED: "#ef6c00", REVERT_FAILURE: "#6a1b9a", IGNORE: "#bdbdbd",
};
const $ = (id) => document.getElementById(id);
const cache = new Map(); // url -> {etag, body}: polls send If-None-Match
let timer = null;
let generation = 0;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  for (const c of children) if (c != null) e.append(c);
  return e;
}
function svg(tag, attrs) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}
function badge(state) { return el("span", { class: "state s-" + state, text: state }); }
function showError(msg) { const e = $("error"); e.textContent = msg || ""; e.hidden = !msg; }

function creds() {
  return { token: sessionStorage.getItem("ember.token") || "", project: sessionStorage.getItem("ember.project") || "" };
}

async function api(path, options) {
  const { token, project } = creds();
  if (!token || !project) throw new Error("Type a token and a project id above (an admin's).");
  const url = "/v3/" + encodeURIComponent(project) + path;
  const headers = { "X-Auth-Token": token, "Accept": "application/json" };
  const method = (options && options.method) || "GET";
  const cached = method === "GET" ? cache.get(url) : null;
  if (cached) headers["If-None-Match"] = cached.etag;
  if (options && options.body) headers["Content-Type"] = "application/json";
  const r = await fetch(url, { method, headers, body: options && options.body });
  if (r.status === 304 && cached) return { body: cached.body, changed: false };
  const body = await r.json().catch(() => ({}));
  if (!r.ok) {
    const fault = Object.values(body)[0] || {};
    throw new Error((fault.message || r.statusText) + " (HTTP " + r.status + ")");
  }
  const etag = r.headers.get("ETag");
  if (method === "GET" && etag) cache.set(url, { etag, body });
  return { body, changed: true };
}

// ---- routing: #/?state=..&subject=..  and  #/flow/<id>
function route() {
  clearTimeout(timer);
  generation += 1;
  const hash = location.hash || "#/";
  if (hash.startsWith("#/flow/")) return showFlow(decodeURIComponent(hash.slice(7)), generation);
  const q = new URLSearchParams(hash.split("?")[1] || "");
  return showList(q, generation);
}

function poll(fn, gen) {
  timer = setTimeout(() => { if (gen === generation) fn(); }, POLL_MS);
}
function live(ok) {
  $("live").textContent = ok ? "live · " + new Date().toLocaleTimeString() : "";
}

// ---- the list
const FILTERS = [["state", "f-state"], ["name", "f-name"], ["subject", "f-subject"], ["owner", "f-owner"], ["created_after", "f-after"]];

async function showList(q, gen) {
  $("flow-view").hidden = true;
  $("list-view").hidden = false;
  for (const [k, id] of FILTERS) $(id).value = q.get(k) || "";
  const query = new URLSearchParams();
  for (const [k] of FILTERS) if (q.get(k)) query.set(k, q.get(k));
  query.set("limit", "200");
  try {
    const { body, changed } = await api("/flows?" + query);
    if (gen !== generation) return;
    showError("");
    if (changed || !$("flows").tBodies[0].rows.length) renderList(body.flows || []);
    live(true);
  } catch (e) {
    if (gen !== generation) return;
    showError(e.message);
    live(false);
  }
  poll(() => showList(q, gen), gen);
}

function renderList(flows) {
  const tbody = $("flows").tBodies[0];
  tbody.replaceChildren();
  for (const f of flows) {
    const tr = el("tr", { "data-flow": f.id, "data-state": f.state },
      el("td", { class: "id" }, el("a", { href: "#/flow/" + encodeURIComponent(f.id), text: f.id })),
      el("td", { text: f.name }),
      el("td", {}, badge(f.state)),
      el("td", { class: "id" }, f.subject ? subjectLink(f.subject) : null),
      el("td", { class: "id", text: f.owner || "" }),
      el("td", { text: f.created_at || "" }),
      el("td", { text: f.updated_at || "" }));
    tbody.append(tr);
  }
  $("flows-empty").hidden = flows.length > 0;
}

function subjectLink(subject) {
  return el("a", { href: "#/?subject=" + encodeURIComponent(subject), class: "subject", title: "The flows that touched " + subject, text: subject });
}

$("filters").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const q = new URLSearchParams();
  for (const [k, id] of FILTERS) if ($(id).value.trim()) q.set(k, $(id).value.trim());
  location.hash = "#/?" + q;
});
$("f-clear").addEventListener("click", () => { location.hash = "#/"; });

// ---- one flow
let shown = null; // the flow on screen

async function showFlow(id, gen) {
  $("list-view").hidden = true;
  $("flow-view").hidden = false;
  const path = "/flows/" + encodeURIComponent(id);
  try {
    const { body, changed } = await api(path);
    if (gen !== generation) return;
    showError("");
    if (changed || !shown || shown.id !== id) {
      shown = body.flow;
      let graph = null;
      try { graph = (await api(path + "/graph?format=json")).body.graph; } catch (e) { graph = null; }
      if (gen !== generation) return;
      renderFlow(body.flow, graph);
    }
    live(true);
  } catch (e) {
    if (gen !== generation) return;
    showError(e.message);
    live(false);
  }
  poll(() => showFlow(id, gen), gen);
}

function renderFlow(f, graph) {
  $("flow-name").textContent = f.name;
  const st = $("flow-state");
  st.textContent = f.state;
  st.className = "state s-" + f.state;
  const facts = $("flow-facts");
  facts.replaceChildren();
  const fact = (k, v) => facts.append(el("dt", { text: k }), el("dd", {}, v));
  fact("id", f.id);
  fact("resource", f.subject ? subjectLink(f.subject) : "-");
  fact("topic", f.topic);
  fact("owner", f.owner || "-");
  fact("claim epoch", String(f.claim_epoch));
  fact("created", f.created_at);
  fact("updated", f.updated_at);
  const finished = f.state === "SUCCESS" || f.state === "REVERTED";
  $("resume").disabled = finished;
  $("revert").disabled = finished;
  renderGraph(f.atoms || [], graph);
  renderTimeline(f);
}

// Layered layout: an atom's layer is its longest path from a source; within a layer atoms
// keep the flow's order. Without a graph (an unknown flow name) the atoms form a chain.
function renderGraph(atoms, graph) {
  const names = graph ? graph.atoms : atoms.map((a) => a.name);
  const edges = graph ? graph.edges : names.slice(1).map((n, i) => [names[i], n]);
  const state = new Map(atoms.map((a) => [a.name, a.state]));
  const layer = new Map(names.map((n) => [n, 0]));
  for (let pass = 0; pass < names.length; pass++) {
    let moved = false;
    for (const [u, v] of edges) {
      if (layer.get(v) < layer.get(u) + 1) { layer.set(v, layer.get(u) + 1); moved = true; }
    }
    if (!moved) break;
  }
  const rows = [];
  for (const n of names) (rows[layer.get(n)] = rows[layer.get(n)] || []).push(n);
  const W = 250, H = 34, GX = 30, GY = 34, PAD = 16;
  const widest = Math.max(1, ...rows.map((r) => r.length));
  const width = PAD * 2 + widest * W + (widest - 1) * GX;
  const height = PAD * 2 + rows.length * H + Math.max(0, rows.length - 1) * GY;
  const pos = new Map();
  rows.forEach((r, y) => {
    const rowWidth = r.length * W + (r.length - 1) * GX;
    r.forEach((n, x) => pos.set(n, { x: (width - rowWidth) / 2 + x * (W + GX), y: PAD + y * (H + GY) }));
  });
  const root = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "flow graph" });
  const defs = svg("defs");
  const marker = svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto" });
  marker.append(svg("path", { d: "M0,0 L10,5 L0,10 z", fill: "#607d8b" }));
  defs.append(marker);
  root.append(defs);
  for (const [u, v] of edges) {
    const a = pos.get(u), b = pos.get(v);
    if (!a || !b) continue;
    const x1 = a.x + W / 2, y1 = a.y + H, x2 = b.x + W / 2, y2 = b.y;
    const my = (y1 + y2) / 2;
    root.append(svg("path", { d: `M${x1},${y1} C${x1},${my} ${x2},${my} ${x2},${y2}`, fill: "none", stroke: "#607d8b", "stroke-width": 1.5, "marker-end": "url(#arrow)" }));
  }
  for (const n of names) {
    const p = pos.get(n);
    const s = state.get(n) || "PENDING";
    const g = svg("g", { class: "atom", "data-atom": n, "data-state": s });
    g.append(svg("rect", { x: p.x, y: p.y, width: W, height: H, rx: 5, fill: COLOURS[s] || "#9e9e9e" }));
    const t = svg("text", { x: p.x + W / 2, y: p.y + H / 2 + 4, "text-anchor": "middle" });
    t.textContent = n.length > 36 ? n.slice(0, 35) + "…" : n;
    const title = svg("title");
    title.textContent = n + ": " + s;
    g.append(t, title);
    root.append(g);
  }
  $("graph").replaceChildren(root);
  const legend = document.querySelector(".legend");
  legend.replaceChildren(...[...new Set(names.map((n) => state.get(n) || "PENDING"))].map(badge));
}

function ms(t) { const v = Date.parse(t && !/Z|[+-]\d\d:?\d\d$/.test(t) ? t + "Z" : t); return isNaN(v) ? null : v; }

function failureText(f) {
  if (!f) return "";
  const causes = (f.causes || []).map((c) => "  caused by: " + (typeof c === "string" ? c : JSON.stringify(c)));
  return [f.kind + ": " + f.message, ...causes].join("\n");
}

function renderTimeline(f) {
  const atoms = (f.atoms || []).slice().sort((a, b) => (ms(a.created_at) || 0) - (ms(b.created_at) || 0));
  const start = ms(f.created_at) || Math.min(...atoms.map((a) => ms(a.created_at) || Infinity));
  const end = Math.max(start + 1, ms(f.updated_at) || 0, ...atoms.map((a) => ms(a.updated_at) || 0));
  const span = end - start;
  const tbody = $("timeline").tBodies[0];
  tbody.replaceChildren();
  for (const a of atoms) {
    const s0 = (ms(a.created_at) || start) - start;
    const bar = el("div", { class: "bar", style: `margin-left:${(100 * s0 / span).toFixed(2)}%;width:${Math.max(0.5, 100 * a.duration_ms / span).toFixed(2)}%;background:${COLOURS[a.state] || "#9e9e9e"}` });
    const fail = [a.failure && failureText(a.failure), a.revert_failure && "revert: " + failureText(a.revert_failure)].filter(Boolean).join("\n");
    const attempts = String(a.attempts) + (a.retry_attempts ? " (retries " + a.retry_attempts + ")" : "");
    tbody.append(el("tr", { "data-atom": a.name, "data-state": a.state },
      el("td", { text: a.name }),
      el("td", {}, badge(a.state), a.intention && a.intention !== "EXECUTE" ? " → " + a.intention : null),
      el("td", { text: attempts }),
      el("td", { text: "+" + s0 + " ms" }),
      el("td", { text: a.duration_ms + " ms" }),
      el("td", {}, bar),
      el("td", { class: "failure", text: fail })));
  }
}

// ---- actions, behind a confirmation
function confirmThen(text) {
  return new Promise((resolve) => {
    const d = $("confirm");
    $("confirm-text").textContent = text;
    d.returnValue = "";
    d.addEventListener("close", () => resolve(d.returnValue === "ok"), { once: true });
    d.showModal();
  });
}

async function act(action, text) {
  if (!shown) return;
  if (!(await confirmThen(text))) return;
  try {
    await api("/flows/" + encodeURIComponent(shown.id) + "/action", { method: "POST", body: JSON.stringify({ [action]: {} }) });
    showError("");
  } catch (e) {
    showError(e.message);
  }
  route();
}

$("resume").addEventListener("click", () => act("resume",
  "Resume this flow? Its owner and lease are cleared and a worker of its topic takes it over at once; a previous owner still running it is fenced out."));
$("revert").addEventListener("click", () => act("revert",
  "Revert this flow? Every step that ran is reverted in reverse order by a worker of its topic. This cannot be undone."));

// ---- the token
$("login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem("ember.token", $("token").value.trim());
  let project = $("project").value.trim();
  const t = $("token").value.trim();
  if (!project && /^[^:]+:[^:]+$/.test(t)) project = t.split(":")[1];
  sessionStorage.setItem("ember.project", project);
  $("project").value = project;
  cache.clear();
  route();
});
$("token").value = creds().token;
$("project").value = creds().project;
window.addEventListener("hashchange", route);
route();
