// Ring buffers and canvas plots for the Sunlit web console. No libraries: one canvas per plot,
// drawn only when its data or view changed, decimated to min/max per pixel column.
"use strict";

// A fixed-size ring of (time s, value) pairs, oldest first; time must not go backwards for
// the binary search (packet times from one agent do not).
class Ring {
  constructor(capacity) {
    this.cap = capacity;
    this.t = new Float64Array(capacity);
    this.v = new Float64Array(capacity);
    this.n = 0;
    this.head = 0;  // next slot to write
  }
  static fromArrays(times, values) {
    const ring = new Ring(Math.max(1, times.length));
    for (let i = 0; i < times.length; i++) ring.push(times[i], values[i]);
    return ring;
  }
  push(t, v) {
    this.t[this.head] = t;
    this.v[this.head] = v;
    this.head = (this.head + 1) % this.cap;
    if (this.n < this.cap) this.n++;
  }
  index(i) { return (this.head - this.n + i + this.cap) % this.cap; }
  time(i) { return this.t[this.index(i)]; }
  value(i) { return this.v[this.index(i)]; }
  // First i with time(i) >= t.
  lowerBound(t) {
    let lo = 0, hi = this.n;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.time(mid) < t) lo = mid + 1; else hi = mid;
    }
    return lo;
  }
}

// UTC time of day; tenths or milliseconds when the axis spans only seconds.
function fmtClock(t, span) {
  const text = new Date(t * 1000).toISOString();
  if (span !== undefined && span < 2) return text.slice(11, 23);
  if (span !== undefined && span < 20) return text.slice(11, 21);
  return text.slice(11, 19);
}

function fmtNum(v) {
  if (typeof v !== "number") return String(v);
  if (Number.isInteger(v)) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e6 || a < 1e-3)) return v.toExponential(3);
  return String(+v.toFixed(3));
}

const LIVE_SPAN_S = 120;  // live view by default: the last two minutes (opts.spanS to change it)

class Plot {
  // source: a Ring; opts: {title, unit, labels (enum names by index), live (follow newest),
  // spanS (the live view's width), onClose}
  constructor(parent, source, opts) {
    this.source = source;
    this.opts = opts;
    this.view = null;  // null: live (or the whole data when not live); else [t0, t1]
    this.drag = null;
    this.dirty = true;
    this.el = document.createElement("div");
    this.el.className = "plot";
    const title = document.createElement("div");
    title.className = "title";
    this.label = document.createElement("span");
    this.label.textContent = opts.title + (opts.unit ? ` [${opts.unit}]` : "");
    this.zoomLabel = document.createElement("span");
    title.append(this.label, this.zoomLabel);
    if (opts.onClose) {
      const close = document.createElement("button");
      close.type = "button";
      close.textContent = "×";
      close.title = "remove this plot";
      close.addEventListener("click", () => { this.dispose(); opts.onClose(this); });
      title.append(close);
    }
    this.canvas = document.createElement("canvas");
    this.el.append(title, this.canvas);
    parent.append(this.el);
    // The canvas's size, kept as the browser lays it out: reading clientWidth in draw() made the browser lay
    // out the whole page there and then, in the middle of the frame, once per plot (found in measuring GND-032).
    this.size = null;
    this.resizes = new ResizeObserver(([entry]) => {
      const box = entry.contentRect;
      this.size = {w: box.width, h: box.height};
      this.request();
    });
    this.resizes.observe(this.canvas);
    this.canvas.addEventListener("mousedown", (e) => { this.drag = {x0: e.offsetX, x1: e.offsetX}; });
    this.canvas.addEventListener("mousemove", (e) => {
      if (this.drag) { this.drag.x1 = e.offsetX; this.request(); }
    });
    this.onMouseUp = () => this.endDrag();
    window.addEventListener("mouseup", this.onMouseUp);
    this.canvas.addEventListener("dblclick", () => { this.view = null; this.request(); });
  }
  dispose() {
    window.removeEventListener("mouseup", this.onMouseUp);
    this.resizes.disconnect();
    this.el.remove();
  }
  request() {
    this.dirty = true;
    if (window.requestPlotFrame) window.requestPlotFrame();
  }
  endDrag() {
    if (!this.drag) return;
    const {x0, x1} = this.drag;
    this.drag = null;
    if (Math.abs(x1 - x0) > 4 && this.lastRange) {
      const a = this.xToT(Math.min(x0, x1)), b = this.xToT(Math.max(x0, x1));
      if (b > a) this.view = [a, b];
    }
    this.request();
  }
  xToT(x) {
    const r = this.lastRange;
    return r.t0 + (x - r.left) / (r.width) * (r.t1 - r.t0);
  }
  range() {
    const s = this.source;
    if (this.view) return this.view;
    if (s.n === 0) return null;
    const first = s.time(0), last = s.time(s.n - 1);
    if (this.opts.live) return [Math.max(first, last - (this.opts.spanS || LIVE_SPAN_S)), last];
    return [first, last];
  }
  draw() {
    this.dirty = false;
    const c = this.canvas, dpr = window.devicePixelRatio || 1;
    if (!this.size) this.size = {w: c.clientWidth, h: c.clientHeight};  // before the observer's first word
    const {w, h} = this.size;
    if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
      c.width = Math.round(w * dpr);
      c.height = Math.round(h * dpr);
    }
    const g = c.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    g.font = "11px system-ui, 'DejaVu Sans', sans-serif";
    const left = 58, right = 8, top = 6, bottom = 18;
    const pw = Math.max(10, w - left - right), ph = Math.max(10, h - top - bottom);
    const zoom = this.view ? "zoomed (double-click: live)" : (this.opts.live ? "live" : "");
    if (this.zoomLabel.textContent !== zoom) this.zoomLabel.textContent = zoom;  // a write lays the page out again
    const zoomClass = this.view ? "zoomed" : "";
    if (this.zoomLabel.className !== zoomClass) this.zoomLabel.className = zoomClass;
    const r = this.range();
    const s = this.source;
    g.fillStyle = "#8a96a3";
    if (!r) { g.fillText("no data yet", left + 8, top + 16); this.lastRange = null; return; }
    let [t0, t1] = r;
    if (t1 <= t0) { t0 -= 1; t1 += 1; }
    const i0 = Math.max(0, s.lowerBound(t0) - 1), i1 = Math.min(s.n, s.lowerBound(t1) + 1);
    let y0 = Infinity, y1 = -Infinity;
    for (let i = i0; i < i1; i++) {
      const v = s.value(i);
      if (Number.isFinite(v)) { if (v < y0) y0 = v; if (v > y1) y1 = v; }
    }
    const labels = this.opts.labels;
    if (labels) { y0 = -0.5; y1 = labels.length - 0.5; }
    if (!Number.isFinite(y0)) { g.fillText("no numeric data in view", left + 8, top + 16); }
    if (!Number.isFinite(y0)) { y0 = 0; y1 = 1; }
    if (y1 === y0) { y0 -= Math.abs(y0) * 0.05 || 1; y1 += Math.abs(y1) * 0.05 || 1; }
    const pad = labels ? 0 : (y1 - y0) * 0.06;
    y0 -= pad; y1 += pad;
    const X = (t) => left + (t - t0) / (t1 - t0) * pw;
    const Y = (v) => top + (1 - (v - y0) / (y1 - y0)) * ph;
    this.lastRange = {t0, t1, left, width: pw};

    // Axes and grid.
    g.strokeStyle = "#2a3440";
    g.lineWidth = 1;
    g.beginPath();
    const yTicks = labels ? labels.map((_, k) => k) : niceTicks(y0, y1, 4);
    for (const v of yTicks) { const y = Math.round(Y(v)) + 0.5; g.moveTo(left, y); g.lineTo(left + pw, y); }
    const xTicks = niceTicks(t0, t1, 5);
    for (const t of xTicks) { const x = Math.round(X(t)) + 0.5; g.moveTo(x, top); g.lineTo(x, top + ph); }
    g.stroke();
    g.fillStyle = "#8a96a3";
    g.textAlign = "right";
    for (const v of yTicks) g.fillText(labels ? labels[v] : fmtNum(v), left - 4, Y(v) + 4);
    g.textAlign = "center";
    for (const t of xTicks) g.fillText(fmtClock(t, t1 - t0), X(t), h - 4);
    g.textAlign = "left";

    // The line: straight when sparse, min/max per pixel column when dense. NaN breaks it.
    g.save();
    g.beginPath();
    g.rect(left, top, pw, ph);
    g.clip();
    g.strokeStyle = "#58a6ff";
    g.lineWidth = 1.3;
    g.beginPath();
    const dense = (i1 - i0) > 2 * pw;
    let pen = false;
    if (!dense) {
      for (let i = i0; i < i1; i++) {
        const v = s.value(i);
        if (!Number.isFinite(v)) { pen = false; continue; }
        const x = X(s.time(i)), y = Y(v);
        if (pen) g.lineTo(x, y); else { g.moveTo(x, y); pen = true; }
      }
    } else {
      let col = -1, lo = 0, hi = 0;
      const flush = () => { if (col >= 0) { const x = left + col + 0.5; if (pen) g.lineTo(x, Y(hi)); else g.moveTo(x, Y(hi)); g.lineTo(x, Y(lo)); pen = true; } };
      for (let i = i0; i < i1; i++) {
        const v = s.value(i);
        if (!Number.isFinite(v)) { flush(); col = -1; pen = false; continue; }
        const k = Math.floor(X(s.time(i)) - left);
        if (k !== col) { flush(); col = k; lo = hi = v; } else { if (v < lo) lo = v; if (v > hi) hi = v; }
      }
      flush();
    }
    g.stroke();
    if (!dense && (i1 - i0) < 60) {  // few points: mark them
      g.fillStyle = "#58a6ff";
      for (let i = i0; i < i1; i++) {
        const v = s.value(i);
        if (Number.isFinite(v)) g.fillRect(X(s.time(i)) - 1.5, Y(v) - 1.5, 3, 3);
      }
    }
    g.restore();

    if (this.drag) {
      g.fillStyle = "rgba(88, 166, 255, .18)";
      const a = Math.min(this.drag.x0, this.drag.x1), b = Math.max(this.drag.x0, this.drag.x1);
      g.fillRect(a, top, b - a, ph);
    }
  }
}

// About n round-numbered ticks in [a, b].
function niceTicks(a, b, n) {
  const span = b - a;
  if (!(span > 0) || !Number.isFinite(span)) return [a];
  const raw = span / n, mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
  // By index, never more than there is room for: a step below the numbers' resolution (values that differ in their
  // last bit, a view zoomed to a few ulps of a unix time) left v += step where it was, and the tab hung (found in audit)
  const out = [], k0 = Math.ceil(a / step);
  for (let i = 0; i < 2 * n + 2; i++) {  // counted apart from k0: past 2^53, k0 + 1 is k0
    const v = (k0 + i) * step, shown = +v.toPrecision(12);
    if (v > b + step * 1e-9) break;
    if (!out.length || shown > out[out.length - 1]) out.push(shown);
  }
  return out;
}
