// The Sunlit web console: one page among the ground server's clients (docs/ground-api.md).
//
// Data path: the server pushes batches over one WebSocket; onmessage only queues them; one
// requestAnimationFrame callback per frame applies every queued batch (per-spacecraft models,
// table cells, plots) and, in a task posted after that frame's rendering, echoes to the server
// when each batch arrived and when it was drawn (the server turns that into push lag:
// ground/web/hub.py, LagTracker).
//
// The page keeps a model per spacecraft (values, packets, events, alarms, commands, queue,
// status) from the hello snapshot and the pushes, and draws only the chosen one; switching
// re-renders from that model, refreshed from /api/state.
//
// Values tell the truth: a value older than the spacecraft's stale_after_s (from when this
// page received it, or from the snapshot's age_s) is shown stale, never with its last limit
// colour; a timer re-checks, so a silent link greys every value without any new data.
"use strict";

const RING_POINTS = 4096;      // per channel: ~14 min of 0.2 s housekeeping
const PLOT_POINTS = 16384;     // a plot's own ring: 15 min of archive (≤ 2000 points) and then live
const HISTORY_S = 900;         // a new plot starts with the last 15 minutes from the archive
const HISTORY_MAX_POINTS = 2000;
// /api/archive answers a window a page at a time (at most 100000 samples read each, decimated to max_points, with
// `next` for the rest): a plot follows this many pages (a week of 1 Hz), then says where it stopped
const ARCHIVE_PAGES_MAX = 20;
const HISTORY_PAGES_MAX = 4;
const KEEP_EVENT_ROWS = 500;
const KEEP_COMMAND_ROWS = 200;
const MAX_PENDING = 400;       // batches queued with no frame (hidden tab): applied without drawing
const MAX_CATCH_UP = 2000;     // pushes kept to apply again over a snapshot on its way (a page queue's own bound)
const TICK_MS = 250;           // staleness, silence and "ago" texts are re-checked this often
const WS_RETRY_MS = 1000;      // a dropped socket is opened again after this; one the server refused (429) after
const WS_REFUSED_MAX_MS = 30000;  // twice as long each time it refuses it, up to this
const ROLE_RANK = {viewer: 0, operator: 1, admin: 2};
const PLAN_STALE_S = 300;      // until the server says (snapshot's plan_stale_after_s): ground/server.py PLAN_STALE_S
const PLAN_NOW_STEP_S = 5;     // the plan's time axis follows the newest telemetry in steps this long
const SVG_NS = "http://www.w3.org/2000/svg";
// "unknown" is not final: it settles later; "unresolved" is: no longer followed, its outcome never came
const FINAL = new Set(["completed", "failed", "timeout", "rejected", "cancelled", "unresolved"]);

const S = {
  me: {user: "", role: "viewer", csrf: ""},
  dict: null,
  defs: new Map(),         // channel name -> dictionary entry
  packets: new Map(),      // sid -> packet (channels in wire order)
  rows: new Map(),         // channel name -> {row, valueCell, stateCell, state}
  packetHeads: new Map(),  // sid -> {body, time, state}
  crafts: new Map(),       // spacecraft id -> model (newCraft)
  current: null,           // the spacecraft shown
  serverStatus: null,
  ws: null,
  serverAway: false,       // the socket closed and no hello since: the page knows nothing new of the link
  wsRetryMs: WS_RETRY_MS,  // the next try after the server refused this page's socket
  pending: [],
  frameRequested: false,
  dirtyRows: new Set(),
  shownRows: new Set(),    // channel names whose row is on screen (rowsShown): only their texts are written
  dirtyPackets: new Set(),
  plots: [],               // {plot, ring, channel, sc, loaded, pending}
  archivePlot: null,
  archiveAsks: 0,          // archive queries made: an answer to one before the newest is dropped
  planDrawn: null,         // the plan chart drawn: {c, root, x, t0, t1, nowS}
  catchUp: new Set(),      // {sc, messages}: pushes for a spacecraft whose /api/state is on its way
  hellos: 0,               // hellos taken: a state answer asked for before the newest is older than it
  resyncing: new Map(),    // spacecraft id -> whether to ask again: its state asked for after dropped messages
  dropped: 0,
};

const $ = (id) => document.getElementById(id);
// Writes only what changed: each write of a text or an attribute, even the same one, makes the
// browser lay out and paint the page again, and the live path runs up to 60 times a second in every
// page (found in measuring GND-032: five pages at 10,000 samples/s spent most of their time there).
const setText = (node, text) => { if (node.textContent !== text) node.textContent = text; };
const setTitle = (node, text) => { if (node.title !== text) node.title = text; };
const setData = (node, key, value) => { if (node.dataset[key] !== value) node.dataset[key] = value; };
const el = (tag, props = {}, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "dataset") Object.assign(e.dataset, v); else if (k in e) e[k] = v; else e.setAttribute(k, v);
  }
  e.append(...children);
  return e;
};

function utcClock(t_s) {
  if (typeof t_s !== "number") return "—";
  return new Date(t_s * 1000).toISOString().slice(11, 23);
}

// An event's or an alarm's time, with its date when that is not today's (UTC): the archive's events and an alarm
// latched until acknowledged go back days (found in audit: a time of day alone, one of three weeks ago read as today's).
function utcWhen(t_s) {
  if (typeof t_s !== "number") return "—";
  const text = new Date(t_s * 1000).toISOString(), day = text.slice(0, 10);
  return day === new Date().toISOString().slice(0, 10) ? text.slice(11, 23) : `${day} ${text.slice(11, 23)}`;
}

function ago(ms) {
  const s = ms / 1000;
  return s < 10 ? `${s.toFixed(1)} s ago` : `${Math.round(s)} s ago`;
}

function canOperate() { return (ROLE_RANK[S.me.role] ?? 0) >= ROLE_RANK.operator; }

// --- the model ---------------------------------------------------------------------------------

function newCraft(id) {
  return {
    id,
    values: new Map(),      // name -> {v, t, seenMs, ring, plots}
    packetSeen: new Map(),  // sid -> {seenMs, wallS, t}
    lastHkMs: null,         // when this page last took in a packet of it
    limits: new Map(),      // name -> limits as the server applies them for this spacecraft (null: none)
    limitsPushed: 0,        // limit changes pushed: a /api/dictionary answer asked before one is stale
    events: [],
    eventSeq: 0,            // the newest event's seq this page holds (the server numbers each, per run)
    alarms: new Map(),      // channel -> alarm
    commands: new Map(),    // queue id -> entry
    queue: {held: false, held_by: "", counts: {}},
    status: null,
    statusMs: 0,            // when the status arrived (performance.now)
    staleMs: 10000,
    plan: null,             // the energy plan received last, as the server serves it (or null)
    planReason: "",         // why there is none, as the server last said
    planStaleS: PLAN_STALE_S,
    hkTimeS: null,          // packet time of the newest housekeeping received (the agent's clock)
    files: new Map(),       // file transfer id -> its record (ground/files.py FileRecord), progress included
  };
}

function craft(id) {
  let c = S.crafts.get(id);
  if (!c) { c = newCraft(id); S.crafts.set(id, c); }
  return c;
}

function cur() { return S.current === null ? null : craft(S.current); }

function record(c, name) {
  let r = c.values.get(name);
  if (!r) { r = {v: undefined, t: null, seenMs: null, ring: new Ring(RING_POINTS), plots: []}; c.values.set(name, r); }
  return r;
}

function limitsOf(c, name) {
  if (c && c.limits.has(name)) return c.limits.get(name);
  const def = S.defs.get(name);
  return def ? def.limits : undefined;
}

function numeric(def, v) {
  if (typeof v === "number") return v;
  if (typeof v === "boolean") return v ? 1 : 0;
  if (typeof v === "string" && def && def.choices) { const k = def.choices.indexOf(v); return k >= 0 ? k : NaN; }
  return NaN;  // null (not available), "NaN", "inf", text
}

function setValue(c, name, v, t, seenMs) {
  const r = record(c, name);
  r.v = v;
  r.t = t;
  r.seenMs = seenMs;
  const x = numeric(S.defs.get(name), v);
  if (typeof t === "number" && (r.ring.n === 0 || t > r.ring.time(r.ring.n - 1))) r.ring.push(t, x);
  for (const p of r.plots) {
    if (!p.loaded) { p.pending.push([t, x]); continue; }
    if (typeof t === "number" && (p.ring.n === 0 || t > p.ring.time(p.ring.n - 1))) p.ring.push(t, x);
    p.plot.dirty = true;
  }
  if (c.id === S.current) S.dirtyRows.add(name);
}

// --- limit state (mirrors flight.link.dictionary.Limits.state) -------------------------------

// JSON has no NaN or infinities: the server sends a float channel's as text (hub.json_safe), judged here as the
// numbers they are (found in audit: "inf" was judged nominal, a green row beside the server's critical alarm).
const NON_FINITE = new Map([["NaN", NaN], ["inf", Infinity], ["-inf", -Infinity]]);

function asNumber(def, v) {
  return def && (def.type === "f32" || def.type === "f64") && NON_FINITE.has(v) ? NON_FINITE.get(v) : v;
}

function limitState(limits, v) {
  if (!limits || typeof v !== "number") return "nominal";
  if ((limits.crit_low != null && v <= limits.crit_low) || (limits.crit_high != null && v >= limits.crit_high)) return "critical";
  if ((limits.warn_low != null && v <= limits.warn_low) || (limits.warn_high != null && v >= limits.warn_high)) return "warning";
  return "nominal";
}

function limitText(limits) {
  if (!limits) return "";
  const parts = [];
  if (limits.crit_low != null) parts.push(`crit ≤ ${limits.crit_low}`);
  if (limits.warn_low != null) parts.push(`warn ≤ ${limits.warn_low}`);
  if (limits.warn_high != null) parts.push(`warn ≥ ${limits.warn_high}`);
  if (limits.crit_high != null) parts.push(`crit ≥ ${limits.crit_high}`);
  return parts.join(", ");
}

// A value's state now: no value yet, stale (too old to trust its colour), not available (the
// agent sent none), or its limit state.
function valueState(c, name, nowMs) {
  const r = c.values.get(name);
  if (!r || r.seenMs === null || r.v === undefined) return "nodata";
  if (nowMs - r.seenMs > c.staleMs) return "stale";
  if (r.v === null) return "na";  // the agent sent "not available" (a sensor it cannot read)
  const v = asNumber(S.defs.get(name), r.v), limits = limitsOf(c, name);
  // NaN is no reading either: on a channel with limits the server's alarms neither raise nor clear on it
  if (Number.isNaN(v) && limits && Object.values(limits).some((x) => x != null)) return "na";
  return limitState(limits, v);
}

function fmtValue(v) {
  return v === null || v === undefined ? "—" : (typeof v === "number" ? fmtNum(v) : String(v));
}

// --- telemetry table: one section per housekeeping packet -------------------------------------

// A row's value and title are written only while the row is on screen, and at once when it comes
// into view (scrolled to, or shown by the filter): two thirds of the table are off screen in the
// panel, and writing their texts at every push was most of a page's work (found in measuring
// GND-032). A row's limit state (its colour, data-state) follows every value, on screen or not.
const rowsShown = new IntersectionObserver((entries) => {
  for (const e of entries) {
    const name = e.target.dataset.name;
    if (e.isIntersecting) {
      S.shownRows.add(name);
      S.dirtyRows.add(name);
    } else {
      S.shownRows.delete(name);
    }
  }
  requestFrame();
});

function buildTable() {
  const table = $("tm-table");
  const placed = new Set();
  const section = (key, title, description, names) => {
    const time = el("span", {className: "pkt-time", textContent: "no packet yet"});
    const body = el("tbody", {id: `pkt-${title}`, className: "packet", dataset: {packet: title, state: "nodata"}},
      el("tr", {className: "packet-head"},
        el("th", {colSpan: 4, title: description}, el("span", {className: "pkt-name", textContent: title}), " ", time)));
    const cols = el("colgroup", {}, ...["c-name", "c-value", "c-unit", "c-state"].map((c) => el("col", {className: c})));
    for (const name of names) {
      const def = S.defs.get(name);
      if (!def) continue;
      placed.add(name);
      const nameCell = el("td", {className: "name", textContent: def.name, title: def.description});
      const value = el("td", {className: "value num", textContent: "—"});
      const state = el("td", {className: "state", textContent: "no data", title: limitText(def.limits)});
      const row = el("tr", {id: `tm-${def.name}`, dataset: {state: "nodata", name: def.name}},
        nameCell, value, el("td", {className: "unit", textContent: def.unit}), state);
      body.append(row);
      S.rows.set(def.name, {row, valueCell: value, stateCell: state, state: "nodata"});
      rowsShown.observe(row);
      nameCell.addEventListener("click", () => addPlot(def.name));
    }
    // One table per packet, in a box the browser skips (layout and paint) while it is far from the screen:
    // with the whole table drawn, every frame cost in proportion to all its rows (found in measuring GND-032).
    // Its height before it is first drawn is guessed from its rows (a row is about 21 px).
    const box = el("div", {className: "tm-section"}, el("table", {}, cols, body));
    box.style.containIntrinsicSize = `auto ${21 * (body.rows.length + 1)}px`;
    table.append(box);
    S.packetHeads.set(key, {body, time, state: "nodata"});
  };
  for (const p of S.dict.packets) section(p.sid, p.name, p.description, p.channels);
  const rest = S.dict.channels.map((d) => d.name).filter((n) => !placed.has(n));
  if (rest.length) section("other", "OTHER", "channels in no housekeeping packet", rest);
  $("tm-filter").addEventListener("input", (e) => {
    const q = e.target.value.trim().toLowerCase();
    for (const [name, r] of S.rows) r.row.hidden = q !== "" && !name.includes(q);
  });
}

function renderRow(name, nowMs) {
  const c = cur();
  const r = S.rows.get(name);
  if (!c || !r) return;
  setRowState(r, valueState(c, name, nowMs));
  const alarmRow = document.getElementById(`alarm-${name}`);
  const alarmNow = alarmRow && alarmRow.querySelector("td.now");
  if (alarmNow) renderAlarmNow(alarmNow, name);
  if (!S.shownRows.has(name)) return;  // written when it comes into view
  const rec = c.values.get(name);
  setText(r.valueCell, rec ? fmtValue(rec.v) : "—");
  setTitle(r.valueCell, rec && rec.t !== null ? `packet time ${utcClock(rec.t)} UTC` : "no value received");
  setTitle(r.stateCell, limitText(limitsOf(c, name)));
}

const STATE_TEXT = {nodata: "no data", stale: "stale", na: "not available"};

function setRowState(r, state) {
  if (r.state === state) return;
  r.state = state;
  r.row.dataset.state = state;
  r.stateCell.textContent = STATE_TEXT[state] || state;
}

function renderPacketHead(key, nowMs) {
  const c = cur();
  const h = S.packetHeads.get(key);
  if (!c || !h) return;
  const seen = c.packetSeen.get(key);
  let state = "nodata";
  if (!seen) {
    setText(h.time, "no packet yet");
  } else {
    state = nowMs - seen.seenMs > c.staleMs ? "stale" : "fresh";
    setText(h.time, `received ${new Date(seen.wallS * 1000).toISOString().slice(11, 19)} UTC, ${ago(nowMs - seen.seenMs)}`);
    setTitle(h.time, `packet time ${utcClock(seen.t)} UTC`);
  }
  if (h.state !== state) { h.state = state; h.body.dataset.state = state; }
}

// Staleness is a matter of time, not of data: re-checked on a timer.
function tick() {
  const c = cur();
  if (!c) return;
  const now = performance.now();
  for (const [name, r] of S.rows) setRowState(r, valueState(c, name, now));
  for (const key of S.packetHeads.keys()) renderPacketHead(key, now);
  renderLink();
  renderNextPass();
  renderPlanState(c);
  for (const row of $("alarm-table").tBodies[0].rows) {
    const cell = row.querySelector("td.now");
    if (cell) renderAlarmNow(cell, row.dataset.channel);
  }
}

// --- plots -----------------------------------------------------------------------------------

function plottable(def) { return def && def.type !== "string"; }

function labelsOf(def) { return def.choices || (def.type === "bool" ? ["false", "true"] : null); }

// A live plot of the shown spacecraft's channel: the last 15 minutes from the archive, then live.
function addPlot(name) {
  const c = cur();
  const def = S.defs.get(name);
  if (!c || !plottable(def) || S.plots.some((p) => p.channel === name && p.sc === c.id && p.live)) return;
  const ring = new Ring(PLOT_POINTS);
  const entry = {ring, channel: name, sc: c.id, loaded: false, pending: [], live: true};
  entry.plot = new Plot($("plot-list"), ring, {
    title: name, unit: def.unit, labels: labelsOf(def), live: true, spanS: HISTORY_S,
    onClose: () => closePlot(entry),
  });
  const plotEl = entry.plot.el;
  plotEl.dataset.channel = name;
  plotEl.dataset.spacecraft = c.id;
  plotEl.dataset.history = "loading";
  entry.msg = el("div", {className: "msg hint", textContent: "loading the last 15 minutes from the archive…"});
  plotEl.append(entry.msg);
  const rec = record(c, name);
  const seed = [];
  for (let i = 0; i < rec.ring.n; i++) seed.push([rec.ring.time(i), rec.ring.value(i)]);
  rec.plots.push(entry);
  S.plots.push(entry);
  loadHistory(entry, def, seed);
  requestFrame();
}

function closePlot(entry) {
  entry.plot.dispose();
  S.plots = S.plots.filter((p) => p !== entry);
  const c = S.crafts.get(entry.sc);
  const rec = c && c.values.get(entry.channel);
  if (rec) rec.plots = rec.plots.filter((p) => p !== entry);
}

// One channel's archived points over a window, page after page (the server reads at most a page's samples per
// answer), up to maxPages: {answer (the last), times, values, complete, endS (where the points stop)}.
async function archiveSeries(params, maxPages) {
  let times = [], values = [], answer = null, next = null;
  for (let page = 0; page < maxPages; page++) {
    const q = new URLSearchParams(params);
    if (next) q.set("next", next);
    answer = await getJson(`/api/archive?${q}`);
    if (!answer.ok) break;
    const data = (answer.body.channels || {})[params.channel] || {times: [], values: []};
    times = times.concat(data.times);
    values = values.concat(data.values);
    next = answer.body.next;
    if (answer.body.complete || !next) return {answer, times, values, complete: true, endS: answer.body.to_s};
  }
  return {answer, times, values, complete: false, endS: answer.ok ? answer.body.page_end_s : NaN};
}

async function loadHistory(entry, def, seed) {
  // The last 15 minutes of the spacecraft's telemetry, by its packet times (the archive's and the plot's axis): the
  // agent's clock, not this computer's (found in audit: a board whose clock is off, or a simulated one under the
  // harness, got "0 archived samples" over an archive full of them). This computer's clock before any came.
  const c = S.crafts.get(entry.sc);
  const toS = c && typeof c.hkTimeS === "number" ? c.hkTimeS : Date.now() / 1000, fromS = toS - HISTORY_S;
  const series = await archiveSeries({spacecraft: entry.sc, channel: entry.channel, from: String(fromS),
                                      to: String(toS + 60), max_points: String(HISTORY_MAX_POINTS)}, HISTORY_PAGES_MAX);
  const answer = series.answer;
  const plotEl = entry.plot.el;
  let times = [], values = [];
  if (answer.ok) {
    times = series.times;
    values = series.values.map((v) => numeric(def, v));
    entry.msg.textContent = series.complete ? `${times.length} archived samples from the last 15 minutes, then live`
      : `${times.length} archived samples from the last 15 minutes up to ${utcClock(series.endS)} UTC (more than ` +
        `${HISTORY_PAGES_MAX} pages), then live`;
    plotEl.dataset.history = "archive";
  } else {
    entry.msg.textContent = entry.msg.title = `archive: ${answer.body.error} (HTTP ${answer.status}); showing what this page received`;
    entry.msg.className = "msg error";
    plotEl.dataset.history = "error";
  }
  plotEl.dataset.status = String(answer.status);
  // Archive first, then what this page had and what came while asking: times only go forward.
  let last = -Infinity;
  const put = (t, v) => { if (typeof t === "number" && t > last) { entry.ring.push(t, v); last = t; } };
  for (let i = 0; i < times.length; i++) put(times[i], values[i]);
  for (const [t, v] of seed) put(t, v);
  for (const [t, v] of entry.pending) put(t, v);
  entry.pending = [];
  entry.loaded = true;
  entry.plot.request();
}

function clearPlots() {
  for (const p of [...S.plots]) if (p.live) closePlot(p);
}

function buildPlotControls() {
  const sel = $("plot-channel");
  for (const def of S.dict.channels) if (plottable(def)) sel.append(el("option", {value: def.name, textContent: def.name}));
  $("plot-add").addEventListener("click", () => addPlot(sel.value));
  window.requestPlotFrame = requestFrame;
}

// --- events ----------------------------------------------------------------------------------

function eventRow(e) {
  const name = e.ground ? `${e.name} (ground)` : (e.played_back ? `${e.name} (played back)` : e.name);
  return el("tr", {dataset: {severity: e.severity, name: e.name, ground: e.ground ? "true" : "false",
                             playedBack: e.played_back ? "true" : "false"}},
    el("td", {className: "time", textContent: utcWhen(e.time_s)}),
    el("td", {textContent: e.severity}),
    el("td", {textContent: name}),
    el("td", {textContent: e.text}));
}

// Where an event goes among those held (oldest first): live news last; one played back from the agent's store
// happened out of contact, before what came live meanwhile, so where its time places it (found in audit: it went on
// top of the table, unmarked, an old event read as the newest).
function eventPlace(events, e) {
  let at = events.length;
  if (e.played_back) while (at > 0 && events[at - 1].time_s > e.time_s) at--;
  return at;
}

// An event once: one the page holds already is dropped, by its seq (the page's socket is registered before its
// snapshot is read, so the events between come in both) or, taken from the archive, by its time, name and text.
const eventKey = (e) => `${e.time_s}|${e.name}|${e.text}`;

function addEvent(c, e) {
  if (typeof e.seq === "number") {
    if (e.seq <= c.eventSeq) return;
    c.eventSeq = e.seq;
  }
  const key = eventKey(e);
  if (c.events.some((x) => typeof x.seq !== "number" && eventKey(x) === key)) return;
  const at = eventPlace(c.events, e);
  c.events.splice(at, 0, e);
  const rowAt = c.events.length - 1 - at;  // the table is newest first
  if (c.events.length > KEEP_EVENT_ROWS) c.events.splice(0, c.events.length - KEEP_EVENT_ROWS);
  if (c.id !== S.current) return;
  const body = $("event-table").tBodies[0];
  body.insertBefore(eventRow(e), body.rows[rowAt] || null);
  while (body.rows.length > KEEP_EVENT_ROWS) body.deleteRow(body.rows.length - 1);
}

function renderEvents(c) {
  const body = $("event-table").tBodies[0];
  body.replaceChildren(...c.events.slice(-KEEP_EVENT_ROWS).reverse().map(eventRow));
}

// --- alarms ----------------------------------------------------------------------------------

function setAlarm(c, a) {
  // An older copy of the same alarm (an acknowledgement's answer that waited on the archive, arriving after the
  // push that cleared it: found in audit, the row went back to acknowledged) is ignored; a new raising is not.
  const old = c.alarms.get(a.channel);
  if (old && old.raised_s === a.raised_s && (old.rev || 0) > (a.rev || 0)) return;
  c.alarms.set(a.channel, a);
  renderChooser();
  if (c.id === S.current) upsertAlarm(a);
}

function upsertAlarm(a) {
  const body = $("alarm-table").tBodies[0];
  const id = `alarm-${a.channel}`;
  let row = document.getElementById(id);
  if (!row) {
    row = el("tr", {id});
    body.prepend(row);
  }
  row.dataset.status = a.status;
  row.dataset.level = a.state;
  row.dataset.channel = a.channel;
  const def = S.defs.get(a.channel);
  const unit = def ? def.unit : "";
  const now = el("td", {className: "num now"});
  renderAlarmNow(now, a.channel);
  const status = a.status === "acknowledged" ? "acknowledged, waiting for nominal" : a.status;
  const actions = el("td", {});
  if (canOperate()) {
    const ack = el("button", {type: "button", className: "ack", textContent: "Acknowledge", disabled: a.status !== "active"});
    ack.addEventListener("click", () => acknowledge(a.channel, ack));
    actions.append(ack);
  }
  row.replaceChildren(
    el("td", {textContent: a.channel}),
    el("td", {className: "level", textContent: a.state}),
    el("td", {className: "time", textContent: utcWhen(a.raised_s)}),
    el("td", {className: "num", textContent: `${fmtValue(a.value)} ${unit}`}),
    now,
    el("td", {className: "status", textContent: status + (a.acknowledged_by ? ` (${a.acknowledged_by})` : "")}),
    actions);
  countAlarms();
}

// The alarm's "now" column follows the live value (the server reports an alarm only when it changes).
function renderAlarmNow(cell, name) {
  const c = cur();
  const rec = c && c.values.get(name);
  if (!rec || rec.v === undefined) { cell.textContent = ""; return; }
  const state = valueState(c, name, performance.now());
  const def = S.defs.get(name);
  cell.textContent = `${fmtValue(rec.v)} ${def ? def.unit : ""} (${STATE_TEXT[state] || state})`;
  cell.dataset.state = state;
}

function renderAlarms(c) {
  $("alarm-table").tBodies[0].replaceChildren();
  const sorted = [...c.alarms.values()].sort((a, b) => (a.raised_s || 0) - (b.raised_s || 0));
  for (const a of sorted) upsertAlarm(a);
  countAlarms();
}

function countAlarms() {
  const rows = [...$("alarm-table").tBodies[0].rows];
  const open = rows.filter((r) => r.dataset.status !== "cleared").length;
  const unacked = rows.filter((r) => r.dataset.status === "active").length;
  const pill = $("alarm-count");
  pill.textContent = `${open} active, ${unacked} unacknowledged`;
  pill.dataset.state = unacked ? "bad" : (open ? "warn" : "ok");
}

async function acknowledge(channel, button) {
  button.disabled = true;
  const sc = S.current;
  const answer = await postJson("/api/alarms/ack", {spacecraft: sc, channel});
  const error = $("alarm-error");  // one line, cut where long (the whole text on hover): the panel keeps its height
  error.textContent = error.title = answer.ok ? "" : `${channel}: ${answer.body.error}`;
  if (answer.ok) setAlarm(craft(sc), answer.body); else button.disabled = false;
}

// --- the command form ------------------------------------------------------------------------

const INT_BOUNDS = {u8: [0, 255], u16: [0, 65535], u32: [0, 4294967295], u64: [0, null], i32: [-2147483648, 2147483647], i64: [null, null]};

function argInput(a) {
  const id = `arg-${a.name}`;
  let input;
  if (a.type === "enum") {
    input = el("select", {id, name: a.name});
    for (const c of a.choices) input.append(el("option", {value: c, textContent: c, selected: c === a.default}));
    if (a.default === undefined) input.prepend(el("option", {value: "", textContent: "— choose —", selected: true}));
    input.required = a.default === undefined;
  } else if (a.type === "bool") {
    input = el("input", {id, name: a.name, type: "checkbox", checked: a.default === true});
  } else if (a.type in INT_BOUNDS || a.type === "f32" || a.type === "f64") {
    input = el("input", {id, name: a.name, type: "number", step: a.type in INT_BOUNDS ? "1" : "any"});
    const [lo, hi] = INT_BOUNDS[a.type] || [null, null];
    const min = a.min ?? lo, max = a.max ?? hi;
    if (min != null) input.min = String(min);
    if (max != null) input.max = String(max);
    if (a.default !== undefined) input.value = String(a.default);
    input.required = a.default === undefined;
  } else {  // string, bytes (hex)
    input = el("input", {id, name: a.name, type: "text"});
    if (a.max_len) input.maxLength = a.type === "bytes" ? 2 * a.max_len : a.max_len;
    if (a.type === "bytes") input.pattern = "([0-9a-fA-F]{2})*";
    if (a.default !== undefined) input.value = String(a.default);
    input.required = a.default === undefined;
  }
  input.dataset.type = a.type;
  return input;
}

function rangeText(a) {
  const parts = [a.type];
  if (a.unit) parts.push(`[${a.unit}]`);
  if (a.min != null || a.max != null) parts.push(`${a.min ?? "…"} … ${a.max ?? "…"}`);
  if (a.max_len) parts.push(`≤ ${a.max_len} chars`);
  if (a.default !== undefined) parts.push(`default ${a.default}`);
  return parts.join(" ");
}

function currentCommand() { return S.dict.commands.find((c) => c.name === $("cmd-select").value); }

function renderCommandForm() {
  const cmd = currentCommand();
  $("cmd-desc").textContent = cmd.description;
  $("cmd-hazard").hidden = !cmd.hazardous;
  $("cmd-confirm-label").hidden = !cmd.hazardous;
  $("cmd-confirm").checked = false;
  $("cmd-error").textContent = "";
  const box = $("cmd-args");
  box.replaceChildren();
  for (const a of cmd.args) {
    box.append(el("div", {className: "arg"},
      el("label", {htmlFor: `arg-${a.name}`, textContent: a.name, title: a.description}),
      argInput(a),
      el("span", {className: "range", textContent: rangeText(a), title: a.description})));
  }
  updateSendButton();
}

function updateSendButton() {
  const cmd = currentCommand();
  $("cmd-send").disabled = cmd.hazardous && !$("cmd-confirm").checked;
}

function buildCommandForm() {
  if (!canOperate()) {  // a viewer sees the queue, never a form or a button that would be refused
    $("cmd-form").remove();
    for (const b of document.querySelectorAll(".operator-only")) b.remove();
    $("cmd-viewer-note").hidden = false;
    return;
  }
  const sel = $("cmd-select");
  for (const c of S.dict.commands) sel.append(el("option", {value: c.name, textContent: c.hazardous ? `${c.name} ⚠` : c.name}));
  sel.addEventListener("change", renderCommandForm);
  $("cmd-confirm").addEventListener("change", updateSendButton);
  $("cmd-form").addEventListener("submit", sendCommand);
  $("queue-hold").addEventListener("click", () => queueAction("hold"));
  $("queue-release").addEventListener("click", () => queueAction("release"));
  renderCommandForm();
}

async function sendCommand(e) {
  e.preventDefault();
  const form = $("cmd-form");
  if (!form.reportValidity()) { $("cmd-error").textContent = "fix the highlighted arguments"; return; }
  const cmd = currentCommand();
  const args = {};
  for (const a of cmd.args) {
    const input = $(`arg-${a.name}`);
    if (a.type === "bool") args[a.name] = input.checked;
    else if (input.value !== "") args[a.name] = input.value;  // text: the server converts, u64 keeps its digits
  }
  const confirm = cmd.hazardous && $("cmd-confirm").checked;
  const sc = S.current;
  $("cmd-send").disabled = true;
  const answer = await postJson("/api/commands", {spacecraft: sc, name: cmd.name, args, confirm});
  if (answer.ok) {
    $("cmd-error").textContent = "";
    setCommand(craft(sc), answer.body);
    form.dataset.lastId = String(answer.body.id);
    if (cmd.hazardous) $("cmd-confirm").checked = false;  // one confirmation, one command
  } else if (answer.status >= 400 && answer.status < 500) {
    $("cmd-error").textContent = `refused before sending: ${answer.body.error}`;
  } else {  // no answer, or the server's own fault: it may have queued the command (found in audit: "refused")
    $("cmd-error").textContent = `${cmd.name}: not known whether the server queued it (${answer.body.error}); ` +
      "look in the queue before sending it again";
  }
  updateSendButton();
}

// --- the command queue -----------------------------------------------------------------------

function setCommand(c, entry) {
  const old = c.commands.get(entry.id);
  // Stages only grow: an older copy arriving after a newer one (the answer after the push) is ignored.
  if (old && (old.stages || []).length > (entry.stages || []).length) return;
  c.commands.set(entry.id, entry);
  if (c.commands.size > KEEP_COMMAND_ROWS) {
    const oldest = Math.min(...c.commands.keys());
    c.commands.delete(oldest);
  }
  if (c.id === S.current) upsertCommand(entry);
}

function expectedStages(entry) {
  const out = ["queued"];
  if (entry.needs_approval) out.push("approved");
  // The agent's success reports come as the command asked for them (PUS-C acknowledgement flags).
  out.push("released", "sent", ...(entry.acks || ["accepted", "started", "completed"]));
  return out;
}

function upsertCommand(entry) {
  const body = $("cmd-history").tBodies[0];
  const id = `cmd-${entry.id}`;
  let row = document.getElementById(id);
  if (!row) {
    row = el("tr", {id});
    // Newest first: before the first row with a smaller id.
    const next = [...body.rows].find((r) => Number(r.dataset.id) < entry.id);
    body.insertBefore(row, next || null);
    while (body.rows.length > KEEP_COMMAND_ROWS) body.deleteRow(body.rows.length - 1);
  }
  const stages = entry.stages || [];
  Object.assign(row.dataset, {id: String(entry.id), state: entry.state, name: entry.name, who: entry.who,
                              approvedBy: entry.approved_by || "", spacecraft: entry.spacecraft});
  const chips = el("td", {className: "stages"});
  for (const s of stages) {
    const text = s.ok ? s.stage : `${s.stage} FAILED`;
    chips.append(el("span", {className: "stage", dataset: {stage: s.stage, ok: String(s.ok)},
                             title: `${utcClock(s.at_s)} UTC${s.by ? ` by ${s.by}` : ""}` +
                                    (s.reason ? `: ${s.reason}` : "")},
      text, el("small", {textContent: ` ${utcClock(s.at_s)}`})));
  }
  if (!FINAL.has(entry.state)) {  // what is still to come, greyed
    const reached = new Set(stages.map((s) => s.stage));
    for (const name of expectedStages(entry)) {
      if (!reached.has(name)) chips.append(el("span", {className: "stage", textContent: name, dataset: {stage: name, ok: "none"}, title: "not yet"}));
    }
  }
  const result = el("td", {className: "result-cell"});
  const failure = stages.find((s) => !s.ok);
  if (failure) result.append(el("span", {className: "reason", textContent: `${failure.code || failure.stage}: ${failure.reason || ""}`}));
  // With no failure, what its last stage says: that the agent was asked of an unknown outcome, that it is no longer
  // followed and may have run (found in audit: "unknown" or "unresolved" alone, the reason on no screen)
  const note = failure ? null : stages[stages.length - 1];
  if (note && note.reason) result.append(el("div", {className: "note", textContent: `${note.stage}: ${note.reason}`}));
  if (entry.result && Object.keys(entry.result).length) {
    result.append(el("span", {className: "result", textContent: JSON.stringify(entry.result)}));
  }
  let state = entry.state.replace("_", " ");
  if (entry.waiting_for && entry.deadline_s) state += ` (waiting for ${entry.waiting_for} until ${utcClock(entry.deadline_s).slice(0, 8)})`;
  const who = el("td", {className: "who"}, el("span", {className: "sent-by", textContent: entry.who}));
  if (entry.approved_by) who.append(el("span", {className: "approved-by", textContent: `approved by ${entry.approved_by}`}));
  else if (entry.needs_approval) who.append(el("span", {className: "needs-approval", textContent: "needs a second operator"}));
  const argText = Object.entries(entry.args || {}).map(([k, v]) => `${k}=${v}`).join(" ");
  row.replaceChildren(
    el("td", {className: "num", textContent: String(entry.id)}),
    el("td", {className: "cmd", textContent: `${entry.name} ${argText}`.trim(),
              title: entry.cmd_id ? `cmd_id ${entry.cmd_id}, ${entry.attempts} attempt(s)` : "not sent yet"}),
    who,
    el("td", {className: "state", textContent: state}),
    chips, result, commandActions(entry));
}

function commandActions(entry) {
  const cell = el("td", {className: "actions"});
  if (!canOperate()) return cell;
  if (entry.state === "pending_approval" && entry.who !== S.me.user) {  // the two-person rule: never one's own
    const approve = el("button", {type: "button", className: "approve", textContent: "Approve"});
    const reason = el("input", {type: "text", className: "reject-reason", placeholder: "reason", maxLength: 200});
    const reject = el("button", {type: "button", className: "reject", textContent: "Reject"});
    approve.addEventListener("click", () => entryAction(entry, "approve", {}, approve));
    reject.addEventListener("click", () => entryAction(entry, "reject", {reason: reason.value}, reject));
    cell.append(approve, reject, reason);
  }
  if ((entry.state === "pending_approval" || entry.state === "queued") &&
      (entry.who === S.me.user || S.me.role === "admin")) {
    const cancel = el("button", {type: "button", className: "cancel", textContent: "Cancel"});
    cancel.addEventListener("click", () => entryAction(entry, "cancel", {}, cancel));
    cell.append(cancel);
  }
  return cell;
}

async function entryAction(entry, action, extra, button) {
  button.disabled = true;
  const answer = await postJson(`/api/commands/${entry.id}/${action}`, {spacecraft: entry.spacecraft, ...extra});
  $("queue-error").textContent = answer.ok ? "" : `${action} command ${entry.id} (${entry.name}): ${answer.body.error}`;
  if (answer.ok) setCommand(craft(entry.spacecraft), answer.body); else button.disabled = false;
}

async function queueAction(action) {
  const sc = S.current;
  const answer = await postJson(`/api/queue/${action}`, {spacecraft: sc});
  $("queue-error").textContent = answer.ok ? "" : `${action} the queue: ${answer.body.error}`;
  if (answer.ok) setQueue(craft(sc), answer.body);
}

function setQueue(c, q) {
  c.queue = {held: !!q.held, held_by: q.held_by || "", counts: q.counts || {}};
  if (c.id === S.current) renderQueue(c);
}

function renderQueue(c) {
  const pill = $("queue-state");
  const q = c.queue;
  const counts = q.counts || {};
  const waiting = [];
  if (counts.pending_approval) waiting.push(`${counts.pending_approval} awaiting approval`);
  if (counts.queued) waiting.push(`${counts.queued} queued`);
  pill.textContent = (q.held ? `queue HELD by ${q.held_by || "?"}` : "queue running") + (waiting.length ? `: ${waiting.join(", ")}` : "");
  pill.dataset.state = q.held ? "warn" : "ok";
  pill.dataset.held = String(q.held);
  const hold = $("queue-hold"), release = $("queue-release");
  if (hold) hold.disabled = q.held;
  if (release) release.disabled = !q.held;
}

function renderCommands(c) {
  $("cmd-history").tBodies[0].replaceChildren();
  for (const entry of [...c.commands.values()].sort((a, b) => a.id - b.id)) upsertCommand(entry);
  renderQueue(c);
}

// --- header: link, dictionary, lag, drops, spacecraft ----------------------------------------

// Seconds since the spacecraft's last packet: the server's figure aged by the time since it
// came, or this page's own receipt if newer. null: nothing received yet.
function silence(c, nowMs) {
  let s = null;
  if (c.status && typeof c.status.silent_s === "number") s = c.status.silent_s + (nowMs - c.statusMs) / 1000;
  if (c.lastHkMs !== null) {
    const own = (nowMs - c.lastHkMs) / 1000;
    s = s === null ? own : Math.min(s, own);
  }
  return s;
}

function renderLink() {
  const c = cur();
  const link = $("link-state");
  if (!c || !c.status) { link.textContent = "link: —"; link.dataset.state = "unknown"; return; }
  const st = c.status;
  const silent = silence(c, performance.now());
  // What the page knows of the link comes through its socket to the server: with none open (the server away, or
  // it refused the socket), a silence is the page's own, not the spacecraft's (found in audit: "link SILENT" beside
  // "disconnected" while the agent was sending all along)
  if (S.serverAway) {
    link.textContent = "link: unknown (no live connection)";
    link.dataset.state = "unknown";
    link.title = "this page has no live connection to the ground server: nothing is known of the link until it has" +
      (silent === null ? "" : `; the last packet the page heard of came ${Math.round(silent)} s ago`);
    return;
  }
  if (silent === null) {
    link.textContent = st.link_error ? `link: ${st.link_error}` : "link: no telemetry yet";
    link.dataset.state = "bad";
  } else if (silent > c.staleMs / 1000) {
    link.textContent = `link SILENT ${Math.round(silent)} s`;
    link.dataset.state = "bad";
  } else {
    link.textContent = `link OK (${st.packets} packets)`;
    link.dataset.state = st.gaps_missing || st.bad_packets ? "warn" : "ok";
  }
  link.title = `${st.link}; ${st.gaps_missing} missing in gaps (${st.lost_live} lost live, some since played ` +
    `back), ${st.bad_packets} undecodable, ` +
    `${st.agent_restarts} agent restart(s); values older than ${(c.staleMs / 1000).toFixed(1)} s are shown stale` +
    (st.link_error ? `; ${st.link_error}` : "");
}

function renderDict() {
  const c = cur();
  const dict = $("dict-state");
  const st = c && c.status;
  const ours = S.dict.version_hash;
  if (!st || st.dict_match === null || st.dict_match === undefined) {
    dict.textContent = `dictionary ${ours} (agent not heard yet)`; dict.dataset.state = "warn";
  } else if (st.dict_match) {
    dict.textContent = `dictionary ${ours}`; dict.dataset.state = "ok";
  } else {
    dict.textContent = `dictionary MISMATCH: agent ${st.agent_dict_hash}, server ${ours}`; dict.dataset.state = "bad";
  }
  dict.title = dict.textContent;  // the header is one line: a pill cut short says it all on hover
}

function renderLag() {
  const st = S.serverStatus;
  const lag = $("lag");
  // The server's last figure is of a push path this page no longer has (found in audit: said beside "disconnected")
  lag.textContent = S.serverAway ? "push lag: — (no live connection)"
    : st && typeof st.push_lag_p99_ms === "number" ? `push lag p99 ${st.push_lag_p99_ms.toFixed(1)} ms` : "push lag: —";
  lag.title = `${lag.textContent}: server receipt → drawn in a page, p99 over the last 10 s`;
}

function renderDrops(d) {
  if (!d || d.points_total === undefined) return;
  const pill = $("drops");
  S.dropped = d.points_total;
  setText(pill, `dropped: ${d.points_total} points` + (d.control_total ? `, ${d.control_total} messages` : ""));
  setData(pill, "state", d.points_total || d.control_total ? "bad" : "ok");
  setData(pill, "points", String(d.points_total));
  if (d.points) setTitle(pill, `this page fell behind: the server dropped ${d.points} points just now`);
}

function applyStatus(m, nowMs) {
  S.serverStatus = m;
  for (const [sc, st] of Object.entries(m.spacecraft || {})) applyCraftStatus(craft(sc), st, nowMs);
  renderLag();
  renderLink();
  renderDict();
}

function applyCraftStatus(c, st, nowMs) {
  c.status = st;
  c.statusMs = nowMs;
  if (typeof st.stale_after_s === "number") c.staleMs = st.stale_after_s * 1000;
  if (st.queue) setQueue(c, st.queue);
  if (c.id === S.current) renderFilesState(c);
}

function renderChooser() {
  const sel = $("sc-select");
  for (const opt of sel.options) {
    const c = S.crafts.get(opt.value);
    const unacked = c ? [...c.alarms.values()].filter((a) => a.status === "active").length : 0;
    opt.textContent = unacked ? `${opt.value} (${unacked} alarm${unacked > 1 ? "s" : ""})` : opt.value;
  }
}

function buildChooser(ids) {
  const sel = $("sc-select");
  const had = [...sel.options].map((o) => o.value).join(",");
  if (had !== ids.join(",")) sel.replaceChildren(...ids.map((id) => el("option", {value: id, textContent: id})));
  const wanted = new URLSearchParams(location.hash.slice(1)).get("spacecraft");
  const next = ids.includes(S.current) ? S.current : (ids.includes(wanted) ? wanted : ids[0]);
  sel.value = next;
  sel.disabled = ids.length < 2;
  renderChooser();
  return next;
}

async function chooseSpacecraft(id) {
  if (id === S.current) return;
  S.current = id;
  history.replaceState(null, "", `#spacecraft=${encodeURIComponent(id)}`);
  clearPlots();
  renderAll();
  // The model follows every spacecraft's pushes; the server's snapshot makes sure nothing a full
  // queue dropped is missing.
  if (await resync(id) && S.current === id) {
    renderAll();
    loadEvents(id);
  }
}

// A spacecraft's model from the server's snapshot (/api/state). The snapshot is read after the request leaves, so
// what is pushed for the spacecraft from then on holds everything newer than it: applied again over it, in order
// (found in audit: an alarm raised, a command queued or an event pushed while the answer was on its way was wiped
// by it). Whether it was applied.
async function resync(id) {
  const since = {sc: id, messages: []};
  const hellos = S.hellos;
  S.catchUp.add(since);
  const answer = await getJson(`/api/state?spacecraft=${encodeURIComponent(id)}`);
  S.catchUp.delete(since);
  if (!answer.ok) return false;
  // A hello came meanwhile (the socket dropped and came back): its snapshot is newer than this answer, which would
  // undo what the hello brought that the pushes kept here never carried (found in review)
  if (hellos !== S.hellos) return true;
  if (since.full) return resync(id);  // more came meanwhile than it keeps: asked again
  const nowMs = performance.now();
  loadSnapshot(craft(id), answer.body, nowMs, false);
  for (const m of since.messages) handleControl(m, nowMs);
  return true;
}

// Control messages the server dropped for this page (it fell behind) are state the page lacks, an alarm raised or a
// command's stage: each spacecraft's is asked for again, one request at a time, once more for drops told meanwhile
// (found in audit: only counted, and an alarm so lost stayed off the page while it stayed active).
function resyncDropped(id) {
  if (S.resyncing.has(id)) { S.resyncing.set(id, true); return; }
  S.resyncing.set(id, false);
  resync(id).then((ok) => { if (ok && id === S.current) { renderAll(); loadEvents(id); } }).finally(() => {
    const again = S.resyncing.get(id);
    S.resyncing.delete(id);
    if (again) resyncDropped(id);
  });
}

// --- power plan --------------------------------------------------------------------------------
//
// The agent's energy plan (TM(140,1)) as the server keeps it: one SVG, rebuilt when a plan
// arrives; the "now" line and the time axis follow the spacecraft's newest telemetry time (the
// agent's clock, simulated under HIL), re-checked by tick(). Every text from the plan (mode
// names are the agent's data) goes in as textContent or an attribute value, never as markup.

const MODE_COLOURS = ["#2f81f7", "#3fb950", "#d29922", "#a371f7", "#f778ba", "#39c5cf", "#e3b341", "#ff7b72"];
const IDLE_COLOUR = "#6e7681";  // neutral grey: no mode, distinct from every mode and from shadow

function modeColour(k) {
  if (k < 0) return IDLE_COLOUR;
  return k < MODE_COLOURS.length ? MODE_COLOURS[k] : `hsl(${(k * 47) % 360}, 60%, 55%)`;
}

function svg(tag, attrs = {}, ...children) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  e.append(...children);
  return e;
}

function modeName(plan, k) {
  return k < 0 ? "idle" : String((plan.mode_names || [])[k] ?? `#${k}`);
}

// Whether a plan is to be trusted now: made within planStaleS of the newest housekeeping (both
// the agent's clock); with no housekeeping to judge by (a plan kept across a server restart) it is not.
function planState(c) {
  if (!c.plan) return {state: "none"};
  const age = typeof c.hkTimeS === "number" ? c.hkTimeS - c.plan.time_s : null;
  return {state: age !== null && age <= c.planStaleS ? "current" : "stale", age};
}

function setPlan(c, plan) {
  if (!plan || typeof plan !== "object") return;
  // Newest wins: an answer or snapshot older than a push that came meanwhile is ignored.
  if (c.plan && (plan.received_s ?? 0) < (c.plan.received_s ?? 0)) return;
  c.plan = plan;
  if (c.id === S.current) renderPlan(c);
}

const PLAN_W = 640, PLAN_H = 230;
const PLAN_BOX = {left: 40, right: 630, top: 10, bottom: 180, stripTop: 186, stripBottom: 200};

function renderPlan(c) {
  const chart = $("plan-chart"), legend = $("plan-legend"), msg = $("plan-msg");
  const plan = c.plan;
  chart.replaceChildren();
  legend.replaceChildren();
  S.planDrawn = null;
  if (!plan) {
    msg.textContent = c.planReason || "no power plan received yet: the agent sends one each time it makes a new plan";
    msg.className = "hint";
    renderPlanState(c);
    return;
  }
  const n = plan.mode.length, t0 = plan.start_unix_s, dt = plan.step_s, t1 = t0 + n * dt;
  if (!(dt > 0) || !Number.isFinite(t1)) {  // the agent's data: a plan that cannot be drawn is said so
    msg.textContent = `the plan made ${utcClock(plan.time_s).slice(0, 8)} UTC has a step of ${dt} s: nothing to draw`;
    msg.className = "error";
    renderPlanState(c);
    return;
  }
  const B = PLAN_BOX;
  const x = (t) => B.left + (t - t0) / (t1 - t0) * (B.right - B.left);
  const y = (pct) => B.bottom - Math.max(0, Math.min(100, pct)) / 100 * (B.bottom - B.top);
  const root = svg("svg", {viewBox: `0 0 ${PLAN_W} ${PLAN_H}`, role: "img", "aria-label": "power plan",
                           "data-steps": n});
  // Earth shadow: one rect per run of umbra steps.
  const shade = svg("g", {class: "umbras"});
  for (let i = 0; i < n;) {
    if (!plan.umbra[i]) { i++; continue; }
    let j = i;
    while (j < n && plan.umbra[j]) j++;
    shade.append(svg("rect", {class: "umbra", x: x(t0 + i * dt), y: B.top, width: x(t0 + j * dt) - x(t0 + i * dt),
                              height: B.bottom - B.top, "data-from-step": i, "data-to-step": j},
                     svg("title", {}, `Earth shadow, steps ${i}–${j - 1}`)));
    i = j;
  }
  root.append(shade);
  // Charge axis: 0..100 %.
  const yAxis = svg("g", {class: "axis y"});
  for (const pct of [0, 25, 50, 75, 100]) {
    yAxis.append(svg("line", {class: "grid", x1: B.left, x2: B.right, y1: y(pct), y2: y(pct)}),
                 svg("text", {x: B.left - 4, y: y(pct) + 3, "text-anchor": "end"}, `${pct}%`));
  }
  root.append(yAxis);
  // The charge the plan keeps (floor + margin), then the charge it predicts.
  root.append(svg("line", {class: "keep", x1: B.left, x2: B.right, y1: y(plan.keep_pct), y2: y(plan.keep_pct)}),
              svg("text", {class: "keep-label", x: B.right - 2, y: y(plan.keep_pct) - 3, "text-anchor": "end"},
                  `keeps ${fmtNum(plan.keep_pct)} %`));
  const points = plan.soc_pct.map((v, k) => `${x(t0 + k * dt).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
  root.append(svg("polyline", {class: "soc", points, "data-points": plan.soc_pct.length},
                  svg("title", {}, `predicted charge: ${fmtNum(plan.soc_pct[0])} % now, lowest ` +
                                   `${fmtNum(Math.min(...plan.soc_pct))} %`)));
  // The mode of each step: a strip of cells, idle in its own grey.
  const strip = svg("g", {class: "modes"});
  const used = new Set();
  for (let i = 0; i < n; i++) {
    const k = plan.mode[i], name = modeName(plan, k);
    used.add(k);
    strip.append(svg("rect", {class: "mode-cell", x: x(t0 + i * dt), y: B.stripTop,
                              width: Math.max(0.5, x(t0 + (i + 1) * dt) - x(t0 + i * dt)),
                              height: B.stripBottom - B.stripTop, fill: modeColour(k),
                              "data-mode": name, "data-mode-index": k, "data-step": i},
                     svg("title", {}, `step ${i}: ${name}${plan.umbra[i] ? ", in shadow" : ""}`)));
  }
  root.append(strip);
  root.append(svg("g", {class: "axis x"}), svg("line", {class: "now", y1: B.top, y2: B.stripBottom, x1: 0, x2: 0}));
  chart.append(root);
  S.planDrawn = {c, root, x, t0, t1, nowS: null};
  // Legend: every mode the plan may name (lowest first), idle, and what the marks mean.
  const item = (swatch, text, mode) => el("span", {className: "legend-item", dataset: mode === undefined ? {} : {mode}},
                                           swatch, text);
  const names = [...(plan.mode_names || []).keys()];
  for (const k of [-1, ...names]) {
    const name = modeName(plan, k);
    const sw = el("span", {className: "swatch"});
    sw.style.background = modeColour(k);
    legend.append(item(sw, used.has(k) ? name : `${name} (not planned)`, name));
  }
  legend.append(item(el("span", {className: "swatch umbra-swatch"}), "Earth shadow"),
                item(el("span", {className: "swatch keep-swatch"}), "charge kept (floor + margin)"));
  msg.textContent = `plan made ${utcClock(plan.time_s).slice(0, 8)} UTC, solve ${fmtNum(plan.solve_ms)} ms, ` +
    `${n} steps of ${fmtNum(dt)} s`;
  msg.className = "hint";
  renderPlanState(c);
}

// The time axis in minutes from now (the newest telemetry's packet time), and the now line.
function renderPlanNow(c) {
  const d = S.planDrawn;
  if (!d || d.c !== c) return;
  const nowS = typeof c.hkTimeS === "number" ? c.hkTimeS : c.plan.time_s;
  if (d.nowS !== null && Math.abs(nowS - d.nowS) < PLAN_NOW_STEP_S) return;
  d.nowS = nowS;
  const B = PLAN_BOX;
  const span = d.t1 - d.t0;
  const stepS = [300, 600, 900, 1800, 3600, 7200, 21600].find((s) => span / s <= 8) || span / 4;
  const axis = d.root.querySelector("g.axis.x");
  axis.replaceChildren();
  // At most a dozen ticks, whatever the times (a wild t0 must not spin this loop forever).
  const k0 = Math.ceil((d.t0 - nowS) / stepS);
  for (let k = k0; k < k0 + 12 && Number.isFinite(k) && nowS + k * stepS <= d.t1; k++) {
    const tx = d.x(nowS + k * stepS);
    const rel = Math.round(k * stepS / 60);
    axis.append(svg("line", {x1: tx, x2: tx, y1: B.stripBottom, y2: B.stripBottom + 4}),
                svg("text", {x: tx, y: B.stripBottom + 15, "text-anchor": "middle"},
                    rel === 0 ? "now" : `${rel > 0 ? "+" : "−"}${Math.abs(rel)} min`));
  }
  const line = d.root.querySelector("line.now");
  const inside = nowS >= d.t0 && nowS <= d.t1;
  line.setAttribute("visibility", inside ? "visible" : "hidden");
  if (inside) { line.setAttribute("x1", d.x(nowS)); line.setAttribute("x2", d.x(nowS)); }
}

function renderPlanState(c) {
  const {state, age} = planState(c);
  const section = $("plan"), pill = $("plan-state");
  let text = "no plan", pillState = "unknown", title = "";
  if (state === "current") {
    text = "current"; pillState = "ok";
    title = `made ${Math.round(age)} s before the newest telemetry`;
  } else if (state === "stale") {
    pillState = "bad";
    text = age === null ? "STALE: no telemetry yet to judge it by"
      : `STALE: made ${Math.round(age / 60)} min before the newest telemetry`;
    title = `a plan older than ${c.planStaleS} s against the spacecraft's telemetry is not the one in force`;
  }
  if (section.dataset.state !== state) section.dataset.state = state;
  if (pill.textContent !== text) pill.textContent = text;
  pill.dataset.state = pillState;
  pill.title = title;
  if (state !== "none") renderPlanNow(c);
}

// --- passes: completeness per pass (GET /api/passes), newest first --------------------------------

const PASSES_SHOWN = 20;
const PASSES_REFRESH_MS = 30000;  // the server counts a pass every 10 s; a table need not follow faster

async function loadPasses() {
  const sc = S.current;
  if (sc === null) return;
  const answer = await getJson(`/api/passes?spacecraft=${encodeURIComponent(sc)}&limit=${PASSES_SHOWN}`);
  if (sc !== S.current) return;
  const msg = $("passes-msg"), body = $("pass-table").tBodies[0];
  if (!answer.ok) {
    msg.textContent = `passes: ${answer.body.error} (HTTP ${answer.status})`;
    msg.className = "error";
    return;
  }
  msg.className = "hint";
  const passes = answer.body.passes || [];
  msg.textContent = passes.length ? "" : "no pass counted yet";
  body.replaceChildren(...passes.slice().reverse().map((p) => {
    const minutes = Math.max(0, (p.end_s - p.start_s) / 60);
    const perApid = (p.apids || []).map((a) => `APID 0x${a.apid.toString(16).padStart(3, "0")}: ${a.received} live, ` +
      `${a.played_back} played back, ${a.missing} missing, ${a.duplicates} duplicates`).join("\n");
    return el("tr", {dataset: {open: String(Boolean(p.open)), missing: String(p.missing)}, title: perApid},
      el("td", {textContent: new Date(p.start_s * 1000).toISOString().slice(0, 19).replace("T", " ") +
                             (p.open ? " (now)" : "")}),
      el("td", {className: "num", textContent: `${minutes.toFixed(1)} min`}),
      el("td", {className: "num", textContent: String(p.received)}),
      el("td", {className: "num", textContent: String(p.played_back)}),
      el("td", {className: "num missing", textContent: String(p.missing)}),
      el("td", {className: "num", textContent: String(p.duplicates)}));
  }));
}

// --- files: CFDP transfers (ground/files.py), each with its progress ------------------------------
//
// The server pushes a "file" message at each change of a transfer and twice a second while it
// moves; a row whose state did not change only has its progress redrawn.

const KEEP_FILE_ROWS = 300;
const FILE_SETTLED = new Set(["done", "failed", "cancelled"]);

function sizeText(n) {
  if (typeof n !== "number") return "?";
  for (const [unit, scale] of [["GB", 1e9], ["MB", 1e6], ["kB", 1e3]]) {
    if (n >= scale) return `${(n / scale).toFixed(1)} ${unit}`;
  }
  return `${n} B`;
}

function setFile(c, rec) {
  const old = c.files.get(rec.id);
  // An older copy arriving after a newer one (a request's answer after the pushes of a fast transfer) is ignored.
  if (old && (old.rev || 0) > (rec.rev || 0)) return;
  c.files.set(rec.id, rec);
  if (c.files.size > KEEP_FILE_ROWS) {
    const oldest = [...c.files.values()].filter((r) => FILE_SETTLED.has(r.state))
      .sort((a, b) => (a.finished_s || 0) - (b.finished_s || 0))[0];
    if (oldest) c.files.delete(oldest.id);
  }
  if (c.id !== S.current) return;
  const row = document.getElementById(`file-${rec.id}`);
  if (row && old && old.state === rec.state && old.local === rec.local) fillFileRow(row, rec); else renderFiles(c);
}

// In progress first (oldest first), then the settled ones, newest first.
function fileOrder(a, b) {
  const sa = FILE_SETTLED.has(a.state), sb = FILE_SETTLED.has(b.state);
  if (sa !== sb) return sa ? 1 : -1;
  return sa ? (b.finished_s || 0) - (a.finished_s || 0) : (a.requested_s || 0) - (b.requested_s || 0);
}

function renderFiles(c) {
  $("file-table").tBodies[0].replaceChildren(...[...c.files.values()].sort(fileOrder).map((r) => fileRow(c, r)));
  renderFilesState(c);
}

// As the link pill: with no socket open to the server, the contact it last said is not known to hold (found in audit:
// "file link: in contact" beside "disconnected").
function renderFilesState(c) {
  const pill = $("files-state"), st = c.status && c.status.files;
  const [text, state] = !st ? ["file link: —", "unknown"]
    : S.serverAway ? ["file link: unknown (no live connection)", "unknown"]
    : st.suspended ? ["file link: suspended (no telemetry heard)", "warn"] : ["file link: in contact", "ok"];
  if (pill.textContent !== text) pill.textContent = text;
  pill.dataset.state = state;
}

function fileRow(c, r) {
  const tr = el("tr", {id: `file-${r.id}`, dataset: {direction: r.direction}},
    el("td", {textContent: r.id}),
    el("td", {textContent: r.direction === "up" ? "↑ up" : "↓ down"}),
    el("td", {className: "file", textContent: r.remote || "?", title: r.local ? `ground: ${r.local}` : ""}),
    el("td", {className: "progress"}, el("progress", {max: 1}), el("span")),
    el("td", {className: "state"}, el("span"), el("small", {className: "reason"})),
    el("td", {textContent: r.who || "(the agent)"}),
    el("td", {className: "actions"}));
  fillFileRow(tr, r);
  const actions = tr.cells[6];
  if (!FILE_SETTLED.has(r.state) && canOperate()) {
    actions.append(el("button", {type: "button", className: "file-cancel", textContent: "Cancel",
                                 disabled: FILE_CANCELLING.has(`${c.id}/${r.id}`),
                                 onclick: () => cancelFile(c.id, r.id)}));
  } else if (r.direction === "down" && r.state === "done") {
    // A later transfer of the name keeps this one's file beside it (its record follows: another local); one that
    // still names the same file as a later one no longer holds its own (changed in the file area: 410).
    const later = [...c.files.values()].find((o) => o.id !== r.id && o.direction === "down" && o.state === "done"
      && o.local === r.local && (o.finished_s || 0) > (r.finished_s || 0));
    if (later) actions.append(`replaced by ${later.id}`);
    else {
      const save = el("a", {className: "file-save", textContent: "Save", download: (r.remote || r.id).split("/").pop(),
        href: `/api/files/${encodeURIComponent(r.id)}/content?spacecraft=${encodeURIComponent(c.id)}`});
      save.addEventListener("click", (ev) => saveFile(ev, save));
      actions.append(save);
    }
  }
  return tr;
}

// Save asks the server first: a file no longer as it came down (changed or removed in the server's file area) is
// refused, 410 or 409, and a download the browser starts on that says only "failed" (found in audit: the server's
// reason on no screen). The answer's head is enough: a good one is dropped there and the browser downloads the file.
async function saveFile(ev, link) {
  if (link.dataset.checked === "true") { delete link.dataset.checked; return; }  // the click made below: downloads
  ev.preventDefault();
  if (link.dataset.checking === "true") return;  // a double click: one question, one download
  link.dataset.checking = "true";
  const stop = new AbortController();
  let answer;
  try {
    const r = await fetch(link.href, {credentials: "same-origin", signal: stop.signal});
    if (r.ok) { stop.abort(); answer = {ok: true}; } else answer = await answerOf(r);
  } catch (err) {
    answer = {ok: false, status: 0, body: {error: `cannot reach the server: ${err}`}};
  } finally {
    delete link.dataset.checking;
  }
  if (!answer.ok) { fileError(`save ${link.download}: ${answer.body.error}`); return; }
  fileError("");
  link.dataset.checked = "true";
  link.click();
}

function fillFileRow(tr, r) {
  const bar = tr.querySelector("progress"), text = tr.querySelector("td.progress span");
  const size = typeof r.size === "number" ? r.size : null, done = Number(r.progress) || 0;
  let pct = null;
  if (size !== null) pct = size > 0 ? Math.min(100, Math.floor(100 * done / size)) : (r.state === "done" ? 100 : 0);
  if (pct === null) bar.removeAttribute("value");  // size not known yet: an indeterminate bar
  else { bar.max = 100; bar.value = pct; }
  text.textContent = pct === null ? sizeText(done) : `${pct}% · ${sizeText(done)} of ${sizeText(size)}`;
  tr.dataset.state = r.state;
  tr.dataset.pct = pct === null ? "" : String(pct);
  // A product come down: whether the board vouches for it (ground/receipts.py), its verdict the reason.
  tr.dataset.vouched = r.product ? String(Boolean(r.product.vouched)) : "";
  tr.querySelector("td.state span").textContent = r.state;
  tr.querySelector("td.state .reason").textContent = r.reason || "";
}

function fileError(text) { $("files-error").textContent = text; }

async function loadFiles() {
  const sc = S.current;
  const answer = await getJson(`/api/files?spacecraft=${encodeURIComponent(sc)}`);
  if (sc !== S.current) return;
  if (!answer.ok) { fileError(`files: ${answer.body.error} (HTTP ${answer.status})`); return; }
  fileError("");
  const c = craft(sc);
  c.files = new Map((answer.body.transfers || []).map((r) => [r.id, r]));
  renderFiles(c);
}

// A request of the Files panel goes once: its button is disabled before the request goes and enabled
// again when it is answered (found in audit: a double click queued two uploads, or two gets).
async function getFile(e) {
  e.preventDefault();
  const button = $("file-get");
  if (button.disabled) return;  // Enter in the name field while the last one is on its way
  const sc = S.current, name = $("file-get-name").value.trim();
  button.disabled = true;
  try {
    const answer = await postJson("/api/files/get", {spacecraft: sc, name});
    if (!answer.ok) { fileError(`get ${name}: ${answer.body.error}`); return; }
    fileError("");
    $("file-get-name").value = "";
    setFile(craft(sc), answer.body);
  } finally {
    button.disabled = false;
  }
}

async function putFile(e) {
  e.preventDefault();
  const button = $("file-put");
  if (button.disabled) return;
  const sc = S.current, file = $("file-put-file").files[0], name = $("file-put-name").value.trim();
  if (!file) { fileError("choose a file to send"); return; }
  const q = new URLSearchParams({spacecraft: sc, name, filename: file.name});
  button.disabled = true;
  try {
    let answer;
    try {
      answer = await answerOf(await fetch(`/api/files/put?${q}`, {
        method: "POST", credentials: "same-origin", body: file,
        headers: {"Content-Type": "application/octet-stream", "X-CSRF-Token": S.me.csrf}}));
    } catch (err) {
      answer = {ok: false, status: 0, body: {error: `cannot reach the server: ${err}`}};
    }
    if (!answer.ok) { fileError(`send ${file.name}: ${answer.body.error}`); return; }
    fileError("");
    $("file-put-form").reset();
    setFile(craft(sc), answer.body);
  } finally {
    button.disabled = false;
  }
}

const FILE_CANCELLING = new Set();  // "spacecraft/id" whose cancel is on its way: its button stays disabled

async function cancelFile(sc, id) {
  const key = `${sc}/${id}`;
  if (FILE_CANCELLING.has(key)) return;
  FILE_CANCELLING.add(key);
  const button = document.querySelector(`#file-${CSS.escape(id)} button.file-cancel`);
  if (button) button.disabled = true;
  try {
    const answer = await postJson(`/api/files/${encodeURIComponent(id)}/cancel`, {spacecraft: sc});
    if (!answer.ok) { fileError(`cancel ${id}: ${answer.body.error}`); return; }
    fileError("");
    setFile(craft(sc), answer.body);
  } finally {
    FILE_CANCELLING.delete(key);
    const now = document.querySelector(`#file-${CSS.escape(id)} button.file-cancel`);  // the row may be new
    if (now) now.disabled = false;
  }
}

function buildFiles() {
  $("files-refresh").addEventListener("click", loadFiles);
  if (!canOperate()) return;  // the forms went with the other operator-only controls
  $("file-get-form").addEventListener("submit", getFile);
  $("file-put-form").addEventListener("submit", putFile);
  $("file-put-file").addEventListener("change", () => {
    const file = $("file-put-file").files[0];
    if (file && !$("file-put-name").value.trim()) $("file-put-name").value = `staging/${file.name}`;
  });
}

// The Refresh button: the server's word, in case a push was dropped.
async function loadPlan() {
  const sc = S.current;
  const msg = $("plan-msg");
  const answer = await getJson(`/api/plan?spacecraft=${encodeURIComponent(sc)}`);
  if (sc !== S.current) return;
  msg.dataset.status = String(answer.status);
  const c = craft(sc);
  if (!answer.ok) {
    msg.textContent = `power plan: ${answer.body.error} (HTTP ${answer.status})`;
    msg.className = "error";
    return;
  }
  if (typeof answer.body.stale_after_s === "number") c.planStaleS = answer.body.stale_after_s;
  if (answer.body.available) setPlan(c, answer.body.plan);
  else { c.planReason = answer.body.reason || ""; if (!c.plan) renderPlan(c); }
}

// --- snapshot, hello and the other control messages ------------------------------------------

// A spacecraft's snapshot (hello, /api/state): values keep the age the server measured; events,
// alarms and commands replace the page's (the server's are the whole truth).
function loadSnapshot(c, snap, nowMs, replaceValues) {
  for (const [name, x] of Object.entries(snap.latest || {})) {
    const r = c.values.get(name);
    if (!replaceValues && r && r.t !== null && typeof x.time_s === "number" && r.t >= x.time_s) continue;
    setValue(c, name, x.value, x.time_s, nowMs - (Number(x.age_s) || 0) * 1000);
  }
  for (const p of S.dict.packets) {  // a packet's receive time: its freshest channel's
    let best = null;
    for (const name of p.channels) {
      const r = c.values.get(name);
      if (r && r.seenMs !== null && (best === null || r.seenMs > best.seenMs)) best = {seenMs: r.seenMs, t: r.t};
    }
    const had = c.packetSeen.get(p.sid);
    if (best && (!had || had.seenMs < best.seenMs)) {
      c.packetSeen.set(p.sid, {seenMs: best.seenMs, wallS: Date.now() / 1000 - (nowMs - best.seenMs) / 1000, t: best.t});
    }
  }
  let hk = null;  // the newest housekeeping's packet time the server has
  for (const x of Object.values(snap.latest || {})) if (typeof x.time_s === "number" && (hk === null || x.time_s > hk)) hk = x.time_s;
  if (hk !== null && (c.hkTimeS === null || hk > c.hkTimeS)) c.hkTimeS = hk;
  if (typeof snap.plan_stale_after_s === "number") c.planStaleS = snap.plan_stale_after_s;
  if (snap.plan) setPlan(c, snap.plan);
  c.events = [];  // the server's in the order they came: each played-back one where its time places it, as pushed
  for (const e of snap.events || []) c.events.splice(eventPlace(c.events, e), 0, e);
  c.events = c.events.slice(-KEEP_EVENT_ROWS);
  c.eventSeq = Number(snap.events_seq) || 0;  // an event numbered past it is still to come (or to apply again)
  c.alarms = new Map((snap.alarms || []).map((a) => [a.channel, a]));
  c.commands = new Map((snap.commands || []).map((e) => [e.id, e]));
  if (Array.isArray(snap.files)) c.files = new Map(snap.files.map((r) => [r.id, r]));
  if (snap.status) applyCraftStatus(c, snap.status, nowMs);
}

async function loadLimits(id, tries = 3) {
  const c = craft(id);
  const pushed = c.limitsPushed;
  const answer = await getJson(`/api/dictionary?spacecraft=${encodeURIComponent(id)}`);
  if (!answer.ok) return;
  // A change pushed while it was on its way is newer than the answer: ask again. The answer is the whole
  // truth, a channel without limits included (found in audit: bounds removed while the page was away were
  // kept on reconnect, and the channel judged by them).
  if (c.limitsPushed !== pushed) { if (tries > 1) loadLimits(id, tries - 1); return; }
  for (const ch of answer.body.channels) c.limits.set(ch.name, ch.limits || null);
  if (id === S.current) for (const name of S.rows.keys()) S.dirtyRows.add(name);
  requestFrame();
}

// Events from before this server started are in the archive (/api/events): merged under the
// snapshot's, each event once.
async function loadEvents(id) {
  const answer = await getJson(`/api/events?spacecraft=${encodeURIComponent(id)}&limit=${KEEP_EVENT_ROWS}`);
  if (!answer.ok) return;
  const c = craft(id);
  const seen = new Set(c.events.map(eventKey));
  // One of this run numbered past what the page holds is still to be pushed: taken then, not twice.
  const toCome = (e) => typeof e.seq === "number" && e.seq > c.eventSeq;
  const older = (answer.body.events || []).filter((e) => !seen.has(eventKey(e)) && !toCome(e));
  if (!older.length) return;
  c.events = [...older, ...c.events].sort((a, b) => a.time_s - b.time_s).slice(-KEEP_EVENT_ROWS);
  if (id === S.current) renderEvents(c);
}

function hello(m, nowMs) {
  // The form and buttons were built for the session's role; one changed since (the users file
  // applies at once) rebuilds the page.
  if (m.role !== S.me.role) { location.reload(); return; }
  S.me.user = m.user;
  renderUser();
  S.hellos += 1;
  S.serverAway = false;
  for (const [sc, snap] of Object.entries(m.states || {})) loadSnapshot(craft(sc), snap, nowMs, true);
  S.current = buildChooser(m.spacecraft || []);
  if (m.status) applyStatus(m.status, nowMs);
  for (const sc of m.spacecraft || []) { loadLimits(sc); loadEvents(sc); }
  renderAll();
  document.body.dataset.ready = "true";
}

function renderAll() {
  const c = cur();
  if (!c) return;
  for (const name of S.rows.keys()) S.dirtyRows.add(name);
  for (const key of S.packetHeads.keys()) S.dirtyPackets.add(key);
  renderEvents(c);
  renderAlarms(c);
  renderCommands(c);
  renderLink();
  renderDict();
  renderChooser();
  renderPlan(c);
  renderFiles(c);
  loadPlan();
  loadPasses();
  if (!S.plots.some((p) => p.live && p.sc === c.id)) addPlot("uptime_s");
  requestFrame();
}

function handleControl(m, nowMs) {
  const c = m.spacecraft && typeof m.spacecraft === "string" ? craft(m.spacecraft) : null;
  for (const w of S.catchUp) {
    if (!c || w.sc !== c.id) continue;
    if (w.messages.length < MAX_CATCH_UP) w.messages.push(m); else w.full = true;
  }
  switch (m.kind) {
    case "hello": hello(m, nowMs); break;
    case "status": applyStatus(m, nowMs); break;
    case "event": if (c) addEvent(c, m); break;
    case "alarm": if (c) setAlarm(c, m.alarm); break;
    case "command": if (c) setCommand(c, m.command); break;
    case "queue": if (c) setQueue(c, m); break;
    case "plan": if (c) setPlan(c, m.plan); break;
    case "file": if (c && m.transfer) setFile(c, m.transfer); break;
    case "limits":
      if (!c) break;
      c.limitsPushed += 1;
      for (const [name, lim] of Object.entries(m.limits || {})) c.limits.set(name, lim);
      if (c.id === S.current) for (const name of Object.keys(m.limits || {})) S.dirtyRows.add(name);
      break;
  }
}

// --- the data path ---------------------------------------------------------------------------

function apply(batch, nowMs) {
  for (const m of batch.control || []) handleControl(m, nowMs);
  const wallS = Date.now() / 1000;
  for (const [sc, sid, t, values] of batch.hk || []) {
    const p = S.packets.get(sid);
    if (!p) continue;
    const c = craft(sc);
    const names = p.channels;
    for (let i = 0; i < names.length && i < values.length; i++) setValue(c, names[i], values[i], t, nowMs);
    c.packetSeen.set(sid, {seenMs: nowMs, wallS, t});
    c.lastHkMs = nowMs;
    // Never back (found in audit: a packet played back after a gap, older than another type's newest, set the plan's
    // "now" and the plots' window back): the push does not say which were played back; the snapshot keeps this rule.
    if (typeof t === "number" && (c.hkTimeS === null || t > c.hkTimeS)) c.hkTimeS = t;
    if (sc === S.current) S.dirtyPackets.add(sid);
  }
  renderDrops(batch.dropped);
  if (batch.dropped && batch.dropped.control) for (const id of S.crafts.keys()) resyncDropped(id);
}

// The pass plan as the agent predicts it (its TLE and the stations of its configuration): the
// next pass from SCHEDULE_HK; each pass is also announced once in the event log (CONTACT_PREDICTED).
// A countdown no packet brings any more says how old it is, re-checked by tick() (found in audit: after LOS the line
// said "in contact ... LOS in 3 s" until the next pass; and "none predicted" before any SCHEDULE_HK came).
function renderNextPass() {
  const c = S.crafts.get(S.current);
  const line = $("next-pass");
  if (!c || !line) return;
  const aos = c.values.get("next_aos_in_s"), los = c.values.get("next_los_in_s");
  const station = c.values.get("next_pass_station");
  const now = performance.now();
  const state = valueState(c, "next_los_in_s", now);
  setData(line, "state", state);
  let text;
  if (state === "nodata") {
    text = "next pass: not known yet (no SCHEDULE_HK received)";
  } else if (typeof los.v !== "number" || !aos || typeof aos.v !== "number") {
    text = "next pass: none predicted (no stations or no orbit in the agent's configuration)";
  } else {
    const where = station && station.v ? ` over ${station.v}` : "";
    text = aos.v === 0 ? `in contact${where}: LOS in ${Math.round(los.v)} s`
      : `next pass${where}: AOS in ${Math.round(aos.v)} s, LOS in ${Math.round(los.v)} s`;
  }
  if (state === "stale") text += ` (stale: said ${ago(now - los.seenMs)})`;
  setText(line, text);
}

function render() {
  const now = performance.now();
  if (["next_aos_in_s", "next_los_in_s", "next_pass_station"].some((n) => S.dirtyRows.has(n))) renderNextPass();
  for (const name of S.dirtyRows) renderRow(name, now);
  S.dirtyRows.clear();
  for (const key of S.dirtyPackets) renderPacketHead(key, now);
  S.dirtyPackets.clear();
  for (const p of S.plots) if (p.plot.dirty) p.plot.draw();
}

function requestFrame() {
  if (!S.frameRequested) {
    S.frameRequested = true;
    requestAnimationFrame(frame);
  }
}

// The echo goes from a task posted in the frame callback: it runs once the browser has
// done that frame's style, layout and paint, so "painted" includes them.
const afterFrame = new MessageChannel();
let echoQueue = [];
afterFrame.port1.onmessage = () => {
  const painted = performance.now();
  const items = echoQueue;
  echoQueue = [];
  for (const e of items) {
    if (S.ws && S.ws.readyState === WebSocket.OPEN) {
      S.ws.send(JSON.stringify({type: "drawn", items: e.items, raf: e.raf, draw: painted,
                                origin: performance.timeOrigin, echo: performance.now()}));
    }
  }
};

function frame(ts, noDraw) {
  if (!noDraw) S.frameRequested = false;
  const batches = S.pending;
  S.pending = [];
  const nowMs = performance.now();
  for (const b of batches) apply(b, nowMs);
  render();
  if (noDraw) return;
  const items = batches.filter((b) => b.seq > 0 && b.hk && b.hk.length).map((b) => [b.seq, b.recvMs]);
  if (items.length) {
    echoQueue.push({items, raf: performance.now()});
    afterFrame.port2.postMessage(0);
  }
}

function connect() {
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
  S.ws = ws;
  const state = $("ws-state");
  let opened = false;
  ws.onopen = () => {
    opened = true;
    S.wsRetryMs = WS_RETRY_MS;
    state.textContent = "connected"; state.dataset.state = "ok"; state.removeAttribute("title");
  };
  ws.onmessage = (ev) => {
    const m = JSON.parse(ev.data);
    m.recvMs = performance.now();
    S.pending.push(m);
    if (S.pending.length > MAX_PENDING) frame(null, true);  // no frames are coming (hidden tab): keep memory bounded
    requestFrame();
  };
  ws.onclose = (ev) => {
    if (ev.code === 4001) { toLogin(); return; }  // the session ended
    S.serverAway = true;
    renderLink();
    renderLag();
    if (cur()) renderFilesState(cur());
    state.textContent = "disconnected: reconnecting";
    state.dataset.state = "bad";
    setTimeout(() => reconnect(!opened), WS_RETRY_MS);
  };
}

// A refused socket is not told why (the browser gives no status), so the session is asked first: one the server
// no longer has (it restarted, and sessions live in its memory; or it expired) goes to the login page at once
// (found in audit: "reconnecting" for ever, the socket refused each second, until a poll happened on the 401).
// A socket refused before it opened, the session good, is asked about as a plain GET of /ws: the server's bounds
// answer that before any upgrade (429, TOO_MANY_SOCKETS; not counted again, the socket was). Refused, the
// page says so and asks again by that GET alone, less often each time; not refused (204: there is room), it opens
// the socket (found in audit: a 429 was tried again each second, "reconnecting", the operator never told).
async function reconnect(unopened) {
  const answer = await getJson("/api/session");
  if (answer.status === 401) return;  // answerOf went to the login page
  if (answer.status === 0) { setTimeout(() => reconnect(unopened), WS_RETRY_MS); return; }  // no server there yet
  if (unopened) {
    const probe = await getJson("/ws");
    if (probe.status === 401) return;
    if (probe.status === 0) { setTimeout(() => reconnect(true), WS_RETRY_MS); return; }
    if (probe.status === 429) {
      S.wsRetryMs = Math.min(2 * S.wsRetryMs, WS_REFUSED_MAX_MS);
      const state = $("ws-state");
      state.textContent = `refused: too many connections; trying again every ${S.wsRetryMs / 1000} s`;
      state.title = `the server refused this page's WebSocket: ${probe.body.error}`;
      state.dataset.state = "bad";
      setTimeout(() => reconnect(true), S.wsRetryMs);
      return;
    }
  }
  connect();
}

// --- archive by time range -------------------------------------------------------------------

function toLocalInput(t_s) { return new Date(t_s * 1000).toISOString().slice(0, 19); }

function buildArchive() {
  const sel = $("archive-channel");
  for (const def of S.dict.channels) if (plottable(def)) sel.append(el("option", {value: def.name, textContent: def.name}));
  const now = Date.now() / 1000;
  $("archive-from").value = toLocalInput(now - 3600);
  $("archive-to").value = toLocalInput(now);
  $("archive-form").addEventListener("submit", queryArchive);
}

async function queryArchive(e) {
  e.preventDefault();
  // The newest query wins: one answered after it drew a second plot under its message (found in audit: a double
  // click left two, the first never disposed)
  const ask = ++S.archiveAsks;
  const channel = $("archive-channel").value;
  const from = Date.parse($("archive-from").value + "Z") / 1000, to = Date.parse($("archive-to").value + "Z") / 1000;
  const msg = $("archive-msg");
  const box = $("archive-plot");
  if (S.archivePlot) S.archivePlot.plot.dispose();
  box.replaceChildren();
  S.plots = S.plots.filter((p) => p !== S.archivePlot);
  S.archivePlot = null;
  if (!Number.isFinite(from) || !Number.isFinite(to)) { msg.textContent = "give both times"; msg.className = "error"; return; }
  msg.textContent = "querying…";
  msg.className = "hint";
  delete msg.dataset.status;
  delete msg.dataset.complete;
  const sc = S.current;
  const series = await archiveSeries({spacecraft: sc, channel, from: String(from), to: String(to), max_points: "2000"},
                                     ARCHIVE_PAGES_MAX);
  if (ask !== S.archiveAsks) return;
  const answer = series.answer;
  msg.dataset.status = String(answer.status);
  if (!answer.ok) {
    msg.textContent = `archive: ${answer.body.error} (HTTP ${answer.status})`;
    msg.className = "error";
    return;
  }
  const def = S.defs.get(channel);
  const values = series.values.map((v) => numeric(def, v));
  msg.textContent = series.complete
    ? `${series.times.length} samples of ${channel} on ${sc} from ${utcClock(from)} to ${utcClock(to)} UTC`
    : `${series.times.length} samples of ${channel} on ${sc} from ${utcClock(from)} to ${utcClock(series.endS)} ` +
      `UTC: the window holds more than ${ARCHIVE_PAGES_MAX} pages; ask from ${toLocalInput(series.endS)} for the rest`;
  msg.dataset.complete = String(series.complete);
  const plot = new Plot(box, Ring.fromArrays(series.times, values),
                        {title: channel, unit: def.unit, labels: labelsOf(def), live: false});
  S.archivePlot = {plot, live: false};
  S.plots.push(S.archivePlot);
  requestFrame();
}

// --- HTTP, session, start ----------------------------------------------------------------------

// To the login page, once: a second navigation started while the first loads aborts both (a poll
// answered 401 just as the operator logged out left the page where it was, under a loaded machine).
let leaving = false;
function toLogin() {
  if (leaving) return;
  leaving = true;
  location.replace("/login");
}

async function answerOf(r) {
  if (r.status === 401) toLogin();
  const body = await r.json().catch(() => ({error: r.statusText || `HTTP ${r.status}`}));
  return {ok: r.ok, status: r.status, body};
}

async function getJson(url) {
  try {
    return await answerOf(await fetch(url, {credentials: "same-origin"}));
  } catch (err) {
    return {ok: false, status: 0, body: {error: `cannot reach the server: ${err}`}};
  }
}

// Every state-changing request carries the session's CSRF token (docs/ground-api.md).
async function postJson(url, body) {
  try {
    return await answerOf(await fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": S.me.csrf},
      body: JSON.stringify(body)}));
  } catch (err) {
    return {ok: false, status: 0, body: {error: `cannot reach the server: ${err}`}};
  }
}

function renderUser() {
  const u = $("user");
  u.textContent = `${S.me.user} (${S.me.role})`;
  u.dataset.role = S.me.role;
  document.body.dataset.role = S.me.role;
}

async function logout() {
  // One navigation only: the server would also close this socket (4001), whose handler goes to
  // /login too, and two navigations racing abort each other.
  if (S.ws) { S.ws.onclose = null; S.ws.close(); }
  await postJson("/api/logout", {});
  toLogin();
}

function fatal(text) {
  const p = el("p", {id: "fatal", className: "error", textContent: text});
  document.body.prepend(p);
}

async function main() {
  const session = await getJson("/api/session");
  if (!session.ok) { fatal(`cannot start: ${session.body.error}`); return; }
  S.me = session.body;
  renderUser();
  const dict = await getJson("/api/dictionary");
  if (!dict.ok) { fatal(`cannot load the dictionary: ${dict.body.error}`); return; }
  S.dict = dict.body;
  for (const def of S.dict.channels) S.defs.set(def.name, def);
  for (const p of S.dict.packets) S.packets.set(p.sid, p);
  buildTable();
  buildPlotControls();
  buildCommandForm();
  buildArchive();
  buildFiles();
  $("logout").addEventListener("click", logout);
  $("sc-select").addEventListener("change", (e) => chooseSpacecraft(e.target.value));
  $("plan-refresh").addEventListener("click", loadPlan);
  $("passes-refresh").addEventListener("click", loadPasses);
  setInterval(tick, TICK_MS);
  setInterval(loadPasses, PASSES_REFRESH_MS);
  connect();
}

main();
