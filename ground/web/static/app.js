// The Sunlit web console page: telemetry table, plots, alarms, commands, events, archive.
//
// Data path: the server pushes batches over one WebSocket; onmessage only queues them; one
// requestAnimationFrame callback per frame applies every queued batch (ring buffers, table
// cells, plots) and, in a task posted after that frame's rendering, echoes to the server
// when each batch arrived and when it was drawn (the server turns that into push lag).
"use strict";

const RING_POINTS = 4096;     // per channel: ~14 min of 0.2 s housekeeping
const KEEP_EVENT_ROWS = 500;
const MAX_PENDING = 400;      // batches queued with no frame (hidden tab): applied without drawing

const S = {
  dict: null,
  channels: new Map(),   // name -> channel state
  packets: new Map(),    // sid -> [channel state, ...] in wire order
  staleMs: 10000,
  ws: null,
  pending: [],
  frameRequested: false,
  dirtyRows: new Set(),
  plots: [],
  dropped: 0,
  lastStatus: null,
};

const $ = (id) => document.getElementById(id);
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

// --- limit state (mirrors flight.link.dictionary.Limits.state) -------------------------------

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

function numeric(ch, v) {
  if (typeof v === "number") return v;
  if (typeof v === "boolean") return v ? 1 : 0;
  if (typeof v === "string" && ch.def.choices) { const k = ch.def.choices.indexOf(v); return k >= 0 ? k : NaN; }
  return NaN;  // null (not available), "NaN", "inf", text
}

// --- telemetry table -------------------------------------------------------------------------

function buildTable() {
  const body = $("tm-table").tBodies[0];
  for (const def of S.dict.channels) {
    const name = el("td", {className: "name", textContent: def.name, title: def.description});
    const value = el("td", {className: "value num", textContent: "—"});
    const state = el("td", {className: "state", textContent: "stale", title: limitText(def.limits)});
    const row = el("tr", {id: `tm-${def.name}`, dataset: {state: "stale", name: def.name}},
      name, value, el("td", {className: "unit", textContent: def.unit}), state);
    body.append(row);
    const ch = {def, row, valueCell: value, stateCell: state, value: undefined, time: null, seenMs: null,
                state: "stale", ring: new Ring(RING_POINTS), plots: []};
    S.channels.set(def.name, ch);
    name.addEventListener("click", () => addPlot(def.name));
  }
  for (const p of S.dict.packets) S.packets.set(p.sid, p.channels.map((n) => S.channels.get(n)));
  $("tm-filter").addEventListener("input", (e) => {
    const q = e.target.value.trim().toLowerCase();
    for (const ch of S.channels.values()) ch.row.hidden = q !== "" && !ch.def.name.includes(q);
  });
  setInterval(checkStale, 500);
}

function setValue(ch, v, t, nowMs) {
  ch.value = v;
  ch.time = t;
  ch.seenMs = nowMs;
  ch.ring.push(t, numeric(ch, v));
  S.dirtyRows.add(ch);
  for (const p of ch.plots) p.dirty = true;
}

function renderRow(ch) {
  const v = ch.value;
  ch.valueCell.textContent = v === null || v === undefined ? "—" : (typeof v === "number" ? fmtNum(v) : String(v));
  ch.valueCell.title = `packet time ${utcClock(ch.time)} UTC`;
  setRowState(ch, limitState(ch.def.limits, v));
  const alarmNow = document.querySelector(`#alarm-${ch.def.name} td.now`);
  if (alarmNow) renderAlarmNow(alarmNow, ch);
}

// The alarm's "now" column follows the live value (the server reports an alarm only when it changes).
function renderAlarmNow(cell, ch) {
  if (!ch || ch.value === undefined) { cell.textContent = ""; return; }
  const v = ch.value;
  cell.textContent = `${typeof v === "number" ? fmtNum(v) : String(v)} ${ch.def.unit} (${ch.state})`;
  cell.dataset.state = ch.state;
}

function setRowState(ch, state) {
  if (ch.state === state) return;
  ch.state = state;
  ch.row.dataset.state = state;
  ch.stateCell.textContent = state;
}

function checkStale() {
  const now = performance.now();
  for (const ch of S.channels.values()) {
    if (ch.seenMs !== null && ch.state !== "stale" && now - ch.seenMs > S.staleMs) setRowState(ch, "stale");
  }
  if (S.lastStatus) renderStatus(S.lastStatus);
}

// --- plots -----------------------------------------------------------------------------------

function plottable(def) { return def.type !== "string"; }

function addPlot(name) {
  const ch = S.channels.get(name);
  if (!ch || ch.plots.length) return;
  const plot = new Plot($("plot-list"), ch.ring, {
    title: name, unit: ch.def.unit, labels: ch.def.choices || (ch.def.type === "bool" ? ["false", "true"] : null),
    live: true,
    onClose: (p) => { ch.plots = ch.plots.filter((x) => x !== p); S.plots = S.plots.filter((x) => x !== p); },
  });
  plot.el.dataset.channel = name;
  ch.plots.push(plot);
  S.plots.push(plot);
  requestFrame();
}

function buildPlotControls() {
  const sel = $("plot-channel");
  for (const def of S.dict.channels) if (plottable(def)) sel.append(el("option", {value: def.name, textContent: def.name}));
  $("plot-add").addEventListener("click", () => addPlot(sel.value));
  window.requestPlotFrame = requestFrame;
  addPlot("uptime_s");
}

// --- events ----------------------------------------------------------------------------------

function addEvent(e) {
  const body = $("event-table").tBodies[0];
  const row = el("tr", {dataset: {severity: e.severity, name: e.name}},
    el("td", {className: "time", textContent: utcClock(e.time_s)}),
    el("td", {textContent: e.severity}),
    el("td", {textContent: e.name}),
    el("td", {textContent: e.text}));
  body.prepend(row);
  while (body.rows.length > KEEP_EVENT_ROWS) body.deleteRow(body.rows.length - 1);
}

// --- alarms ----------------------------------------------------------------------------------

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
  const ack = el("button", {type: "button", className: "ack", textContent: "Acknowledge", disabled: a.status !== "active"});
  ack.addEventListener("click", () => acknowledge(a.channel, ack));
  const ch = S.channels.get(a.channel);
  const unit = ch ? ch.def.unit : "";
  const now = el("td", {className: "num now"});
  renderAlarmNow(now, ch);
  const status = a.status === "acknowledged" ? "acknowledged, waiting for nominal" : a.status;
  row.replaceChildren(
    el("td", {textContent: a.channel}),
    el("td", {className: "level", textContent: a.state}),
    el("td", {className: "time", textContent: utcClock(a.raised_s)}),
    el("td", {className: "num", textContent: `${fmtNum(a.value)} ${unit}`}),
    now,
    el("td", {className: "status", textContent: status + (a.acknowledged_by ? ` (${a.acknowledged_by})` : "")}),
    el("td", {}, ack));
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
  const answer = await postJson("/api/alarms/ack", {channel});
  $("alarm-error").textContent = answer.ok ? "" : `${channel}: ${answer.body.error}`;
  if (answer.ok) upsertAlarm(answer.body); else button.disabled = false;
}

// --- commands --------------------------------------------------------------------------------

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
  const sel = $("cmd-select");
  for (const c of S.dict.commands) sel.append(el("option", {value: c.name, textContent: c.hazardous ? `${c.name} ⚠` : c.name}));
  sel.addEventListener("change", renderCommandForm);
  $("cmd-confirm").addEventListener("change", updateSendButton);
  $("cmd-form").addEventListener("submit", sendCommand);
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
  $("cmd-send").disabled = true;
  const answer = await postJson("/api/command", {name: cmd.name, args, confirm});
  if (answer.ok) {
    $("cmd-error").textContent = "";
    form.dataset.lastId = String(answer.body.id);
    upsertCommand(answer.body);
    if (cmd.hazardous) $("cmd-confirm").checked = false;  // one confirmation, one command
  } else {
    $("cmd-error").textContent = `refused before sending: ${answer.body.error}`;
  }
  updateSendButton();
}

const STAGES = ["sent", "accepted", "started", "completed"];

function upsertCommand(c) {
  const body = $("cmd-history").tBodies[0];
  const id = `cmd-${c.id}`;
  let row = document.getElementById(id);
  if (!row) {
    row = el("tr", {id});
    body.prepend(row);
    while (body.rows.length > 100) body.deleteRow(body.rows.length - 1);
  } else if (Number(row.dataset.updates || 0) > (c.stages || []).length) {
    return;  // an older snapshot arriving after a newer one (hello after a live update)
  }
  row.dataset.state = c.state;
  row.dataset.name = c.name;
  row.dataset.updates = String((c.stages || []).length);
  const reached = new Map((c.stages || []).map((s) => [s.stage, s]));
  const chips = el("td", {className: "stages"});
  for (const name of STAGES) {
    const s = reached.get(name);
    chips.append(el("span", {className: "stage", textContent: s && !s.ok ? `${name} FAILED` : name,
                             dataset: {stage: name, ok: s ? String(s.ok) : "none"},
                             title: s ? `${utcClock(s.at_s)} UTC` : "not yet"}));
  }
  const failure = (c.stages || []).find((s) => !s.ok);
  const result = el("td", {className: "result-cell"});
  if (failure) {
    if (!STAGES.includes(failure.stage)) {  // a timeout, or a ground-side failure
      chips.append(el("span", {className: "stage", dataset: {stage: failure.stage, ok: "false"},
                               textContent: failure.stage.toUpperCase()}));
    }
    result.append(el("span", {className: "reason", textContent: `${failure.code}: ${failure.reason}`}));
  } else if (c.result && Object.keys(c.result).length) {
    result.append(el("span", {className: "result", textContent: JSON.stringify(c.result)}));
  }
  const argText = Object.entries(c.args || {}).map(([k, v]) => `${k}=${v}`).join(" ");
  row.replaceChildren(
    el("td", {className: "num", textContent: String(c.id)}),
    el("td", {className: "cmd", textContent: `${c.name} ${argText}`.trim(), title: c.cmd_id ? `cmd_id ${c.cmd_id}, ${c.attempts} attempt(s)` : ""}),
    chips, result);
}

// --- status line -----------------------------------------------------------------------------

function renderStatus(st) {
  S.lastStatus = st;
  const link = $("link-state");
  if (st.last_packet_age_s === null || st.last_packet_age_s === undefined) {
    link.textContent = st.link_error ? `link: ${st.link_error}` : "link: no telemetry yet";
    link.dataset.state = "bad";
  } else if (st.last_packet_age_s > S.staleMs / 1000) {
    link.textContent = `link: silent for ${Math.round(st.last_packet_age_s)} s`;
    link.dataset.state = "bad";
  } else {
    link.textContent = `link: receiving (${st.packets} packets)`;
    link.dataset.state = st.gaps_missing || st.bad_packets ? "warn" : "ok";
  }
  link.title = `${st.link}; ${st.gaps_missing} missing in gaps, ${st.bad_packets} undecodable, ${st.agent_restarts} agent restart(s)`;
  const dict = $("dict-state");
  if (st.dict_match === true) { dict.textContent = `dictionary ${st.dict_hash}`; dict.dataset.state = "ok"; }
  else if (st.dict_match === false) { dict.textContent = `dictionary MISMATCH: agent ${st.agent_dict_hash}, console ${st.dict_hash}`; dict.dataset.state = "bad"; }
  else { dict.textContent = `dictionary ${st.dict_hash} (agent not heard yet)`; dict.dataset.state = "warn"; }
  $("lag").textContent = typeof st.push_lag_p99_ms === "number" ? `push lag p99 ${st.push_lag_p99_ms.toFixed(1)} ms` : "push lag: —";
}

function renderDrops(d) {
  if (!d || d.points_total === undefined) return;
  const pill = $("drops");
  S.dropped = d.points_total;
  pill.textContent = `dropped: ${d.points_total} points` + (d.control_total ? `, ${d.control_total} messages` : "");
  pill.dataset.state = d.points_total || d.control_total ? "bad" : "ok";
  if (d.points) pill.title = `this page fell behind: the server dropped ${d.points} points just now`;
}

// --- the data path ---------------------------------------------------------------------------

function handleControl(m, nowMs) {
  switch (m.kind) {
    case "hello":
      S.staleMs = m.stale_s * 1000;
      for (const [name, [v, t]] of Object.entries(m.latest)) {
        const ch = S.channels.get(name);
        if (ch) setValue(ch, v, t, nowMs);
      }
      // A (re)connect: the server's history replaces the page's (a restarted server numbers commands afresh).
      $("event-table").tBodies[0].replaceChildren();
      $("alarm-table").tBodies[0].replaceChildren();
      $("cmd-history").tBodies[0].replaceChildren();
      for (const e of m.events) addEvent(e);
      for (const a of m.alarms) upsertAlarm(a);
      countAlarms();
      for (const c of m.commands) upsertCommand(c);
      renderStatus(m.status);
      break;
    case "event": addEvent(m); break;
    case "alarm": upsertAlarm(m.alarm); break;
    case "command": upsertCommand(m); break;
    case "status": renderStatus(m); break;
    case "limits": setLimits(m.limits); break;
  }
}

// Limits that follow an agent parameter move when the agent reports a new value (PUS 20).
function setLimits(limits) {
  for (const [name, lim] of Object.entries(limits)) {
    const ch = S.channels.get(name);
    if (!ch) continue;
    ch.def.limits = lim;
    ch.stateCell.title = limitText(lim);
    S.dirtyRows.add(ch);
  }
}

function apply(batch, nowMs) {
  for (const m of batch.control || []) handleControl(m, nowMs);
  for (const [sid, t, values] of batch.hk || []) {
    const chans = S.packets.get(sid);
    if (!chans) continue;
    for (let i = 0; i < chans.length && i < values.length; i++) setValue(chans[i], values[i], t, nowMs);
  }
  renderDrops(batch.dropped);
}

function render() {
  for (const ch of S.dirtyRows) renderRow(ch);
  S.dirtyRows.clear();
  for (const p of S.plots) if (p.dirty) p.draw();
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
  ws.onopen = () => { state.textContent = "console connected"; state.dataset.state = "ok"; };
  ws.onmessage = (ev) => {
    const m = JSON.parse(ev.data);
    m.recvMs = performance.now();
    S.pending.push(m);
    if (S.pending.length > MAX_PENDING) frame(null, true);  // no frames are coming (hidden tab): keep memory bounded
    requestFrame();
  };
  ws.onclose = () => {
    state.textContent = "console disconnected: reconnecting";
    state.dataset.state = "bad";
    setTimeout(connect, 1000);
  };
}

// --- archive ---------------------------------------------------------------------------------

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
  const channel = $("archive-channel").value;
  const from = Date.parse($("archive-from").value + "Z") / 1000, to = Date.parse($("archive-to").value + "Z") / 1000;
  const msg = $("archive-msg");
  const box = $("archive-plot");
  box.replaceChildren();
  S.plots = S.plots.filter((p) => p !== S.archivePlot);
  if (!Number.isFinite(from) || !Number.isFinite(to)) { msg.textContent = "give both times"; msg.className = "error"; return; }
  msg.textContent = "querying…";
  msg.className = "hint";
  const r = await fetch(`/api/archive?channel=${encodeURIComponent(channel)}&from=${from}&to=${to}`);
  const body = await r.json().catch(() => ({error: r.statusText}));
  if (!r.ok) {
    msg.textContent = `archive: ${body.error} (HTTP ${r.status})`;
    msg.className = "error";
    msg.dataset.status = String(r.status);
    return;
  }
  const data = body.channels[channel] || {times: [], values: []};
  const ch = S.channels.get(channel);
  const values = data.values.map((v) => numeric(ch, v));
  msg.textContent = `${data.times.length} samples of ${channel} from ${utcClock(from)} to ${utcClock(to)} UTC`;
  msg.dataset.status = "200";
  const plot = new Plot(box, Ring.fromArrays(data.times, values), {title: channel, unit: ch.def.unit, labels: ch.def.choices, live: false});
  S.archivePlot = plot;
  S.plots.push(plot);
  requestFrame();
}

// --- start -----------------------------------------------------------------------------------

async function postJson(url, body) {
  try {
    const r = await fetch(url, {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
    return {ok: r.ok, status: r.status, body: await r.json().catch(() => ({error: r.statusText}))};
  } catch (err) {
    return {ok: false, status: 0, body: {error: String(err)}};
  }
}

async function main() {
  S.dict = await (await fetch("/api/dictionary")).json();
  buildTable();
  buildPlotControls();
  buildCommandForm();
  buildArchive();
  connect();
  document.body.dataset.ready = "true";
}

main();
