// The dashboard: wires the connection, the store and the charts to the page.

import { wsUrl } from "./api.js";
import { Connection } from "./connection.js";
import { clock, drawBars, drawShare, drawShareTrend, drawTimeline } from "./charts.js";
import { cuesFromEvents, toSRT, toTableCSV, toVTT } from "./export.js";
import { nameSpeakerMessage } from "./protocol.js";
import { confidence, emotionShare, shareSeries, speakerShares, Store, textOn, toCSV, toJSONL } from "./store.js";
import { setupTryIt } from "./tryit.js";

const FEED_ROWS = 40;
const $ = (id) => document.getElementById(id);

const store = new Store();
let limits = {};
const ui = { selected: decodeURIComponent((location.hash.match(/stream=([^&]+)/) || [])[1] || ""), queued: false };

const conn = new Connection(wsUrl("/ws"), {
  onHello(data) {
    limits = data.limits && typeof data.limits === "object" ? data.limits : {};
    const after = store.applyHello(data);
    renderLegend();
    schedule();
    return after;
  },
  onEvent(event) {
    store.add(event);
    schedule();
  },
  onState(s) {
    setConnState(s);
  },
  resumeSeq() {
    return store.lastSeq;
  },
});

// -- connection state -------------------------------------------------------------------------

let countdown = null;
function setConnState({ state, detail, retryAt }) {
  const box = $("conn");
  box.dataset.state = state;
  clearInterval(countdown);
  const text = $("conn-text");
  if (state === "live") {
    text.textContent = "live";
    box.title = detail || "";
  } else if (state === "connecting") {
    text.textContent = "connecting…";
    box.title = detail || "";
  } else {
    const tick = () => {
      const s = Math.max(0, Math.ceil((retryAt - Date.now()) / 1000));
      text.textContent = `reconnecting${s ? ` in ${s}s` : "…"}`;
    };
    tick();
    countdown = setInterval(tick, 250);
    box.title = detail || "";
  }
  $("run").textContent = store.runId ? `run ${store.runId}` : "";
}

// -- rendering --------------------------------------------------------------------------------

function schedule() {
  if (ui.queued) return;
  ui.queued = true;
  requestAnimationFrame(() => {
    ui.queued = false;
    render();
  });
}

function currentStream() {
  const streams = store.sourceStreams();
  if (!streams.length) return null;
  return streams.find((s) => s.id === ui.selected) || streams[0];
}

function render() {
  renderStreams();
  const st = currentStream();
  const color = (l) => store.color(l);
  const utts = st ? st.utterances : [];
  const latest = st ? st.latest : null;
  renderNow(st, latest);
  drawBars($("bars"), latest, store.labels, color);
  const lanes = st && st.speakers.size ? st.liveSpeakers().map((key) => ({ key, name: key ? st.speakerName(key) : "unknown" })) : [];
  drawTimeline($("timeline"), utts, {
    spanS: Number($("tl-span").value),
    color,
    onHover: showTip,
    onLeave: hideTip,
    lanes,
    laneOf: (u) => st.resolveSpeaker(u.speaker) || "",
  });
  const windowS = Number($("share-span").value);
  renderSpeakers(st, windowS);
  const share = emotionShare(utts, store.labels, windowS);
  drawShare($("share-bar"), share, store.labels, color);
  renderShareList(share);
  drawShareTrend($("share-trend"), shareSeries(utts, store.labels, windowS), store.labels, color);
  renderKpis(utts, share, windowS);
  renderFeed(utts);
  renderFooter();
  $("run").textContent = store.runId ? `run ${store.runId}` : "";
  // What the page now shows. The store changes as events arrive, the page is drawn at the next animation
  // frame: whoever reads the page (a test) waits for these, not for the store, or it reads the last frame.
  document.body.dataset.run = store.runId || "";
  document.body.dataset.drawnEvents = String(store.events.length);
}

function chip(label) {
  const span = document.createElement("span");
  span.className = "chip";
  span.dataset.label = label;
  span.style.setProperty("--c", store.color(label));
  span.style.color = textOn(store.color(label));
  span.textContent = label;
  return span;
}

function renderStreams() {
  const nav = $("streams");
  const streams = store.sourceStreams();
  nav.hidden = streams.length < 2;
  const wanted = streams.map((s) => `${s.id}|${s.latest ? s.latest.label : ""}|${s.ended}|${s.speaking}`).join(",");
  if (nav.dataset.key === wanted + ui.selected) return;
  nav.dataset.key = wanted + ui.selected;
  nav.replaceChildren();
  const current = currentStream();
  for (const s of streams) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "stream-tab";
    b.dataset.stream = s.id;
    b.setAttribute("aria-pressed", String(current && current.id === s.id));
    const dot = document.createElement("span");
    dot.className = "dot";
    dot.style.background = s.latest ? store.color(s.latest.label) : "transparent";
    const name = document.createElement("span");
    name.textContent = s.name !== s.id ? `${s.id} · ${s.name}` : s.id;
    b.append(dot, name);
    if (s.ended) {
      const e = document.createElement("span");
      e.className = "tab-note";
      e.textContent = "ended";
      b.append(e);
    }
    b.addEventListener("click", () => {
      ui.selected = s.id;
      history.replaceState(null, "", `#stream=${encodeURIComponent(s.id)}`);
      schedule();
    });
    nav.append(b);
  }
}

function renderNow(st, latest) {
  const label = $("now-label");
  const text = $("now-text");
  const meta = $("now-meta");
  $("speaking").hidden = !(st && st.speaking);
  $("ended").hidden = !(st && st.ended);
  // The transcript may be newer than the last emotion (it arrives first).
  const tr = st && st.transcript;
  const showTranscript = tr && (!latest || tr.seq_key > latest.seq_key);
  if (!latest) {
    label.replaceChildren(document.createTextNode(st ? "waiting for speech…" : "waiting for a stream…"));
    delete label.dataset.label;
    text.textContent = showTranscript ? tr.text || "" : "";
    meta.textContent = "";
    return;
  }
  label.dataset.label = latest.label;
  const conf = document.createElement("span");
  conf.className = "conf";
  conf.textContent = `${(confidence(latest) * 100).toFixed(0)}%`;
  label.replaceChildren(chip(latest.label), conf);
  // A newer transcript whose emotion is still being computed: show its words, flag the label as older.
  label.classList.toggle("stale", Boolean(showTranscript));
  text.textContent = showTranscript ? tr.text || "" : latest.text || "(no words — judged from the voice)";
  if (showTranscript) {
    meta.textContent = "classifying this utterance…";
    return;
  }
  const parts = [`${clock(Number(latest.start_s) || 0)}–${clock(Number(latest.end_s) || 0)}`];
  if (Number.isFinite(Number(latest.latency_ms))) parts.push(`latency ${Math.round(Number(latest.latency_ms))} ms`);
  if (Array.isArray(latest.modalities)) parts.push(latest.modalities.join(" + "));
  meta.textContent = parts.join(" · ");
}

function renderKpis(utts, share, windowS) {
  const box = $("kpis");
  box.replaceChildren();
  const run = utts.length ? utts[utts.length - 1].run_id : null;
  const mine = utts.filter((u) => u.run_id === run);
  const lat = mine.map((u) => Number(u.latency_ms)).filter(Number.isFinite).sort((a, b) => a - b);
  const top = store.labels.reduce((best, l) => (share[l] && share[l].share > (share[best]?.share ?? 0) ? l : best), null);
  const span = Number.isFinite(windowS) ? `last ${Math.round(windowS / 60)} min` : "whole run";
  const tiles = [
    ["utterances", String(mine.length), null],
    [`mostly · ${span}`, top && share[top].share > 0 ? top : "–", top && share[top].share > 0 ? top : null],
    ["median latency", lat.length ? `${Math.round(lat[Math.floor(lat.length / 2)])} ms` : "–", null],
  ];
  for (const [name, value, label] of tiles) {
    const tile = document.createElement("div");
    tile.className = "kpi";
    const v = document.createElement("div");
    v.className = "kpi-value";
    if (label) v.append(chip(label));
    else v.textContent = value;
    const n = document.createElement("div");
    n.className = "kpi-name";
    n.textContent = name;
    tile.append(v, n);
    box.append(tile);
  }
}

function renderShareList(share) {
  const list = $("share-list");
  list.replaceChildren();
  const entries = store.labels.map((l) => [l, share[l] || { seconds: 0, share: 0 }]);
  entries.sort((a, b) => b[1].share - a[1].share);
  for (const [label, v] of entries) {
    const row = document.createElement("div");
    row.className = `share-row${v.share ? "" : " zero"}`;
    row.dataset.label = label;
    const sw = document.createElement("span");
    sw.className = "swatch";
    sw.style.background = store.color(label);
    const name = document.createElement("span");
    name.className = "share-name";
    name.textContent = label;
    const pct = document.createElement("span");
    pct.className = "share-pct";
    pct.textContent = `${(v.share * 100).toFixed(0)}%`;
    const secs = document.createElement("span");
    secs.className = "share-secs";
    secs.textContent = `${v.seconds.toFixed(1)} s`;
    row.append(sw, name, pct, secs);
    list.append(row);
  }
}

// One row per speaker: a name field (renaming sends name_speaker: every client sees the new name), the
// speaker's emotion share as a stacked bar, and their speaking time.
function renderSpeakers(st, windowS) {
  const box = $("speaker-list");
  const card = box.closest(".card");
  const rows = st ? speakerShares(st, store.labels, windowS) : [];
  card.hidden = !rows.some((r) => r.speaker);
  if (box.contains(document.activeElement)) return; // do not disturb a name being typed
  box.replaceChildren();
  for (const r of rows) {
    const row = document.createElement("div");
    row.className = "speaker-row";
    row.dataset.speaker = r.speaker;
    let name;
    if (r.speaker) {
      name = document.createElement("input");
      name.className = "speaker-name";
      name.type = "text";
      name.maxLength = 64;
      name.value = r.name;
      name.dataset.speaker = r.speaker;
      name.setAttribute("aria-label", `name of speaker ${r.speaker}`);
      name.title = `speaker ${r.speaker}: type a name and press Enter`;
      name.addEventListener("keydown", (ev) => {
        if (ev.key === "Enter") name.blur();
        if (ev.key === "Escape") {
          name.value = r.name;
          name.blur();
        }
      });
      name.addEventListener("change", () => {
        const text = name.value.trim();
        if (text && text !== r.name) {
          try {
            conn.send(nameSpeakerMessage(st.id, r.speaker, text));
          } catch (err) {
            $("errors").textContent = `rename: ${err.message}`;
          }
        }
      });
    } else {
      name = document.createElement("span");
      name.className = "speaker-name unknown";
      name.textContent = "unknown";
    }
    const bar = document.createElement("div");
    bar.className = "speaker-bar";
    for (const label of store.labels) {
      const v = r.share[label];
      if (!v || !v.share) continue;
      const seg = document.createElement("span");
      seg.className = "speaker-seg";
      seg.dataset.label = label;
      seg.style.width = `${(v.share * 100).toFixed(2)}%`;
      seg.style.background = store.color(label);
      seg.title = `${label} ${(v.share * 100).toFixed(0)}%`;
      bar.append(seg);
    }
    const top = store.labels.map((l) => [l, r.share[l]?.share || 0]).sort((a, b) => b[1] - a[1])[0];
    const secs = document.createElement("span");
    secs.className = "speaker-secs";
    secs.textContent = `${r.seconds.toFixed(1)} s${top && top[1] ? ` · mostly ${top[0]}` : ""}`;
    row.append(name, bar, secs);
    box.append(row);
  }
}

function renderFeed(utts) {
  const feed = $("feed");
  const rows = utts.slice(-FEED_ROWS).reverse();
  const st = currentStream();
  const names = st ? rows.map((u) => st.speakerName(u.speaker)).join(",") : "";
  const key = rows.map((u) => `${u.run_id}:${u.seq}`).join(",") + names;
  if (feed.dataset.key === key) return;
  feed.dataset.key = key;
  feed.replaceChildren();
  for (const u of rows) {
    const li = document.createElement("li");
    li.className = "feed-item";
    li.dataset.label = u.label;
    li.dataset.seq = String(u.seq);
    const t = document.createElement("span");
    t.className = "feed-time";
    t.textContent = clock(Number(u.start_s) || 0);
    const words = document.createElement("span");
    words.className = "feed-text";
    words.textContent = u.text || "—";
    if (u.speaker && st) {
      const who = document.createElement("span");
      who.className = "feed-speaker";
      who.dataset.speaker = st.resolveSpeaker(u.speaker) || "";
      who.textContent = st.speakerName(u.speaker);
      words.prepend(who, " ");
    }
    li.append(t, chip(u.label), words);
    feed.append(li);
  }
}

function renderLegend() {
  const legend = $("legend");
  legend.replaceChildren();
  for (const label of store.labels) {
    const item = document.createElement("span");
    item.className = "legend-item";
    const sw = document.createElement("span");
    sw.className = "swatch";
    sw.style.background = store.color(label);
    const name = document.createElement("span");
    name.textContent = label;
    item.append(sw, name);
    legend.append(item);
  }
}

// What the footer shows from the latest `stats` event (free-form; missing keys are skipped).
const STATS_SHOWN = [
  ["utterances", "utterances"],
  ["rtf.asr", "ASR real-time factor"],
  ["rtf.classifier", "classifier RTF"],
  ["queues.utterances", "queued"],
  ["hub.subscribers", "subscribers"],
  ["hub.dropped_total", "dropped for slow subscribers"],
  ["drops.mic_audio_s", "mic audio dropped (s)"],
];

function renderFooter() {
  const parts = [`${store.events.length} events`];
  const s = store.stats;
  if (s) {
    for (const [path, name] of STATS_SHOWN) {
      const v = path.split(".").reduce((o, k) => (o && typeof o === "object" ? o[k] : undefined), s);
      if (typeof v === "number") parts.push(`${name} ${Number.isInteger(v) ? v : v.toFixed(3)}`);
    }
  }
  if (store.lagged) parts.push(`lost while lagging ${store.lagged} (refetched)`);
  $("stats").textContent = parts.join(" · ");
  const err = store.errors[store.errors.length - 1];
  $("errors").textContent = err ? `${err.code || "error"}: ${err.message || ""}` : "";
}

// -- tooltip ----------------------------------------------------------------------------------

function showTip(u, cx, cy) {
  const tip = $("tip");
  tip.replaceChildren();
  const head = document.createElement("div");
  head.className = "tip-head";
  const when = document.createElement("span");
  when.className = "tip-time";
  const wall = new Date(u.ts * 1000).toLocaleTimeString();
  when.textContent = `${clock(Number(u.start_s) || 0)}–${clock(Number(u.end_s) || 0)} · ${wall}`;
  head.append(chip(u.label), when);
  const text = document.createElement("div");
  text.className = "tip-text";
  text.textContent = u.text ? `“${u.text}”` : "(no words)";
  const scores = document.createElement("div");
  scores.className = "tip-scores";
  const sorted = store.labels.map((l) => [l, Number(u.scores?.[l]) || 0]).sort((a, b) => b[1] - a[1]);
  for (const [label, v] of sorted) {
    const row = document.createElement("div");
    row.className = "tip-row";
    const name = document.createElement("span");
    name.textContent = label;
    const bar = document.createElement("span");
    bar.className = "tip-bar";
    const fill = document.createElement("span");
    fill.style.width = `${(v * 100).toFixed(1)}%`;
    fill.style.background = store.color(label);
    bar.append(fill);
    const val = document.createElement("span");
    val.className = "tip-val";
    val.textContent = `${(v * 100).toFixed(1)}%`;
    row.append(name, bar, val);
    scores.append(row);
  }
  tip.append(head, text, scores);
  tip.hidden = false;
  const r = tip.getBoundingClientRect();
  const x = Math.min(window.innerWidth - r.width - 8, cx + 14);
  const y = cy + r.height + 20 > window.innerHeight ? cy - r.height - 14 : cy + 14;
  tip.style.left = `${Math.max(8, x)}px`;
  tip.style.top = `${Math.max(8, y)}px`;
}

function hideTip() {
  $("tip").hidden = true;
}

// -- downloads --------------------------------------------------------------------------------

function download(name, type, text) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

function sessionName() {
  return `emostream-${store.runId || "session"}`;
}

// Subtitles of the selected stream's latest run (each run replays on its own timeline); the table has all.
function currentRunEvents(streamId) {
  return store.events.filter((e) => e.run_id === store.runId && (streamId === null || e.stream === streamId));
}

function subtitles(kind) {
  const st = currentStream();
  const status = $("errors");
  if (!st) {
    status.textContent = "no stream to export yet";
    return;
  }
  const cues = cuesFromEvents(currentRunEvents(st.id), st.id);
  if (!cues.length) {
    status.textContent = `stream ${st.id} has no utterances to export yet`;
    return;
  }
  const text = kind === "srt" ? toSRT(cues) : toVTT(cues);
  download(`${sessionName()}-${st.id}.${kind}`, kind === "srt" ? "application/x-subrip" : "text/vtt", text);
}

$("dl-srt").addEventListener("click", () => subtitles("srt"));
$("dl-vtt").addEventListener("click", () => subtitles("vtt"));
$("dl-table").addEventListener("click", () => {
  const cues = cuesFromEvents(currentRunEvents(null));
  download(`${sessionName()}-utterances.csv`, "text/csv", `\ufeff${toTableCSV(cues, store.labels)}`);
});
$("dl-jsonl").addEventListener("click", () => download(`${sessionName()}.jsonl`, "application/x-ndjson", toJSONL(store)));
$("dl-csv").addEventListener("click", () => download(`${sessionName()}.csv`, "text/csv", toCSV(store)));
$("tl-span").addEventListener("change", schedule);
$("share-span").addEventListener("change", schedule);
window.addEventListener("resize", schedule);

const tryCtx = {
  store,
  chip,
  limits: () => limits,
  select(streamId) {
    ui.selected = streamId;
    history.replaceState(null, "", `${location.pathname}${location.search}#stream=${encodeURIComponent(streamId)}`);
    schedule();
  },
};
setupTryIt(tryCtx);

// For people poking at the page from the console, and for the browser test.
window.emostream = { store, conn, tryIt: tryCtx };

renderLegend();
render();
conn.start();
