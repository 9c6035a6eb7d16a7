// The dashboard's state, kept free of the DOM so it can be tested on its own (tests/web/store_test.mjs).
//
// A session may span several service runs (the service restarted while the page stayed open): events
// are keyed by (run_id, seq), and `resumeSeq()` answers "which seq of the current run do we hold".

import { CONNECTION_STREAM, SERVICE_STREAM } from "./protocol.js";

const MAX_UTTERANCES_PER_STREAM = 5000;

export class StreamState {
  constructor(id) {
    this.id = id;
    this.name = id;
    this.kind = "";
    this.utterances = []; // emotion events' data (+ seq, ts, run), sorted by start_s
    this.transcript = null; // the latest transcript event's data
    this.speaking = false;
    this.ended = false;
    this.lastTs = 0;
    this.runId = null;
    // Speakers of the current run: label (S1...) -> {name, into}. `into`: merged into that label.
    this.speakers = new Map();
    // utterance_id -> its label after a `speaker` correction (applied to its emotion, even a later one).
    this.corrected = new Map();
  }

  noteSpeaker(label) {
    if (typeof label === "string" && label && !this.speakers.has(label)) {
      this.speakers.set(label, { name: null, into: null });
    }
  }

  /** The label `label` stands for now (merges followed). */
  resolveSpeaker(label) {
    const seen = new Set();
    let cur = label;
    while (cur && this.speakers.has(cur) && this.speakers.get(cur).into && !seen.has(cur)) {
      seen.add(cur);
      cur = this.speakers.get(cur).into;
    }
    return cur || null;
  }

  /** What to call a label: its (resolved) speaker's name, else the label; "unknown" for null. */
  speakerName(label) {
    const live = this.resolveSpeaker(label);
    if (!live) return "unknown";
    const info = this.speakers.get(live);
    return info && info.name ? info.name : live;
  }

  /** Live speakers (not merged away), in order of appearance; "" stands for utterances with none. */
  liveSpeakers() {
    const out = [];
    for (const u of this.utterances) {
      const key = this.resolveSpeaker(u.speaker) || "";
      if (!out.includes(key)) out.push(key);
    }
    return out;
  }

  get latest() {
    let best = null;
    for (const u of this.utterances) if (best === null || u.seq_key > best.seq_key) best = u;
    return best;
  }
}

export class Store {
  constructor() {
    this.labels = [];
    this.colors = {};
    this.runId = null;
    this.runs = []; // run ids in the order this page met them
    this.modelIds = {};
    this.lastSeq = -1; // highest seq held from the current run
    this.events = []; // every logged event of the session, with `run_id` added (for downloads)
    this.seen = new Set();
    this.streams = new Map();
    this.stats = null;
    this.errors = [];
    this.lagged = 0;
  }

  /** Apply a hello; returns the seq to resume after (-1: the whole run, e.g. a new run). */
  applyHello(data) {
    this.labels = Array.isArray(data.labels) ? data.labels.map(String) : [];
    this.colors = data.colors && typeof data.colors === "object" ? { ...data.colors } : {};
    this.modelIds = data.model_ids && typeof data.model_ids === "object" ? { ...data.model_ids } : {};
    for (const s of Array.isArray(data.streams) ? data.streams : []) {
      const id = typeof s === "string" ? s : s && s.id;
      if (!id) continue;
      const st = this.stream(String(id));
      if (s && typeof s === "object") {
        st.name = s.name ? String(s.name) : st.name;
        st.kind = s.kind ? String(s.kind) : st.kind;
      }
    }
    const runId = data.run_id ?? null;
    if (runId !== this.runId) {
      this.runId = runId;
      if (runId !== null && !this.runs.includes(runId)) this.runs.push(runId);
      this.lastSeq = -1;
    }
    return this.lastSeq;
  }

  stream(id) {
    let st = this.streams.get(id);
    if (!st) {
      st = new StreamState(id);
      this.streams.set(id, st);
    }
    return st;
  }

  /** Streams with audio (not the service pseudo-stream), in the order they appeared. */
  sourceStreams() {
    return [...this.streams.values()].filter((s) => s.id !== SERVICE_STREAM && s.id !== CONNECTION_STREAM);
  }

  /** Orders events across runs: a later run's events after every event of an earlier one. */
  seqKey(run, seq) {
    return this.runs.indexOf(run) * 1e12 + seq;
  }

  color(label) {
    return this.colors[label] || "#8a94a6";
  }

  /** Add one event; returns false for a duplicate (same run and seq) or a connection-only event. */
  add(event) {
    if (event.stream === CONNECTION_STREAM) {
      if (event.type === "lagged") this.lagged += Number(event.data.dropped) || 0;
      if (event.type === "error") this.errors.push({ ts: event.ts, stream: event.stream, ...event.data });
      return false;
    }
    const run = this.runId ?? "";
    const key = `${run}:${event.seq}`;
    if (this.seen.has(key)) return false;
    this.seen.add(key);
    if (event.seq > this.lastSeq) this.lastSeq = event.seq;
    this.events.push({ run_id: run, ...event });
    const d = event.data || {};
    if (event.type === "stats") {
      this.stats = { ts: event.ts, stream: event.stream, ...d };
      return true;
    }
    if (event.type === "error") {
      this.errors.push({ ts: event.ts, stream: event.stream, ...d });
      if (this.errors.length > 50) this.errors.shift();
      return true;
    }
    if (event.stream === SERVICE_STREAM) return true;
    const st = this.stream(event.stream);
    st.lastTs = Math.max(st.lastTs, event.ts);
    if (st.runId !== run) {
      st.runId = run;
      st.ended = false;
      st.speakers = new Map(); // labels are per run
      st.corrected = new Map();
    }
    if (event.type === "speech") {
      st.speaking = d.state === "start";
    } else if (event.type === "speaker") {
      const label = String(d.speaker || "");
      st.noteSpeaker(label);
      if (d.action === "named" && typeof d.name === "string") st.speakers.get(label).name = d.name;
      if (d.action === "merged" && typeof d.into === "string" && d.into !== label) {
        st.noteSpeaker(d.into);
        st.speakers.get(label).into = d.into;
      }
      if (d.action === "corrected" && typeof d.into === "string" && typeof d.utterance_id === "string") {
        st.noteSpeaker(d.into);
        st.corrected.set(d.utterance_id, d.into);
        for (const u of st.utterances) if (u.utterance_id === d.utterance_id) u.speaker = d.into;
      }
    } else if (event.type === "transcript") {
      st.noteSpeaker(d.speaker);
      // Ordered like utterances: a new run's seq starts again at 0, yet its transcripts are the newer ones.
      const key = this.seqKey(run, event.seq);
      if (!st.transcript || key >= st.transcript.seq_key) st.transcript = { ...d, seq: event.seq, run_id: run, seq_key: key };
    } else if (event.type === "emotion") {
      st.speaking = false;
      st.noteSpeaker(d.speaker);
      const u = {
        ...d,
        speaker: st.corrected.get(d.utterance_id) ?? d.speaker,
        seq: event.seq,
        ts: event.ts,
        run_id: run,
        seq_key: this.seqKey(run, event.seq),
      };
      insertSorted(st.utterances, u);
      if (st.utterances.length > MAX_UTTERANCES_PER_STREAM) st.utterances.shift();
    } else if (event.type === "end") {
      st.ended = true;
      st.speaking = false;
    }
    return true;
  }
}

// Utterances sorted by (run order, start_s); replayed gap events may arrive out of order.
function insertSorted(list, u) {
  const key = (x) => [x.seq_key - (x.seq_key % 1e12), Number(x.start_s) || 0];
  const [ra, sa] = key(u);
  let i = list.length;
  while (i > 0) {
    const [rb, sb] = key(list[i - 1]);
    if (rb < ra || (rb === ra && sb <= sa)) break;
    i -= 1;
  }
  list.splice(i, 0, u);
}

/** Probability of the decided label (its score). */
export function confidence(u) {
  const s = u.scores && typeof u.scores === "object" ? Number(u.scores[u.label]) : NaN;
  return Number.isFinite(s) ? s : 0;
}

/**
 * Share of speaking time per label over the last `windowS` seconds of the stream's timeline
 * (utterances of the latest run; `windowS` = Infinity for all). Returns {label: {seconds, share}}.
 */
export function emotionShare(utterances, labels, windowS) {
  const out = {};
  for (const l of labels) out[l] = { seconds: 0, share: 0 };
  if (!utterances.length) return out;
  const run = utterances[utterances.length - 1].run_id;
  const mine = utterances.filter((u) => u.run_id === run);
  const end = Math.max(...mine.map((u) => Number(u.end_s) || 0));
  const from = end - windowS;
  let total = 0;
  for (const u of mine) {
    const a = Math.max(Number(u.start_s) || 0, from);
    const b = Number(u.end_s) || 0;
    if (b <= a) continue;
    if (!(u.label in out)) out[u.label] = { seconds: 0, share: 0 };
    out[u.label].seconds += b - a;
    total += b - a;
  }
  if (total > 0) for (const l of Object.keys(out)) out[l].share = out[l].seconds / total;
  return out;
}

/**
 * Emotion share per speaker over the last `windowS` seconds (utterances of the latest run), merged labels
 * counted as the speaker they turned out to be. Returns [{speaker, name, seconds, share: {label: {...}}}],
 * most talkative first; `speaker` "" gathers utterances with no speaker.
 */
export function speakerShares(st, labels, windowS) {
  const groups = new Map();
  for (const u of st.utterances) {
    const key = st.resolveSpeaker(u.speaker) || "";
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(u);
  }
  const latestRun = st.utterances.length ? st.utterances[st.utterances.length - 1].run_id : null;
  const out = [];
  for (const [key, utts] of groups) {
    const mine = utts.filter((u) => u.run_id === latestRun);
    if (!mine.length) continue;
    const share = emotionShare(mine, labels, windowS);
    const seconds = Object.values(share).reduce((a, v) => a + v.seconds, 0);
    out.push({ speaker: key, name: key ? st.speakerName(key) : "unknown", seconds, share });
  }
  return out.sort((a, b) => b.seconds - a.seconds);
}

/** The session's events as JSONL (one event per line, each with its run_id), in (run, seq) order. */
export function toJSONL(store) {
  return sortedEvents(store).map((e) => JSON.stringify(e)).join("\n") + (store.events.length ? "\n" : "");
}

/** The session's events as CSV: one row per event, emotion scores in one column per label. */
export function toCSV(store) {
  const labels = store.labels;
  const head = ["run_id", "seq", "ts", "time_utc", "type", "stream", "utterance_id", "start_s", "end_s",
    "label", "confidence", "latency_ms", "text", ...labels.map((l) => `score_${l}`), "data"];
  const rows = [head.map(csvCell).join(",")];
  for (const e of sortedEvents(store)) {
    const d = e.data || {};
    const scores = d.scores && typeof d.scores === "object" ? d.scores : {};
    const isEmotion = e.type === "emotion";
    rows.push([
      e.run_id, e.seq, e.ts, new Date(e.ts * 1000).toISOString(), e.type, e.stream,
      d.utterance_id ?? "", d.start_s ?? "", d.end_s ?? "", d.label ?? "",
      isEmotion ? confidence(d).toFixed(4) : "", d.latency_ms ?? "", d.text ?? "",
      ...labels.map((l) => (l in scores ? scores[l] : "")),
      JSON.stringify(d),
    ].map(csvCell).join(","));
  }
  return rows.join("\r\n") + "\r\n";
}

function sortedEvents(store) {
  const order = (r) => store.runs.indexOf(r);
  return [...store.events].sort((a, b) => order(a.run_id) - order(b.run_id) || a.seq - b.seq);
}

// RFC 4180 quoting; text that a spreadsheet would run as a formula gets a leading apostrophe.
export function csvCell(value) {
  let s = value === null || value === undefined ? "" : String(value);
  if (typeof value === "string" && /^[=+\-@\t\r]/.test(s)) s = `'${s}`;
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/**
 * The running share over time: at `points` moments across the latest run, each label's share of
 * speaking time in the `windowS` seconds before that moment. Returns {t: [s...], shares: {label: [..]}}.
 */
export function shareSeries(utterances, labels, windowS, points = 80) {
  const out = { t: [], shares: {} };
  for (const l of labels) out.shares[l] = [];
  if (!utterances.length) return out;
  const run = utterances[utterances.length - 1].run_id;
  const mine = utterances.filter((u) => u.run_id === run);
  const first = Math.min(...mine.map((u) => Number(u.start_s) || 0));
  const last = Math.max(...mine.map((u) => Number(u.end_s) || 0));
  const from = Number.isFinite(windowS) ? Math.max(first, last - 3 * windowS) : first;
  for (let i = 0; i < points; i += 1) {
    const t = from + ((last - from) * (i + 1)) / points;
    const lo = t - windowS;
    const secs = {};
    let total = 0;
    for (const u of mine) {
      const a = Math.max(Number(u.start_s) || 0, lo);
      const b = Math.min(Number(u.end_s) || 0, t);
      if (b <= a) continue;
      secs[u.label] = (secs[u.label] || 0) + (b - a);
      total += b - a;
    }
    out.t.push(t);
    for (const l of labels) out.shares[l].push(total > 0 ? (secs[l] || 0) / total : 0);
  }
  return out;
}

/** Black or white, whichever reads better on the colour `hex` (#rrggbb). */
export function textOn(hex) {
  const m = /^#?([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(String(hex));
  if (!m) return "#0e131a";
  const lin = (c) => {
    const v = parseInt(c, 16) / 255;
    return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
  };
  const lum = 0.2126 * lin(m[1]) + 0.7152 * lin(m[2]) + 0.0722 * lin(m[3]);
  // contrast with black (lum + .05) / .05 vs with white 1.05 / (lum + .05)
  return (lum + 0.05) / 0.05 >= 1.05 / (lum + 0.05) ? "#0e131a" : "#ffffff";
}
