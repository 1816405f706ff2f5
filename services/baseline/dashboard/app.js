// VoxGuard NOC dashboard: polls the /v1 API and listens to /v1/events; no build step, no CDN.
"use strict";

const state = { key: localStorage.getItem("voxguard.key") || "", charts: new Map(), live: new Map(), ws: null };
const $ = (sel) => document.querySelector(sel);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
const items = (x) => (Array.isArray(x) ? x : (x && (x.items || x.incidents || x.mitigations || x.deliveries || x.components || x.targets || x.points)) || []);
const span = (s) => (s < 90 ? `${s.toFixed(0)} s` : s < 5400 ? `${(s / 60).toFixed(0)} min` : null);
const ago = (t) => { if (!t) return ""; const s = Math.max(0, (Date.now() - Date.parse(t)) / 1000); return span(s) ? `${span(s)} ago` : new Date(t).toLocaleString(); };
const until = (t) => { if (!t) return "never"; const s = (Date.parse(t) - Date.now()) / 1000; return s <= 0 ? "expired" : span(s) ? `in ${span(s)}` : new Date(t).toLocaleString(); };

async function api(path, opts = {}) {
  const r = await fetch(path, { ...opts, headers: { Authorization: `Bearer ${state.key}`, ...(opts.headers || {}) } });
  if (r.status === 401 || r.status === 403) throw new Error(`${path}: ${r.status} (check the API key and its scope)`);
  if (r.status === 404) return null; // that service is not part of this deployment (yet)
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.status === 204 ? {} : r.json();
}

function rows(tbody, html, cols) {
  tbody.innerHTML = html.length ? html.join("") : `<tr><td class="empty" colspan="${cols}">none</td></tr>`;
}

// "open" and "mitigated" are both ongoing: an incident stays listed once its rules are announced
async function refreshIncidents() {
  const lists = await Promise.all(["open", "mitigated"].map((s) => api(`/v1/incidents?state=${s}`)));
  const open = lists.flatMap(items).filter((i) => i.state !== "resolved");
  open.sort((a, b) => Date.parse(b.opened_at) - Date.parse(a.opened_at));
  const top = (i) => (i.top_sources?.length ? i.top_sources : i.top_prefixes || []).slice(0, 3).map((s) => s.source);
  rows($("#incidents tbody"), open.map((i) => `<tr data-id="${esc(i.id)}">
    <td class="sev-${esc(i.severity)}">${esc(i.severity)}</td><td>${esc(i.tier)}</td><td>${esc(i.target)}</td>
    <td class="vectors">${esc((i.vectors || []).join(", "))}</td><td class="ratio">${Number(i.peak_ratio || 0).toFixed(1)}x</td>
    <td class="sources">${esc(top(i).join(", "))}</td>
    <td>${esc(ago(i.opened_at))}</td><td>${esc(i.state)}${i.learning ? " (learning)" : ""}</td></tr>`), 8);
}

// only live rules, asked for by state: a long attack's rejected candidates must not crowd them out
const LIVE_RULES = ["announced", "pending_approval", "proposed", "failed"];
async function refreshMitigations() {
  const lists = await Promise.all(LIVE_RULES.map((s) => api(`/v1/mitigations?state=${s}&limit=50`)));
  const shown = lists.flatMap(items).sort((a, b) => (Date.parse(b.created_at) || 0) - (Date.parse(a.created_at) || 0)).slice(0, 50);
  rows($("#mitigations tbody"), shown.map((m) => `<tr data-id="${esc(m.id)}" data-incident="${esc(m.incident_id)}">
    <td>${esc(m.state)}</td><td>${esc(m.action)}${m.rate_bps ? ` ${esc(m.rate_bps)} B/s` : ""}</td>
    <td>${esc(m.match?.destination)}</td><td>${esc((m.match?.sources || []).join(", ") || "any")}</td>
    <td>${esc(m.match?.protocol)} ${esc(m.match?.destination_ports || "")}</td><td>${esc(until(m.expires_at))}</td>
    <td>${m.state === "announced" || m.state === "pending_approval" || m.state === "proposed"
      ? `<button class="danger withdraw" data-id="${esc(m.id)}">Withdraw</button>` : ""}</td></tr>`), 7);
}

async function refreshNotify() {
  const comps = items(await api("/v1/status-components"));
  rows($("#components tbody"), comps.map((c) => `<tr><td>${esc(c.name || c.component)}</td>
    <td>${esc(c.status)}</td><td>${esc(ago(c.since || c.updated_at))}</td></tr>`), 3);
  const dels = items(await api("/v1/notify/deliveries?limit=10"));
  rows($("#deliveries tbody"), dels.slice(0, 10).map((d) => `<tr><td>${esc(ago(d.created_at || d.ts))}</td>
    <td>${esc(d.channel)}</td><td>${esc(d.status)}</td><td>${esc(d.attempts ?? d.attempt)}</td><td>${esc(d.last_code ?? d.response_code ?? "")}</td></tr>`), 5);
}

function chartFor(id, title, container) {
  let c = state.charts.get(id);
  if (c) return c;
  const el = document.createElement("div");
  el.className = "chart";
  el.dataset.target = id;
  el.innerHTML = `<div class="title">${esc(title)}</div>`;
  container.appendChild(el);
  const plot = new uPlot({
    width: 360, height: 140, legend: { show: false },
    scales: { x: { time: true, range: (u, min, max) => [Math.max(min, max - 900), max + 1] } },
    axes: [{ stroke: "#8593a3" }, { stroke: "#8593a3", size: 50 }],
    series: [{}, { label: "observed pps", stroke: "#4ea1ff", width: 1.5 },
      { label: "baseline", stroke: "#46a758", dash: [4, 4] }],
  }, [[], [], []], el);
  c = { el, plot, points: [] };
  state.charts.set(id, c);
  return c;
}

async function refreshTraffic() {
  const targets = items(await api("/v1/ingest/targets?limit=2000")).filter((t) => !t.host);
  const byTier = new Map();
  for (const t of targets) (byTier.get(t.tier) || byTier.set(t.tier, []).get(t.tier)).push(t);
  const root = $("#tiers");
  for (const [tier, list] of byTier) {
    let box = root.querySelector(`[data-tier="${tier}"]`);
    if (!box) {
      box = document.createElement("div");
      box.className = "tier";
      box.dataset.tier = tier;
      box.innerHTML = `<h3>${esc(tier)}</h3><div class="charts"></div>`;
      root.appendChild(box);
    }
    for (const t of list) {
      const c = chartFor(t.id, t.name, box.querySelector(".charts"));
      const tick = t.last_tick;
      if (tick) {
        const x = Date.parse(tick.tick_start) / 1000;
        const last = c.points[c.points.length - 1];
        if (!last || last[0] !== x) c.points.push([x, tick.packets / (tick.tick_seconds || 1), null]);
        if (c.points.length > 900) c.points.shift();
      }
    }
  }
  // the baseline band comes from the baseline service (minute buckets), fetched every 15 s
  for (const [id, c] of state.charts) {
    if (!c.points.length) continue;
    if (!c.fetched || Date.now() - c.fetched > 15000) {
      c.fetched = Date.now();
      const from = new Date((c.points[0][0] - 60) * 1000).toISOString();
      const to = new Date((c.points[c.points.length - 1][0] + 60) * 1000).toISOString();
      try {
        const s = await api(`/v1/targets/${encodeURIComponent(id)}/series?metrics=packets&step=1m&from=${from}&to=${to}`);
        c.expected = new Map(items(s?.points).map((p) => [Math.floor(Date.parse(p.t) / 60000), p.expected?.packets]));
      } catch (e) { c.expected = c.expected || new Map(); } // series unavailable: observed only
    }
    for (const p of c.points) p[2] = c.expected?.get(Math.floor(p[0] / 60)) ?? p[2];
    c.plot.setData([c.points.map((p) => p[0]), c.points.map((p) => p[1]), c.points.map((p) => p[2])]);
  }
}

async function refresh() {
  if (!state.key) { $("#error").textContent = "Enter an API key (var/admin.key after the first 'voxguard up')."; return; }
  const jobs = [refreshIncidents, refreshMitigations, refreshTraffic, refreshNotify];
  const errs = [];
  await Promise.all(jobs.map((j) => j().catch((e) => errs.push(e.message))));
  if (state.actionError && Date.now() < state.actionError.until) errs.push(state.actionError.message);
  $("#error").textContent = errs.join("; ");
}

function connectEvents() {
  if (state.ws) state.ws.close();
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${proto}://${location.host}/v1/events?access_token=${encodeURIComponent(state.key)}`);
  state.ws = ws;
  ws.onopen = () => { $("#live").className = "badge on"; $("#live").textContent = "live"; };
  ws.onclose = () => { $("#live").className = "badge off"; $("#live").textContent = "offline"; setTimeout(() => state.ws === ws && connectEvents(), 3000); };
  ws.onmessage = () => { refreshIncidents().catch(() => {}); refreshMitigations().catch(() => {}); };
}

document.addEventListener("click", async (ev) => {
  const b = ev.target.closest("button.withdraw");
  if (!b) return;
  b.disabled = true;
  try {
    await api(`/v1/mitigations/${encodeURIComponent(b.dataset.id)}`, { method: "DELETE" });
    await refreshMitigations();
  } catch (e) {
    // kept for a while: the 2 s refresh must not wipe why an operator's click did nothing
    state.actionError = { message: `withdraw failed: ${e.message}`, until: Date.now() + 15000 };
    $("#error").textContent = state.actionError.message;
    b.disabled = false;
  }
});

$("#keyform").addEventListener("submit", (ev) => {
  ev.preventDefault();
  state.key = $("#key").value.trim();
  state.actionError = null;
  localStorage.setItem("voxguard.key", state.key);
  connectEvents();
  refresh();
});

window.voxguard = state; // for the browser tests and curious operators
if (state.key) { $("#key").value = state.key; connectEvents(); }
refresh();
setInterval(refresh, 2000);
