// Charts drawn as SVG by hand: the timeline, the score bars and the share bar.
// Every text that came from the server goes in through textContent, never as markup.

import { confidence, textOn } from "./store.js";

const SVG = "http://www.w3.org/2000/svg";

export function el(name, attrs = {}, parent = null) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (parent) parent.appendChild(node);
  return node;
}

function clear(svg) {
  while (svg.firstChild) svg.removeChild(svg.firstChild);
}

function size(svg, height) {
  const width = Math.max(240, Math.floor(svg.getBoundingClientRect().width || svg.parentNode.clientWidth || 600));
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("height", String(height));
  return width;
}

export function clock(seconds) {
  const s = Math.max(0, seconds);
  const m = Math.floor(s / 60);
  const r = Math.floor(s % 60);
  const h = Math.floor(m / 60);
  const mm = h ? String(m % 60).padStart(2, "0") : String(m);
  return `${h ? `${h}:` : ""}${mm}:${String(r).padStart(2, "0")}`;
}

const TICK_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600];

/**
 * Utterances of the latest run on the source's timeline: one bar per utterance from start_s to
 * end_s, its colour the label, its height the label's score. `onHover(u, x, y)` / `onLeave()`.
 */
export function drawTimeline(svg, utterances, { spanS, color, onHover, onLeave, lanes = [], laneOf = null }) {
  clear(svg);
  // One lane per speaker when there are speakers (lanes: [{key, name}]; laneOf(u) -> key).
  const laned = lanes.length > 0 && laneOf !== null;
  const laneH = laned ? Math.max(34, Math.min(60, 150 / lanes.length)) : 0;
  const H = laned ? 36 + laneH * lanes.length : 150;
  const W = size(svg, H);
  const pad = { l: laned ? 92 : 10, r: 10, t: 12, b: 24 };
  const plotH = H - pad.t - pad.b;
  const run = utterances.length ? utterances[utterances.length - 1].run_id : null;
  const mine = utterances.filter((u) => u.run_id === run);
  const end = mine.length ? Math.max(...mine.map((u) => Number(u.end_s) || 0)) : 0;
  const t1 = Math.max(spanS, end + Math.min(5, spanS * 0.04));
  const t0 = t1 - spanS;
  const x = (t) => pad.l + ((t - t0) / spanS) * (W - pad.l - pad.r);

  // grid and time axis
  const step = TICK_STEPS.find((s) => spanS / s <= 8) || 3600;
  const axis = el("g", { class: "axis" }, svg);
  for (let t = Math.ceil(t0 / step) * step; t <= t1; t += step) {
    const gx = x(t);
    el("line", { x1: gx, x2: gx, y1: pad.t, y2: pad.t + plotH, class: "grid" }, axis);
    const label = el("text", { x: gx, y: H - 6, "text-anchor": "middle", class: "tick" }, axis);
    label.textContent = clock(t);
  }
  el("line", { x1: pad.l, x2: W - pad.r, y1: pad.t + plotH, y2: pad.t + plotH, class: "baseline" }, axis);
  const laneIndex = new Map(lanes.map((lane, i) => [lane.key, i]));
  if (laned) {
    lanes.forEach((lane, i) => {
      const y0 = pad.t + i * laneH;
      const g = el("g", { class: "lane", "data-speaker": lane.key }, axis);
      if (i > 0) el("line", { x1: pad.l, x2: W - pad.r, y1: y0, y2: y0, class: "grid grid-h" }, g);
      const name = el("text", { x: pad.l - 8, y: y0 + laneH / 2 + 4, "text-anchor": "end", class: "lane-name" }, g);
      name.textContent = lane.name.length > 12 ? `${lane.name.slice(0, 11)}…` : lane.name;
    });
  } else {
    for (const frac of [0.5, 1]) {
      el("line", { x1: pad.l, x2: W - pad.r, y1: pad.t + plotH * (1 - frac), y2: pad.t + plotH * (1 - frac),
        class: "grid grid-h" }, axis);
    }
  }

  const bars = el("g", { class: "bars" }, svg);
  for (const u of mine) {
    const a = Number(u.start_s) || 0;
    const b = Number(u.end_s) || a;
    if (b < t0 || a > t1) continue;
    const conf = confidence(u);
    const rowH = laned ? laneH - 6 : plotH;
    const bottom = laned ? pad.t + ((laneIndex.get(laneOf(u)) ?? 0) + 1) * laneH - 3 : pad.t + plotH;
    const h = Math.max(6, rowH * Math.max(conf, 0.08));
    const xa = Math.max(pad.l, x(a));
    const w = Math.max(3, Math.min(W - pad.r, x(b)) - xa);
    const rect = el("rect", {
      x: xa, y: bottom - h, width: w, height: h, rx: 3,
      fill: color(u.label), class: "utt", "data-label": u.label, "data-seq": u.seq,
      "data-speaker": laned ? laneOf(u) : "",
    }, bars);
    rect.addEventListener("pointerenter", (ev) => onHover(u, ev.clientX, ev.clientY));
    rect.addEventListener("pointermove", (ev) => onHover(u, ev.clientX, ev.clientY));
    rect.addEventListener("pointerleave", () => onLeave());
  }
  if (!mine.length) {
    const t = el("text", { x: W / 2, y: pad.t + plotH / 2, "text-anchor": "middle", class: "empty" }, svg);
    t.textContent = "no utterances yet";
  }
}

/** Horizontal bars of every label's score for one utterance (labels in hello's order). */
export function drawBars(svg, utterance, labels, color) {
  clear(svg);
  const row = 27;
  const H = Math.max(1, labels.length) * row + 6;
  const W = size(svg, H);
  const nameW = 86;
  const valW = 52;
  const track = W - nameW - valW;
  const scores = utterance && utterance.scores ? utterance.scores : {};
  labels.forEach((label, i) => {
    const y = 4 + i * row;
    const v = Math.max(0, Math.min(1, Number(scores[label]) || 0));
    const g = el("g", { class: `bar-row${utterance && utterance.label === label ? " top" : ""}`,
      "data-label": label }, svg);
    const name = el("text", { x: nameW - 10, y: y + 15, "text-anchor": "end", class: "bar-name" }, g);
    name.textContent = label;
    el("rect", { x: nameW, y: y + 3, width: track, height: 16, rx: 4, class: "bar-track" }, g);
    el("rect", { x: nameW, y: y + 3, width: Math.max(utterance ? 2 : 0, track * v), height: 16, rx: 4,
      fill: color(label), class: "bar-fill" }, g);
    const val = el("text", { x: W - 4, y: y + 15, "text-anchor": "end", class: "bar-val" }, g);
    val.textContent = utterance ? `${(v * 100).toFixed(1)}%` : "–";
  });
}

/** One 100 % stacked bar of each label's share of speaking time. */
export function drawShare(svg, share, labels, color) {
  clear(svg);
  const H = 34;
  const W = size(svg, H);
  el("rect", { x: 0, y: 4, width: W, height: 26, rx: 6, class: "bar-track" }, svg);
  let x = 0;
  for (const label of labels) {
    const s = share[label] ? share[label].share : 0;
    if (s <= 0) continue;
    const w = s * W;
    const r = el("rect", { x, y: 4, width: Math.max(1, w), height: 26, fill: color(label), class: "share-seg",
      "data-label": label }, svg);
    const title = el("title", {}, r);
    title.textContent = `${label}: ${(s * 100).toFixed(1)}%`;
    if (w > 44) {
      const t = el("text", { x: x + w / 2, y: 22, "text-anchor": "middle", class: "share-text",
        fill: textOn(color(label)) }, svg);
      t.textContent = `${Math.round(s * 100)}%`;
    }
    x += w;
  }
}

/** Stacked areas of each label's running share (from store.shareSeries). */
export function drawShareTrend(svg, series, labels, color) {
  clear(svg);
  const H = 120;
  const W = size(svg, H);
  const pad = { l: 30, r: 6, t: 6, b: 20 };
  const n = series.t.length;
  const axis = el("g", { class: "axis" }, svg);
  for (const f of [0, 0.5, 1]) {
    const y = pad.t + (H - pad.t - pad.b) * (1 - f);
    el("line", { x1: pad.l, x2: W - pad.r, y1: y, y2: y, class: "grid grid-h" }, axis);
    const t = el("text", { x: pad.l - 6, y: y + 4, "text-anchor": "end", class: "tick" }, axis);
    t.textContent = `${Math.round(f * 100)}%`;
  }
  if (n < 2) {
    const t = el("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" }, svg);
    t.textContent = "the share over time appears after a few utterances";
    return;
  }
  const t0 = series.t[0];
  const t1 = series.t[n - 1];
  const x = (t) => pad.l + ((t - t0) / Math.max(1e-9, t1 - t0)) * (W - pad.l - pad.r);
  const y = (v) => pad.t + (H - pad.t - pad.b) * (1 - v);
  const base = new Array(n).fill(0);
  for (const label of labels) {
    const vals = series.shares[label];
    if (!vals || !vals.some((v) => v > 0)) continue;
    const top = base.map((b, i) => b + vals[i]);
    let d = `M${x(series.t[0])},${y(top[0])}`;
    for (let i = 1; i < n; i += 1) d += `L${x(series.t[i])},${y(top[i])}`;
    for (let i = n - 1; i >= 0; i -= 1) d += `L${x(series.t[i])},${y(base[i])}`;
    el("path", { d: `${d}Z`, fill: color(label), class: "trend", "data-label": label }, svg);
    for (let i = 0; i < n; i += 1) base[i] = top[i];
  }
  for (const t of [t0, t1]) {
    const lab = el("text", { x: x(t), y: H - 4, "text-anchor": t === t0 ? "start" : "end", class: "tick" }, axis);
    lab.textContent = clock(t);
  }
}
