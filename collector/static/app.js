// enoc NOC console: plain ES module, no build step, nothing fetched from the internet.
// State comes from the collector's API; incident changes arrive on /api/v1/stream (SSE).
import { drawCharts } from "./charts.js";

const SEVERITIES = ["critical", "major", "minor", "warning", "info"];
const RANK = { critical: 5, major: 4, minor: 3, warning: 2, info: 1 };
const $ = (id) => document.getElementById(id);

const state = {
  me: null, // {name, role, scope, csrf}; scope null: everything, else {rtc: [...], site: [...]}
  incidents: new Map(), // id -> incident
  sites: [],
  expanded: new Set(), // incident ids whose timeline is open
  unfolded: new Set(), // cause ids whose suppressed children are shown
  fresh: new Set(), // ids changed by the stream since the last render
  stream: null,
  lastEventId: "", // the newest stream event seen: where a new stream resumes
  loading: new Set(), // per board fetch in flight: the incidents the stream brought meanwhile
  loads: 0, // board fetches started
};

// ------------------------------------------------------------------ helpers

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(child));
  return node;
}

function when(ts) {
  if (!ts) return "";
  const d = new Date(ts * 1000);
  const age = Date.now() / 1000 - ts;
  const hm = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  return age < 86400 ? hm : `${d.toLocaleDateString()} ${hm}`;
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  if (seconds < 172800) return `${(seconds / 3600).toFixed(1)} h`;
  return `${(seconds / 86400).toFixed(1)} d`;
}

function bits(bps) {
  if (typeof bps !== "number") return "–";
  const units = ["bit/s", "kbit/s", "Mbit/s", "Gbit/s", "Tbit/s"];
  let i = 0;
  while (bps >= 1000 && i < units.length - 1) { bps /= 1000; i += 1; }
  return `${bps.toFixed(bps < 10 ? 1 : 0)} ${units[i]}`;
}

function toast(text) {
  const box = $("toast");
  box.textContent = text;
  box.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { box.hidden = true; }, 4000);
}

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") {
    headers["Content-Type"] = "application/json";
    if (state.me && state.me.csrf) headers["X-CSRF-Token"] = state.me.csrf;
  }
  const response = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try { data = await response.json(); } catch { data = null; }
  if (response.status === 401 && path !== "/login") { showLogin(); }
  if (!response.ok) throw new ApiError(response.status, (data && data.error) || response.statusText);
  return data;
}

// ------------------------------------------------------------------ login

// What the pages show of the last caller's scope: emptied at logout, so that the next
// login on this page never sees the previous one's incidents or sites, even for a moment.
const SHOWN = ["board-rows", "tiles", "site-rows", "stats-rows", "stats-charts", "avail-rows",
  "if-rows", "sensor-rows"];

function showLogin(message = "") {
  stopStream();
  state.me = null;
  state.lastEventId = "";
  state.incidents = new Map();
  state.sites = [];
  state.expanded.clear();
  details.clear();
  for (const id of SHOWN) { const node = $(id); if (node) node.replaceChildren(); }
  $("top").hidden = true;
  $("app").hidden = true;
  $("login-view").hidden = false;
  $("login-error").textContent = message;
  $("login-name").focus();
}

async function login(event) {
  event.preventDefault();
  $("login-error").textContent = "";
  try {
    state.me = await api("/login", {
      method: "POST",
      body: { name: $("login-name").value, password: $("login-password").value },
    });
    $("login-password").value = "";
    await start();
  } catch (err) {
    $("login-error").textContent = err.message;
  }
}

async function logout() {
  let out = null;
  try { out = await api("/logout", { method: "POST" }); } catch { /* the session is gone either way */ }
  // a single-sign-on session: log out at the identity provider too (it sends the browser back)
  if (out && out.end_session_url) { location.assign(out.end_session_url); return; }
  showLogin("Logged out.");
}

async function loginMethods() {
  // offered by the collector: the single-sign-on button only where it is configured
  try {
    const methods = await api("/login/methods");
    $("sso").hidden = !methods.oidc;
  } catch { $("sso").hidden = true; }
}

// ------------------------------------------------------------------ live stream
// The browser reconnects by itself with Last-Event-ID and the collector replays what was
// missed. When it cannot (away longer than store.changes_retention, or another store) it
// sends `reset`; the console then reloads what it shows. It also reloads once on every
// reconnect, whatever the stream says, and opens a new stream when the browser gives up
// (an HTTP error from a proxy while the collector restarts closes an EventSource for good).

const STREAM_RETRY = 5000; // ms before a closed stream is opened again

function startStream(resumed = false) {
  // resumed: this stream replaces one that closed, so its first open is a reconnect too
  stopStream();
  const live = $("live");
  const query = state.lastEventId ? `?last_id=${encodeURIComponent(state.lastEventId)}` : "";
  const source = new EventSource(`/api/v1/stream${query}`);
  let opened = false;
  state.stream = source;
  const seen = (event) => { if (event.lastEventId) state.lastEventId = event.lastEventId; };
  source.addEventListener("open", () => {
    live.textContent = "live";
    live.className = "live on";
    if (opened || resumed) schedule("resync", 200);
    opened = true;
  });
  source.addEventListener("error", () => {
    live.textContent = "reconnecting";
    live.className = "live off";
    if (source.readyState === EventSource.CLOSED && state.stream === source) reopenLater();
  });
  source.addEventListener("incident", (event) => {
    seen(event);
    const { incident } = JSON.parse(event.data);
    state.incidents.set(incident.id, incident);
    for (const during of state.loading) during.push(incident);
    state.fresh.add(incident.id);
    schedule("board");
    schedule("sites", 500);
  });
  source.addEventListener("status", (event) => { seen(event); schedule("sites", 500); });
  source.addEventListener("reset", (event) => {
    seen(event);
    toast("Live updates were away too long to catch up: reloaded");
    schedule("resync", 200);
  });
}

function reopenLater() {
  // the browser gave up on the stream (an HTTP error): open a new one while the session
  // lasts (whoami answers 401 when it is over: back to the login form)
  stopStream();
  startStream.timer = setTimeout(async () => {
    try { await api("/api/v1/whoami"); } catch { if (state.me) reopenLater(); return; }
    if (state.me && !state.stream) startStream(true);
  }, STREAM_RETRY);
}

function stopStream() {
  clearTimeout(startStream.timer);
  if (state.stream) state.stream.close();
  state.stream = null;
}

async function resync() {
  // the current page from the API (route), and the overview's counts in any case
  const page = location.hash.replace(/^#\/?/, "").split("/")[0] || "overview";
  if (page !== "overview") {
    try { await loadSites(); } catch (err) { if (err.status !== 401) toast(err.message); }
  }
  await route();
}

const timers = {};
function schedule(what, delay = 0) {
  if (timers[what]) return;
  timers[what] = setTimeout(async () => {
    timers[what] = null;
    if (what === "board") renderBoard();
    // a refresh that fails (the collector restarting) waits for the stream's resync
    if (what === "sites") {
      try { await loadSites(); } catch (err) { if (err.status !== 401) toast(err.message); }
    }
    if (what === "resync") { await resync(); }
  }, delay);
}

// ------------------------------------------------------------------ overview

async function loadSites() {
  const { sites } = await api("/api/v1/sites");
  state.sites = sites;
  renderTiles();
  renderWan();
  fillFilters();
}

function renderTiles() {
  const tiles = $("tiles");
  tiles.replaceChildren(...state.sites.map((s) => {
    const sev = SEVERITIES.filter((v) => s.incidents[v] > 0)
      .map((v) => el("span", { class: `sev ${v}` }, `${s.incidents[v]} ${v}`));
    const agents = s.agents.length
      ? s.agents.map((a) => `${a.agent} ${a.state}`).join(", ")
      : "no agent";
    return el("div", {
      class: `tile ${s.status}`, dataset: { site: s.site, status: s.status },
      onclick: () => { location.hash = `#/site/${encodeURIComponent(s.site)}`; },
    },
    el("h4", {}, s.site, el("span", { class: "rtc" }, s.rtc)),
    el("div", { class: "row" }, sev.length ? sev : el("span", { class: "calm" }, "no open incidents")),
    el("div", { class: "row" },
      el("span", {}, `${s.devices.up} up`),
      el("span", { class: s.devices.down ? "state-down" : "" }, `${s.devices.down} down`),
      el("span", {}, `${s.devices.unknown} unknown`)),
    el("div", { class: "row" }, el("span", {}, agents),
      s.spool_depth ? el("span", { class: "sev major" }, `spool ${s.spool_depth}`) : null));
  }));
  const open = state.sites.reduce((n, s) => n + (s.incidents.critical || 0) + (s.incidents.major || 0), 0);
  $("nav-open").textContent = open ? String(open) : "";
}

function renderWan() {
  // One hub per RTC, its sites on a ring around it: a link per site, coloured by its state.
  const box = $("wan");
  const width = box.clientWidth || 900;
  const height = box.clientHeight || 350;
  const byRtc = new Map();
  for (const s of state.sites) {
    const key = s.rtc || "unassigned";
    if (!byRtc.has(key)) byRtc.set(key, []);
    byRtc.get(key).push(s);
  }
  const hubs = [...byRtc.keys()];
  const nodes = [];
  hubs.forEach((rtc, i) => {
    const hx = (width / hubs.length) * (i + 0.5);
    const hy = height / 2;
    const sites = byRtc.get(rtc);
    const radius = Math.min(width / hubs.length / 2 - 30, height / 2 - 40);
    sites.forEach((s, j) => {
      const angle = (2 * Math.PI * j) / sites.length - Math.PI / 2;
      const x = hx + radius * Math.cos(angle);
      const y = hy + radius * Math.sin(angle);
      nodes.push(svg("line", { x1: hx, y1: hy, x2: x, y2: y, class: s.status }));
      const dot = svg("circle", { cx: x, cy: y, r: 9, class: s.status }, svg("title", {}, `${s.site}: ${s.status}`));
      dot.addEventListener("click", () => { location.hash = `#/site/${encodeURIComponent(s.site)}`; });
      nodes.push(dot, svg("text", { x: x + 12, y: y + 4 }, s.site));
    });
    nodes.push(svg("circle", { cx: hx, cy: hy, r: 14, class: "hub" }),
      svg("text", { x: hx - 20, y: hy + 32 }, rtc.toUpperCase()));
  });
  box.setAttribute("viewBox", `0 0 ${width} ${height}`);
  box.replaceChildren(...nodes);
}

// ------------------------------------------------------------------ incident board

async function loadIncidents() {
  const filter = $("f-state").value;
  const query = new URLSearchParams({ limit: "2000" });
  if (filter) query.set("state", filter);
  // what the stream brings meanwhile may be newer than the answer: applied again after it
  const during = [];
  const generation = ++state.loads;
  state.loading.add(during);
  let incidents;
  try {
    ({ incidents } = await api(`/api/v1/incidents?${query}`));
  } finally {
    state.loading.delete(during);
  }
  if (generation !== state.loads) return; // a later load (another filter) answers instead
  state.incidents = new Map(incidents.map((i) => [i.id, i]));
  for (const incident of during) state.incidents.set(incident.id, incident);
  renderBoard();
}

function fillFilters() {
  // the options are the sites the API gave (those of the login's scope): rebuilt, so that
  // another login on this page does not inherit the last one's
  const fill = (id, values) => {
    const select = $(id);
    const current = select.value;
    select.replaceChildren(select.options[0], ...values.map((v) => el("option", { value: v }, v)));
    select.value = values.includes(current) ? current : "";
  };
  fill("f-rtc", [...new Set(state.sites.map((s) => s.rtc).filter(Boolean))].sort());
  fill("f-site", state.sites.map((s) => s.site).sort());
  fill("f-severity", SEVERITIES);
}

function visible(incident) {
  const want = {
    rtc: $("f-rtc").value, site: $("f-site").value,
    severity: $("f-severity").value, state: $("f-state").value,
  };
  if (want.rtc && incident.rtc !== want.rtc) return false;
  if (want.site && incident.site !== want.site) return false;
  if (want.severity && incident.severity !== want.severity) return false;
  if (want.state === "active") return incident.state !== "resolved";
  return !want.state || incident.state === want.state;
}

function order(a, b) {
  // open before acknowledged before resolved, then most severe, then newest
  const st = { open: 0, acknowledged: 1, resolved: 2 };
  return (st[a.state] - st[b.state]) || (RANK[b.severity] - RANK[a.severity]) || (b.opened - a.opened);
}

function renderBoard() {
  const all = [...state.incidents.values()].filter(visible);
  // a suppressed incident folds under its cause when the cause is on the board too; when
  // the filters (or its resolution) leave the cause out, it is a row of its own
  const shown = new Set(all.map((i) => i.id));
  const folded = (i) => i.suppressed_by !== null && shown.has(i.suppressed_by);
  const causes = all.filter((i) => !folded(i)).sort(order);
  const children = new Map();
  for (const i of all.filter(folded)) {
    if (!children.has(i.suppressed_by)) children.set(i.suppressed_by, []);
    children.get(i.suppressed_by).push(i);
  }
  const rows = [];
  for (const incident of causes) {
    const kids = (children.get(incident.id) || []).sort(order);
    rows.push(incidentRow(incident, kids.length));
    if (state.expanded.has(incident.id)) rows.push(detailRow(incident));
    if (state.unfolded.has(incident.id)) {
      for (const kid of kids) {
        rows.push(incidentRow(kid, 0, true));
        if (state.expanded.has(kid.id)) rows.push(detailRow(kid));
      }
    }
  }
  $("board-rows").replaceChildren(...rows);
  $("board-empty").hidden = all.length > 0;
  const open = all.filter((i) => i.state === "open").length;
  $("board-count").textContent = `${all.length} shown, ${open} open`;
  state.fresh.clear();
}

function incidentRow(incident, suppressedCount, isChild = false) {
  const operator = state.me && (state.me.role === "operator" || state.me.role === "admin");
  const classes = ["incident", incident.state];
  if (isChild) classes.push("suppressed");
  if (state.fresh.has(incident.id)) classes.push("new");
  const badges = [];
  if (incident.flapping) badges.push(el("span", { class: "badge flapping" }, "flapping"));
  if (incident.maintenance) badges.push(el("span", { class: "badge maintenance" }, "maintenance"));
  if (incident.escalated) badges.push(el("span", { class: "badge escalated" }, `escalated ${incident.escalated}`));
  if (incident.ticket) badges.push(ticketBadge(incident.ticket));
  if (!isChild && incident.suppressed_by !== null) {
    badges.push(el("span", { class: "badge suppressed" }, `suppressed under #${incident.suppressed_by}`));
  }
  const actions = [];
  if (operator && incident.state === "open") {
    actions.push(el("button", { type: "button", class: "ack", onclick: (e) => { e.stopPropagation(); act(incident, "ack"); } }, "Ack"));
  }
  if (operator && incident.state !== "resolved") {
    actions.push(el("button", { type: "button", class: "resolve", onclick: (e) => { e.stopPropagation(); act(incident, "resolve"); } }, "Resolve"));
  }
  const device = incident.device
    ? el("a", { href: `#/device/${encodeURIComponent(incident.site)}/${encodeURIComponent(incident.device)}`, onclick: (e) => e.stopPropagation() }, incident.device)
    : "–";
  const fold = suppressedCount
    ? el("a", { href: "#", class: "fold", onclick: (e) => { e.preventDefault(); e.stopPropagation(); toggle(state.unfolded, incident.id); } },
      state.unfolded.has(incident.id) ? `hide ${suppressedCount} suppressed` : `+${suppressedCount} suppressed`)
    : null;
  return el("tr", {
    class: classes.join(" "), dataset: { id: incident.id, state: incident.state, site: incident.site },
    onclick: () => toggle(state.expanded, incident.id),
  },
  el("td", {}, el("span", { class: `sev ${incident.severity}` }, incident.severity)),
  el("td", { class: "state" }, incident.state,
    incident.acknowledged_by ? ` (${who(incident.acknowledged_by, incident.acknowledged_identity)})` : ""),
  el("td", {}, incident.site),
  el("td", {}, device),
  el("td", {}, incident.resource),
  el("td", {}, incident.title, badges, fold),
  el("td", {}, when(incident.opened)),
  el("td", {}, incident.count),
  el("td", { class: "actions" }, actions));
}

// Who acted: the name, and the identity behind it unless it is the users file's user of
// that name (a token or a directory user may carry any name: "alice (token:12)").
function who(name, identity) {
  return identity && identity !== `local:${name}` ? `${name} (${identity})` : name;
}

// The service desk's ticket (a ServiceNow notifier made it): its number, a link to it.
function ticketBadge(ticket) {
  const link = /^https?:\/\//.test(ticket.url || "") ? ticket.url : undefined;
  return el(link ? "a" : "span", {
    class: "badge ticket", href: link, target: link && "_blank", rel: link && "noopener",
    title: "service desk ticket", onclick: (e) => e.stopPropagation(),
  }, ticket.number);
}

function toggle(set, id) {
  if (set.has(id)) set.delete(id); else set.add(id);
  if (set === state.expanded && !set.has(id)) details.delete(id);
  renderBoard();
}

// An open incident's timeline and comment box, kept across renders (the board renders
// again at every change on the stream: a comment being typed must survive that); the
// timeline is fetched again when the incident changed.
const details = new Map(); // incident id -> {row, list, version}

function detailRow(incident) {
  let detail = details.get(incident.id);
  if (!detail) {
    const list = el("ul", { class: "timeline" }, el("li", { class: "muted" }, "loading timeline…"));
    const cell = el("td", { colspan: 9 }, list);
    if (state.me.role !== "viewer") {
      const input = el("input", { placeholder: "comment (carrier ticket, what you tried…)", maxlength: 4000 });
      const send = async () => {
        const text = input.value.trim();
        if (!text) return;
        if (await act(incident, "comment", text)) input.value = "";
      };
      input.addEventListener("keydown", (e) => { if (e.key === "Enter") send(); });
      cell.append(el("div", { class: "comment-box", onclick: (e) => e.stopPropagation() },
        input, el("button", { type: "button", onclick: send }, "Comment")));
    }
    detail = { row: el("tr", { class: "detail", dataset: { id: incident.id } }, cell), list, version: "" };
    details.set(incident.id, detail);
  }
  const version = `${incident.updated}/${incident.count}/${incident.state}`;
  if (detail.version !== version) {
    detail.version = version;
    const { list } = detail;
    api(`/api/v1/incidents/${incident.id}`).then((full) => {
      if (detail.version !== version) return; // a newer fetch is on its way
      list.replaceChildren(...full.timeline.map((t) => el("li", {},
        el("time", {}, when(t.at)),
        el("strong", {}, t.what), " ",
        t.state ? `${t.state} ` : "",
        t.actor ? `by ${who(t.actor, t.identity)} ` : "",
        t.text ? `— ${t.text}` : "")));
    }).catch((err) => { list.replaceChildren(el("li", { class: "error" }, err.message)); });
  }
  return detail.row;
}

async function act(incident, action, text) {
  try {
    const body = text ? { text } : undefined;
    const updated = await api(`/api/v1/incidents/${incident.id}/${action}`, { method: "POST", body });
    state.incidents.set(updated.id, updated);
    renderBoard();
    toast(`${action === "ack" ? "Acknowledged" : action === "resolve" ? "Resolved" : "Commented on"} #${incident.id}`);
    return true;
  } catch (err) {
    toast(`${action} failed: ${err.message}`);
    return false;
  }
}

// ------------------------------------------------------------------ site and device pages

async function showSite(site) {
  $("site-title").textContent = `Site ${site}`;
  const { devices } = await api(`/api/v1/devices?site=${encodeURIComponent(site)}`);
  $("site-rows").replaceChildren(...devices.map((d) => el("tr", {},
    el("td", {}, el("a", { href: `#/device/${encodeURIComponent(site)}/${encodeURIComponent(d.device)}` }, d.device)),
    el("td", {}, d.role || ""),
    el("td", {}, d.address),
    el("td", { class: `state-${d.state === "up" ? "up" : d.state === "unknown" ? "unknown" : "down"}` }, d.state),
    el("td", {}, d.open_incidents))));
}

function sparkline(history) {
  const box = svg("svg", { class: "spark", viewBox: "0 0 160 28", preserveAspectRatio: "none" });
  if (!history || !history.t || history.t.length < 2) return box;
  const values = [...(history.in_bps || []), ...(history.out_bps || [])].filter((v) => v !== null);
  const max = Math.max(1, ...values);
  const n = history.t.length;
  for (const name of ["in_bps", "out_bps"]) {
    const series = history[name] || [];
    const points = series.map((v, i) => (v === null ? null : `${(160 * i) / (n - 1)},${27 - (26 * v) / max}`)).filter(Boolean);
    box.append(svg("polyline", { class: name === "in_bps" ? "in" : "out", points: points.join(" ") }));
  }
  return box;
}

async function showDevice(site, name) {
  $("device-title").textContent = `${name} · ${site}`;
  const device = await api(`/api/v1/devices/${encodeURIComponent(site)}/${encodeURIComponent(name)}`);
  const recent = device.recent || { fields: {}, interfaces: [] };
  const f = recent.fields || {};
  const facts = [
    ["State", device.state || (f.reachable ? "up" : "unknown")],
    ["Address", device.address || recent.address || ""],
    ["Role", device.role || ""],
    ["Uptime", typeof f.uptime_s === "number" ? duration(f.uptime_s) : "–"],
    ["CPU", typeof f.cpu === "number" ? `${f.cpu.toFixed(0)} %` : "–"],
    ["Memory", typeof f.memory === "number" ? `${f.memory.toFixed(0)} %` : "–"],
    ["Response", typeof f.response_ms === "number" ? `${f.response_ms.toFixed(1)} ms` : "–"],
    // admin up, oper down; those down since the agent first saw them are its baseline
    // (no incident: unused ports, empty optics), the agent's interface policy says more
    ["Ports down", typeof f.ports_down === "number"
      ? `${f.ports_down}${f.ports_down_baseline ? ` (${f.ports_down_baseline} since first seen, no incident)` : ""}` : "–"],
    ["Last poll", when(recent.ts)],
  ];
  // where cpu and memory came from, and the MIB groups capability discovery found
  const caps = device.capabilities;
  if (caps) {
    for (const fact of facts) {
      const mib = caps.sources && caps.sources[fact[0].toLowerCase()];
      if (mib && fact[1] !== "–") fact[1] = `${fact[1]} (${mib})`;
    }
    facts.push(["MIBs found", (caps.found || []).join(", ") || "none"]);
  }
  $("device-facts").replaceChildren(...facts.map(([k, v]) => el("div", {}, el("dt", {}, k),
    el("dd", { class: k === "State" ? `state-${v}` : "" }, v))));
  showRows(recent.rows || []);
  $("if-rows").replaceChildren(...(recent.interfaces || []).map((i) => {
    const x = i.fields || {};
    const util = (v) => (typeof v === "number" ? `${v.toFixed(1)} %` : "–");
    const oper = x.ifOperStatus === 1 ? "up" : x.ifOperStatus === undefined ? "–"
      : x.ifAdminStatus === 2 ? "off" : "down";
    const errors = (x.in_errors_per_s || 0) + (x.out_errors_per_s || 0);
    return el("tr", { dataset: { ifindex: i.ifIndex } },
      el("td", {}, i.ifName || i.ifDescr || `if ${i.ifIndex}`),
      el("td", {}, i.ifAlias || ""),
      el("td", { class: `state-${oper === "up" ? "up" : oper === "off" ? "unknown" : "down"}` }, oper),
      el("td", {}, bits(x.in_bps)),
      el("td", {}, bits(x.out_bps)),
      el("td", {}, `${util(x.in_utilization)} / ${util(x.out_utilization)}`),
      el("td", {}, errors ? errors.toFixed(2) : "0"),
      el("td", {}, sparkline(i.history)));
  }));
  $("device-incidents").replaceChildren(...(device.incidents || []).map((i) => el("tr", { class: `incident ${i.state}` },
    el("td", {}, el("span", { class: `sev ${i.severity}` }, i.severity)),
    el("td", {}, i.state), el("td", {}, i.resource), el("td", {}, i.title), el("td", {}, when(i.opened)))));
}

// A sensor's value in its class's unit (the agent writes SI units: docs/agent.md).
const SENSOR_UNITS = {
  temperature: "°C", fan: "rpm", voltage: "V", current: "A", power: "W", humidity: "%RH",
  battery: "%", load: "%", frequency: "Hz", dbm: "dBm", db: "dB",
};
const STATUS_CLASS = { ok: "state-up", unknown: "state-unknown", warning: "sev warning",
  critical: "sev critical", failed: "sev critical" };

function sensorValue(cls, value) {
  if (typeof value !== "number") return "–";
  if (cls === "runtime" || cls === "source") return duration(value);
  const unit = SENSOR_UNITS[cls];
  return `${Number(value.toPrecision(4))}${unit ? ` ${unit}` : ""}`;
}

// The latest poll's rows: sensors in their own table, a profile's tables one table each.
function showRows(rows) {
  const sensors = rows.filter((r) => r.measurement === "sensor");
  $("device-sensors").hidden = sensors.length === 0;
  $("sensor-rows").replaceChildren(...sensors.map((r) => {
    const cls = r.tags.class || "";
    const f = r.fields || {};
    const limits = ["low_critical", "low_warning", "high_warning", "high_critical"]
      .filter((k) => typeof f[k] === "number").map((k) => `${k.replace("_", " ")} ${sensorValue(cls, f[k])}`);
    return el("tr", {},
      el("td", {}, r.tags.sensor || ""), el("td", {}, cls), el("td", {}, sensorValue(cls, f.value)),
      el("td", { class: STATUS_CLASS[f.status] || "" }, f.status || "–"), el("td", {}, limits.join(", ")));
  }));
  const others = {};
  for (const r of rows) if (r.measurement !== "sensor") (others[r.measurement] ||= []).push(r);
  $("device-tables").replaceChildren(...Object.entries(others).map(([measurement, list]) => {
    const tags = [...new Set(list.flatMap((r) => Object.keys(r.tags)))].sort();
    const fields = [...new Set(list.flatMap((r) => Object.keys(r.fields)))].sort();
    return el("div", { class: "device-table" }, el("h3", {}, measurement),
      el("table", {}, el("thead", {}, el("tr", {}, ...[...tags, ...fields].map((n) => el("th", {}, n)))),
        el("tbody", {}, ...list.map((r) => el("tr", {},
          ...tags.map((n) => el("td", {}, r.tags[n] ?? "")),
          ...fields.map((n) => el("td", {}, String(r.fields[n] ?? "–"))))))));
  }));
}

// ------------------------------------------------------------------ stats

async function showStats() {
  const since = $("stats-range").value;
  const { stats } = await api(`/api/v1/stats?since=${encodeURIComponent(since)}`);
  $("stats-rows").replaceChildren(...stats.map((s) => el("tr", {},
    el("td", {}, s.site), el("td", {}, el("span", { class: `sev ${s.severity}` }, s.severity)),
    el("td", {}, s.incidents), el("td", {}, s.acknowledged), el("td", {}, duration(s.mtta_s)),
    el("td", {}, s.resolved), el("td", {}, duration(s.mttr_s)))));
  await drawCharts(api, since);
}

// ------------------------------------------------------------------ availability

const availOpen = new Set(); // sites whose devices are shown

function monthPeriod(month) {
  // "2026-12" -> the API's from and to (UTC): the month, or its part so far
  const [y, m] = month.split("-").map(Number);
  const next = m === 12 ? `${y + 1}-01` : `${y}-${String(m + 1).padStart(2, "0")}`;
  return `from=${month}-01T00:00:00Z&to=${next}-01T00:00:00Z`;
}

function availCells(r) {
  const pct = r.up_pct === null ? "–" : `${r.up_pct.toFixed(3)} %`;
  const span = (s) => el("td", { title: `${s} s` }, s ? duration(s) : "0");
  return [el("td", { class: "up-pct" }, pct), span(r.down_s), span(r.unknown_s), span(r.maintenance_s)];
}

async function showAvailability(month) {
  const picker = $("avail-month");
  if (!month) month = picker.value || new Date().toISOString().slice(0, 7);
  picker.value = month;
  const period = monthPeriod(month);
  const base = `/api/v1/availability?${period}`;
  $("avail-csv-sites").href = `${base}&by=site&format=csv`;
  $("avail-csv-devices").href = `${base}&by=device&format=csv`;
  const [sites, devices] = await Promise.all([
    api(`${base}&by=site`), api(`${base}&by=device`),
  ]);
  $("avail-period").textContent = `${new Date(sites.from * 1000).toISOString().slice(0, 16)}Z – ${new Date(sites.to * 1000).toISOString().slice(0, 16)}Z`;
  const rows = [];
  for (const s of sites.rows) {
    const open = availOpen.has(s.site);
    rows.push(el("tr", {
      class: "avail-site", dataset: { site: s.site },
      onclick: () => {
        if (open) availOpen.delete(s.site); else availOpen.add(s.site);
        showAvailability(month).catch((err) => toast(err.message));
      },
    }, el("td", {}, `${open ? "▾" : "▸"} ${s.site}`), el("td", {}, s.rtc), el("td", {}, s.devices),
    ...availCells(s)));
    if (!open) continue;
    for (const d of devices.rows.filter((x) => x.site === s.site)) {
      rows.push(el("tr", { class: "avail-device", dataset: { site: d.site, device: d.device } },
        el("td", {}, el("a", { href: `#/device/${encodeURIComponent(d.site)}/${encodeURIComponent(d.device)}` }, d.device)),
        el("td", {}, d.rtc), el("td", {}, ""), ...availCells(d)));
    }
  }
  $("avail-rows").replaceChildren(...rows);
}

// ------------------------------------------------------------------ routing

async function route() {
  if (!state.me) return;
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  const page = parts[0] || "overview";
  for (const section of document.querySelectorAll(".page")) section.hidden = section.id !== `page-${page}`;
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("active", link.dataset.page === page);
  try {
    if (page === "overview") await loadSites();
    else if (page === "board") await loadIncidents();
    else if (page === "site") await showSite(parts[1]);
    else if (page === "device") await showDevice(parts[1], parts[2]);
    else if (page === "stats") await showStats();
    else if (page === "availability") await showAvailability(parts[1]);
  } catch (err) {
    if (err.status !== 401) toast(err.message);
  }
}

async function start() {
  $("login-view").hidden = true;
  $("top").hidden = false;
  $("app").hidden = false;
  $("who").textContent = `${state.me.name} (${state.me.role})`;
  $("scope").textContent = scopeText(state.me.scope);
  $("scope").hidden = !state.me.scope;
  startStream();
  await loadSites();
  await route();
}

function scopeText(scope) {
  // what the login is limited to (the API and the stream leave out the rest)
  if (!scope) return "";
  const parts = [];
  if (scope.rtc.length) parts.push(`RTC ${scope.rtc.join(", ")}`);
  if (scope.site.length) parts.push(`site ${scope.site.join(", ")}`);
  return parts.join(" · ");
}

async function boot() {
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", logout);
  loginMethods();
  window.addEventListener("hashchange", route);
  for (const id of ["f-rtc", "f-site", "f-severity"]) $(id).addEventListener("change", renderBoard);
  $("f-state").addEventListener("change", loadIncidents);
  $("stats-range").addEventListener("change", showStats);
  $("avail-month").addEventListener("change", (e) => { if (e.target.value) location.hash = `#/availability/${e.target.value}`; });
  try {
    state.me = await api("/api/v1/whoami"); // a session cookie from an earlier login
    await start();
  } catch {
    showLogin();
  }
}

boot();
