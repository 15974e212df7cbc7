// The broker's operator dashboard. Plain JavaScript, no dependencies: the
// state arrives as server-sent events from /dashboard/api/events (every
// second), or by polling /dashboard/api/state when events do not work.
"use strict";

const API = "/dashboard/api";
const ACTION_HEADERS = { "X-Broker-Dashboard": "1" };
const THUMB_EVERY_MS = 2000;
const REASON_COLORS = {
  RELEASED: "#2e5bda", STREAM_CLOSED: "#7a5af8", TTL_EXPIRED: "#f79009", MAX_LIFETIME: "#dc6803",
  REVOKED: "#d92d20", BROWSER_CRASHED: "#912018", SHUTDOWN: "#667085", PAGE_CRASHED: "#c11574",
};

const $ = (sel) => document.querySelector(sel);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

function duration(s) {
  if (s < 0) s = 0;
  if (s < 60) return s.toFixed(s < 10 ? 1 : 0) + "s";
  const m = Math.floor(s / 60);
  if (m < 60) return m + "m " + Math.floor(s % 60) + "s";
  const h = Math.floor(m / 60);
  return h + "h " + (m % 60) + "m";
}

function mib(bytes) {
  return bytes ? (bytes / (1 << 20)).toFixed(0) + " MiB" : "–";
}

function toast(msg) {
  const t = $("#toast");
  t.textContent = msg;
  t.classList.add("show");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => t.classList.remove("show"), 3000);
}

function gotoLogin() {
  location.href = "/dashboard/login";
}

async function post(path) {
  const resp = await fetch(API + path, { method: "POST", headers: ACTION_HEADERS, credentials: "same-origin" });
  if (resp.status === 401) gotoLogin();
  let body = {};
  try { body = await resp.json(); } catch (e) { /* not JSON */ }
  if (!resp.ok) throw new Error(body.error || resp.status + " " + resp.statusText);
  return body;
}

// Summary cards.
function card(label, value, sub, fraction) {
  const c = el("div", { class: "card" }, el("div", { class: "label", text: label }), el("div", { class: "value", text: value }));
  if (sub) c.append(el("div", { class: "sub", text: sub }));
  if (fraction !== undefined) {
    const bar = el("span");
    bar.style.width = Math.min(100, Math.round(fraction * 100)) + "%";
    c.append(el("div", { class: "meter" }, bar));
  }
  return c;
}

function renderSummary(s) {
  const c = s.capacity;
  const cards = [
    card("Leases", c.active + " / " + c.capacity, c.closing + " closing, " + c.opening + " opening", c.capacity ? (c.active + c.opening) / c.capacity : 0),
    card("Queue", String(c.waiting), c.waiting ? "oldest waited " + duration(c.oldest_wait_seconds) : "nobody waits"),
    card("Warm pool", String(c.warm_contexts), c.warm_hits + " hits, " + c.warm_misses + " misses"),
    card("Sticky sessions", String(c.sessions_held + c.sessions_warm), c.sessions_held + " held, " + c.sessions_warm + " warm"),
    card("Browsers", String(s.browsers.length), mib(s.browsers.reduce((a, b) => a + b.pss_bytes, 0)) + " (PSS)"),
    card("Memory", c.memory_low ? "low" : "ok", c.memory_detail || "no --min-free-memory"),
    card("Granted", String(s.totals.granted), s.totals.reclaimed + " reclaimed, up " + duration(s.uptime_seconds)),
    card("Crashes", String((s.totals.browser_crashes || 0) + (s.totals.page_crashes || 0) + (s.totals.driver_crashes || 0)),
      (s.totals.browser_crashes || 0) + " browser, " + (s.totals.page_crashes || 0) + " page, " + (s.totals.driver_crashes || 0) + " driver"),
  ];
  $("#summary").replaceChildren(...cards);
}

// The lease table: rows are kept by lease id, so that thumbnails do not
// reload with every update.
const rows = new Map();

function thumbURL(id) {
  return API + "/leases/" + encodeURIComponent(id) + "/thumbnail?t=" + Date.now();
}

function newLeaseRow(l) {
  const img = el("img", { class: "thumb", alt: "page of lease " + l.id, src: thumbURL(l.id), "data-lease": l.id });
  img.addEventListener("click", () => zoom(l.id));
  const revoke = el("button", { class: "danger revoke", type: "button", text: "Revoke" });
  revoke.addEventListener("click", () => revokeLease(l.id));
  const tr = el("tr", { "data-lease": l.id });
  const cells = {};
  for (const k of ["id", "principal", "labels", "session", "age", "idle", "command", "state"]) cells[k] = el("td");
  cells.id.className = "mono";
  cells.session.className = "mono";
  for (const k of ["age", "idle"]) cells[k].className = "num";
  tr.append(el("td", {}, img), cells.id, cells.principal, cells.labels, cells.session, cells.age, cells.idle, cells.command, cells.state, el("td", {}, revoke));
  const row = { tr, img, cells, lastThumb: Date.now(), loading: false };
  cells.id.textContent = l.id;
  return row;
}

function refreshThumb(row, id) {
  if (row.loading || Date.now() - row.lastThumb < THUMB_EVERY_MS) return;
  row.loading = true;
  row.lastThumb = Date.now();
  // Swap only once loaded, so the picture never blinks.
  const next = new Image();
  next.onload = () => { row.img.src = next.src; row.loading = false; };
  next.onerror = () => { row.loading = false; };
  next.src = thumbURL(id);
}

function renderLeases(leases) {
  const body = $("#leases tbody");
  const seen = new Set();
  for (const l of leases) {
    seen.add(l.id);
    let row = rows.get(l.id);
    if (!row) {
      row = newLeaseRow(l);
      rows.set(l.id, row);
    }
    body.append(row.tr); // keeps the server's order, oldest first
    const c = row.cells;
    c.principal.textContent = l.principal || "–";
    c.labels.replaceChildren(...Object.entries(l.labels).map(([k, v]) => el("span", { class: "label-chip", text: k + "=" + v })));
    c.session.textContent = l.session_key || "–";
    c.age.textContent = duration(l.age_seconds);
    c.idle.textContent = duration(l.idle_seconds);
    c.idle.title = "expires in " + duration(l.expires_in_seconds);
    c.command.textContent = l.last_command ? l.last_command + " (" + l.commands + ")" : "–";
    c.state.textContent = l.reason ? l.state + " (" + l.reason + ")" : l.state;
    c.state.className = "state-" + l.state;
    if (l.state === "ACTIVE") refreshThumb(row, l.id);
  }
  for (const [id, row] of rows) {
    if (!seen.has(id)) {
      row.tr.remove();
      rows.delete(id);
    }
  }
  $("#lease-count").textContent = "(" + leases.length + ")";
  $("#no-leases").hidden = leases.length > 0;
  $("#leases").hidden = leases.length === 0;
}

function renderTable(sel, items, cells) {
  const body = $(sel + " tbody");
  body.replaceChildren(...items.map((it) => el("tr", {}, ...cells(it).map((v) => el("td", { text: String(v) })))));
  $(sel).hidden = items.length === 0;
}

function renderQueue(q) {
  renderTable("#queue", q, (w) => [w.position, duration(w.waited_seconds)]);
  $("#queue-count").textContent = "(" + q.length + ")";
  $("#no-queue").hidden = q.length > 0;
}

function renderBrowsers(bs) {
  renderTable("#browsers", bs, (b) => [b.name, b.remote ? "remote" : (b.pid || "?"), b.contexts + " (" + b.created + " made)", mib(b.pss_bytes), duration(b.age_seconds), b.retiring ? "retiring: " + b.retiring : ""]);
  $("#browser-count").textContent = "(" + bs.length + ")";
  $("#no-browsers").hidden = bs.length > 0;
}

// The fleet: each broker as it last registered; none outside a fleet.
function renderFleet(f) {
  $("#fleet-panel").hidden = !f;
  if (!f) return;
  renderTable("#fleet", f.members, (m) => [m.id + (m.self ? " (this broker)" : ""), m.address,
    m.active + " / " + m.capacity, m.free, m.waiting, m.draining ? "draining" : "serving",
    duration(m.heartbeat_age_seconds) + " ago"]);
  $("#fleet-count").textContent = "(" + f.members.length + " brokers)";
  $("#fleet-error").hidden = !f.error;
  $("#fleet-error").textContent = f.error ? "The fleet cannot be read: " + f.error : "";
}

// The reclaim chart: one stacked bar a minute, as SVG.
const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

function renderReclaims(r) {
  const W = 900, H = 150, top = 10, bottom = 20, left = 30;
  const max = Math.max(1, ...r.minutes.map((m) => Object.values(m.counts).reduce((a, b) => a + b, 0)));
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img", "aria-label": "reclaims per minute, last hour" });
  const plotH = H - top - bottom, bw = (W - left) / r.minutes.length;
  for (const f of [0, 0.5, 1]) {
    if (f === 0.5 && max % 2) continue; // whole numbers only
    const y = top + plotH * (1 - f);
    chart.append(svg("line", { x1: left, x2: W, y1: y, y2: y, stroke: "#e3e6eb" }));
    const t = svg("text", { x: left - 4, y: y + 4, "text-anchor": "end", "font-size": 10, fill: "#667085" });
    t.textContent = String(max * f);
    chart.append(t);
  }
  r.minutes.forEach((m, i) => {
    let y = top + plotH;
    for (const reason of r.reasons) {
      const n = m.counts[reason] || 0;
      if (!n) continue;
      const h = (n / max) * plotH;
      y -= h;
      const bar = svg("rect", { x: left + i * bw + 1, y, width: Math.max(1, bw - 2), height: h, fill: REASON_COLORS[reason] || "#999" });
      const title = svg("title", {});
      title.textContent = new Date(m.start).toLocaleTimeString() + ": " + n + " " + reason;
      bar.append(title);
      chart.append(bar);
    }
  });
  for (const [i, label] of [[0, "60 min ago"], [30, "30 min ago"], [59, "now"]]) {
    const t = svg("text", { x: left + i * bw + bw / 2, y: H - 5, "text-anchor": i === 0 ? "start" : i === 59 ? "end" : "middle", "font-size": 10, fill: "#667085" });
    t.textContent = label;
    chart.append(t);
  }
  $("#chart").replaceChildren(chart);
  const total = Object.values(r.last_hour).reduce((a, b) => a + b, 0);
  $("#reclaim-count").textContent = "(" + total + ")";
  $("#legend").replaceChildren(...r.reasons.map((reason) => {
    const sw = el("i");
    sw.style.background = REASON_COLORS[reason] || "#999";
    return el("li", {}, sw, reason + " " + (r.last_hour[reason] || 0));
  }));
}

function render(s) {
  renderSummary(s);
  const inv = $("#invariant");
  inv.textContent = s.invariant.text;
  inv.className = s.invariant.ok ? "ok" : "bad";
  renderLeases(s.leases);
  renderQueue(s.queue);
  renderBrowsers(s.browsers);
  renderFleet(s.fleet);
  renderReclaims(s.reclaims);
  const ds = $("#drain-state");
  ds.textContent = s.draining ? "draining: no new leases" : "accepting leases";
  ds.className = "badge" + (s.draining ? " draining" : "");
  $("#drain").hidden = s.draining;
  $("#undrain").hidden = !s.draining;
  $("#logout").hidden = !s.viewer.auth;
  $("#viewer").textContent = s.viewer.auth ? "admin: " + s.viewer.principal : "";
}

// Actions, each confirmed first.
async function revokeLease(id) {
  if (!window.confirm("Revoke lease " + id + "? Its holder gets revoked{REVOKED} and its browser context is closed.")) return;
  try {
    const r = await post("/leases/" + encodeURIComponent(id) + "/revoke");
    toast("Lease " + id + " revoked (" + r.reason + ")");
  } catch (e) {
    toast("Revoke failed: " + e.message);
  }
  refresh();
}

async function setDrain(on) {
  const q = on ? "Drain the broker? New acquires fail and the queue is emptied; live leases go on." : "Undrain the broker? It grants leases again.";
  if (!window.confirm(q)) return;
  try {
    await post(on ? "/drain" : "/undrain");
    toast(on ? "Draining" : "Accepting leases again");
  } catch (e) {
    toast("Failed: " + e.message);
  }
  refresh();
}

function zoom(id) {
  const d = $("#zoom");
  d.querySelector("img").src = thumbURL(id);
  d.showModal();
}

// Live updates.
function setLive(ok, text) {
  const b = $("#live");
  b.textContent = text;
  b.className = "badge " + (ok ? "live" : "down");
}

async function refresh() {
  try {
    const resp = await fetch(API + "/state", { credentials: "same-origin" });
    if (resp.status === 401 || resp.status === 403) return gotoLogin();
    if (!resp.ok) throw new Error(resp.statusText);
    render(await resp.json());
    return true;
  } catch (e) {
    setLive(false, "disconnected");
    return false;
  }
}

function listen() {
  if (!window.EventSource) {
    setLive(true, "polling");
    setInterval(refresh, 2000);
    refresh();
    return;
  }
  const es = new EventSource(API + "/events");
  es.onmessage = (ev) => {
    setLive(true, "live");
    render(JSON.parse(ev.data));
  };
  es.addEventListener("auth", () => { es.close(); gotoLogin(); });
  es.onerror = () => {
    setLive(false, "reconnecting…");
    refresh(); // says whether it is the login that ended
  };
}

document.addEventListener("DOMContentLoaded", () => {
  $("#drain").addEventListener("click", () => setDrain(true));
  $("#undrain").addEventListener("click", () => setDrain(false));
  $("#logout").addEventListener("click", async () => {
    await fetch("/dashboard/logout", { method: "POST", headers: ACTION_HEADERS, credentials: "same-origin" });
    gotoLogin();
  });
  const d = $("#zoom");
  d.addEventListener("click", () => d.close());
  listen();
});
