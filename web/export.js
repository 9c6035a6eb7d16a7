// Subtitles (SRT, WebVTT) and a per-utterance table (CSV) from events, for the page's downloads.
// The same rules as stream/export.py (`emostream export`); tests/web/test_export_js.py keeps the two equal.

const MIN_CUE_S = 0.3;
const FORMULA_START = ["=", "+", "-", "@", "\t", "\r"];

function speakerOf(data) {
  let value = data ? data.speaker : undefined;
  if (value && typeof value === "object") value = value.name || value.label || value.id;
  if (value === undefined || value === null || value === "") return "";
  return String(value).split(/\s+/).filter(Boolean).join(" ").slice(0, 80);
}

// A speaker label as the run finally knew it: merges followed, then its name (the label if none).
function resolve(stream, label, names, merged) {
  for (let i = 0; i < 32 && merged.has(`${stream}\u0000${label}`); i += 1) label = merged.get(`${stream}\u0000${label}`);
  return names.get(`${stream}\u0000${label}`) ?? label;
}

function squash(text) {
  return String(text ?? "").split(/\s+/).filter(Boolean).join(" ");
}

/** Cues of every utterance with words or an emotion, by stream then start time (see export.py). */
export function cuesFromEvents(events, stream = null) {
  const transcripts = new Map();
  const emotions = new Map();
  const names = new Map(); // stream NUL label -> name
  const merged = new Map(); // stream NUL retired label -> the label it turned out to be
  const corrected = new Map(); // stream NUL utterance id -> its label after a correction
  const order = [];
  for (const e of events) {
    if (stream !== null && e.stream !== stream) continue;
    if (e.type === "speaker") {
      const label = String(e.data?.speaker || "");
      if (!label) continue;
      const k = `${e.stream}\u0000${label}`;
      if (e.data.action === "named" && e.data.name) names.set(k, String(e.data.name).split(/\s+/).filter(Boolean).join(" ").slice(0, 80));
      else if (e.data.action === "merged" && e.data.into) merged.set(k, String(e.data.into));
      else if (e.data.action === "corrected" && e.data.into && e.data.utterance_id) {
        corrected.set(`${e.stream}\u0000${e.data.utterance_id}`, String(e.data.into));
      }
      continue;
    }
    if ((e.type !== "transcript" && e.type !== "emotion") || e.stream.startsWith("_")) continue;
    const uid = String(e.data?.utterance_id ?? "");
    if (!uid) continue;
    const key = `${e.stream}\u0000${uid}`;
    if (!transcripts.has(key) && !emotions.has(key)) order.push([key, e.stream, uid]);
    (e.type === "transcript" ? transcripts : emotions).set(key, e.data);
  }
  const cues = [];
  for (const [key, st, uid] of order) {
    const emo = emotions.get(key);
    const tr = transcripts.get(key);
    const data = emo || tr;
    const text = squash(emo?.text || tr?.text || "");
    const label = emo ? String(emo.label ?? "") : "";
    const scores = emo && emo.scores && typeof emo.scores === "object" ? emo.scores : {};
    if (!text && !label) continue;
    const start = Number(data.start_s ?? 0);
    const end = Number(data.end_s ?? start);
    if (!Number.isFinite(start) || !Number.isFinite(end)) continue;
    cues.push({
      stream: st,
      utterance_id: uid,
      start_s: Math.max(0, start),
      end_s: Math.max(end, start + MIN_CUE_S),
      text,
      label,
      score: Number(scores[label]) || 0,
      scores,
      speaker: resolve(st, corrected.get(key) || speakerOf(emo) || speakerOf(tr), names, merged),
      modalities: Array.isArray(emo?.modalities) ? emo.modalities.map(String) : [],
    });
  }
  cues.sort((a, b) => (a.stream < b.stream ? -1 : a.stream > b.stream ? 1 : a.start_s - b.start_s || a.end_s - b.end_s));
  return cues;
}

function clock(seconds, sep) {
  let ms = Math.round(seconds * 1000);
  const h = Math.floor(ms / 3600000);
  ms -= h * 3600000;
  const m = Math.floor(ms / 60000);
  ms -= m * 60000;
  const s = Math.floor(ms / 1000);
  ms -= s * 1000;
  const p = (n, w = 2) => String(n).padStart(w, "0");
  return `${p(h)}:${p(m)}:${p(s)}${sep}${p(ms, 3)}`;
}

function emotionLine(cue) {
  return cue.label ? `(${cue.label} ${Math.round(cue.score * 100)}%)` : "";
}

const escapeVtt = (t) => t.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;");

function cueLines(cue, vtt) {
  let text = cue.text ? cue.text.replaceAll("-->", "->") : "(no words)";
  if (vtt) {
    text = escapeVtt(text);
    if (cue.speaker) text = `<v ${escapeVtt(cue.speaker)}>${text}</v>`;
  } else if (cue.speaker) {
    text = `${cue.speaker}: ${text}`;
  }
  const emotion = emotionLine(cue);
  return emotion ? [text, emotion] : [text];
}

export function toSRT(cues) {
  return cues
    .map((cue, i) => [String(i + 1), `${clock(cue.start_s, ",")} --> ${clock(cue.end_s, ",")}`, ...cueLines(cue, false)].join("\n") + "\n\n")
    .join("");
}

export function toVTT(cues) {
  const body = cues
    .map((cue, i) => [`${cue.stream}-${i + 1}`, `${clock(cue.start_s, ".")} --> ${clock(cue.end_s, ".")}`, ...cueLines(cue, true)].join("\n") + "\n\n")
    .join("");
  return `WEBVTT\n\n${body}`;
}

function cell(value) {
  let v = String(value);
  if (FORMULA_START.some((c) => v.startsWith(c))) v = `'${v}`;
  return /[",\r\n]/.test(v) ? `"${v.replaceAll('"', '""')}"` : v;
}

/** One row per utterance, every label's score a column (the same columns as `emostream export --format csv`). */
export function toTableCSV(cues, labels) {
  const extra = [...new Set(cues.flatMap((c) => Object.keys(c.scores)))].filter((k) => !labels.includes(k)).sort();
  const known = [...labels, ...extra];
  const head = ["stream", "utterance_id", "start_s", "end_s", "start", "end", "speaker", "text", "emotion", "score",
    "modalities", ...known.map((k) => `score_${k}`)];
  const rows = [head.join(",")];
  for (const c of cues) {
    rows.push([
      cell(c.stream), cell(c.utterance_id), c.start_s.toFixed(3), c.end_s.toFixed(3), clock(c.start_s, "."),
      clock(c.end_s, "."), cell(c.speaker), cell(c.text), cell(c.label), c.label ? c.score.toFixed(4) : "",
      cell(c.modalities.join("+")), ...known.map((k) => (k in c.scores ? Number(c.scores[k]).toFixed(4) : "")),
    ].join(","));
  }
  return rows.join("\r\n") + "\r\n";
}
