// Unit tests of web/store.js (pure state, no DOM), run by tests/web/test_protocol_golden.py with node.
import assert from "node:assert/strict";

const store_js = process.argv[2];
const { Store, emotionShare, shareSeries, toCSV, toJSONL, csvCell, textOn, confidence } = await import(store_js);

const LABELS = ["anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise"];
const COLORS = { anger: "#d7263d", joy: "#f2b134", neutral: "#8a94a6" };
const scores = (label) => Object.fromEntries(LABELS.map((l) => [l, l === label ? 0.7 : 0.05]));
const emotion = (seq, stream, label, start, end, text = "words") => ({
  type: "emotion", seq, stream, ts: 1000 + seq,
  data: { utterance_id: `${stream}-${seq}`, start_s: start, end_s: end, text, label, scores: scores(label),
    modalities: ["text"], latency_ms: 300 },
});
const tests = [];
const test = (name, fn) => tests.push([name, fn]);

test("hello sets labels and colours, and says where to resume", () => {
  const s = new Store();
  assert.equal(s.applyHello({ run_id: "r1", labels: LABELS, colors: COLORS, streams: ["mic", { id: "ep1", name: "ep1.mp4", kind: "file" }] }), -1);
  assert.deepEqual(s.labels, LABELS);
  assert.equal(s.color("joy"), "#f2b134");
  assert.deepEqual(s.sourceStreams().map((x) => x.id), ["mic", "ep1"]);
  assert.equal(s.stream("ep1").name, "ep1.mp4");
  s.add(emotion(0, "mic", "joy", 0, 1));
  s.add(emotion(1, "mic", "anger", 2, 3));
  assert.equal(s.applyHello({ run_id: "r1", labels: LABELS, colors: COLORS }), 1); // same run: resume after 1
  assert.equal(s.applyHello({ run_id: "r2", labels: LABELS, colors: COLORS }), -1); // new run: from its start
});

test("a new run's transcript replaces the last run's, though its seq is lower", () => {
  const s = new Store();
  s.applyHello({ run_id: "r1", labels: LABELS, colors: COLORS });
  s.add({ type: "transcript", seq: 40, stream: "mic", ts: 1, data: { utterance_id: "mic-9", text: "old words" } });
  s.add(emotion(41, "mic", "anger", 0, 1, "old words"));
  s.applyHello({ run_id: "r2", labels: LABELS, colors: COLORS });
  s.add({ type: "transcript", seq: 2, stream: "mic", ts: 2, data: { utterance_id: "mic-1", text: "new words" } });
  const st = s.stream("mic");
  assert.equal(st.transcript.text, "new words");
  assert.ok(st.transcript.seq_key > st.latest.seq_key); // newer than the last emotion: shown as in progress
  s.add(emotion(3, "mic", "joy", 0, 1, "new words"));
  assert.equal(st.latest.label, "joy");
  assert.ok(st.transcript.seq_key < st.latest.seq_key); // its emotion arrived: the label is current
});

test("duplicates (same run and seq) are ignored; the same seq of a new run is not", () => {
  const s = new Store();
  s.applyHello({ run_id: "r1", labels: LABELS, colors: COLORS });
  assert.equal(s.add(emotion(0, "mic", "joy", 0, 1)), true);
  assert.equal(s.add(emotion(0, "mic", "joy", 0, 1)), false);
  s.applyHello({ run_id: "r2", labels: LABELS, colors: COLORS });
  assert.equal(s.add(emotion(0, "mic", "fear", 0, 1)), true);
  assert.equal(s.events.length, 2);
  assert.equal(s.stream("mic").latest.label, "fear"); // the newest run's
});

test("connection events are not stored as events; lagged is counted", () => {
  const s = new Store();
  s.applyHello({ run_id: "r1", labels: LABELS });
  assert.equal(s.add({ type: "lagged", seq: 9, stream: "_connection", ts: 1, data: { dropped: 5 } }), false);
  assert.equal(s.add({ type: "error", seq: 9, stream: "_connection", ts: 1, data: { code: "bad_request", message: "x" } }), false);
  assert.equal(s.lagged, 5);
  assert.equal(s.errors.length, 1);
  assert.equal(s.events.length, 0);
  assert.equal(s.lastSeq, -1);
});

test("utterances replayed out of order are kept in timeline order", () => {
  const s = new Store();
  s.applyHello({ run_id: "r1", labels: LABELS });
  s.add(emotion(9, "mic", "joy", 9, 10));
  s.add(emotion(3, "mic", "anger", 3, 4));
  s.add(emotion(5, "mic", "fear", 5, 6));
  assert.deepEqual(s.stream("mic").utterances.map((u) => u.seq), [3, 5, 9]);
  assert.equal(s.stream("mic").latest.seq, 9);
  assert.equal(s.lastSeq, 9);
});

test("speech, transcript and end update the stream", () => {
  const s = new Store();
  s.applyHello({ run_id: "r1", labels: LABELS });
  s.add({ type: "speech", seq: 0, stream: "mic", ts: 1, data: { state: "start", utterance_id: "u1", t_s: 0.5 } });
  assert.equal(s.stream("mic").speaking, true);
  s.add({ type: "transcript", seq: 1, stream: "mic", ts: 1, data: { utterance_id: "u1", text: "hello" } });
  assert.equal(s.stream("mic").transcript.text, "hello");
  s.add({ type: "end", seq: 2, stream: "mic", ts: 2, data: { reason: "eof" } });
  assert.equal(s.stream("mic").ended, true);
  assert.equal(s.stream("mic").speaking, false);
  s.add({ type: "stats", seq: 3, stream: "_service", ts: 3, data: { utterances: 1 } });
  assert.equal(s.stats.utterances, 1);
  assert.deepEqual(s.sourceStreams().map((x) => x.id), ["mic"]);
});

test("emotion share weighs speaking time inside the window", () => {
  const utts = [
    { label: "joy", start_s: 0, end_s: 10, run_id: "r" },
    { label: "anger", start_s: 100, end_s: 103, run_id: "r" },
    { label: "joy", start_s: 110, end_s: 111, run_id: "r" },
  ];
  const all = emotionShare(utts, LABELS, Infinity);
  assert.equal(all.joy.seconds, 11);
  assert.ok(Math.abs(all.joy.share - 11 / 14) < 1e-9);
  const last60 = emotionShare(utts, LABELS, 60); // 51..111: the first joy is out
  assert.equal(last60.joy.seconds, 1);
  assert.equal(last60.anger.seconds, 3);
  assert.ok(Math.abs(last60.anger.share - 0.75) < 1e-9);
  const clipped = emotionShare(utts, LABELS, 10.5); // 100.5..111: half a second of anger is cut
  assert.equal(clipped.anger.seconds, 2.5);
  assert.equal(emotionShare([], LABELS, 60).joy.share, 0);
  const series = shareSeries(utts, LABELS, 60, 10);
  assert.equal(series.t.length, 10);
  for (let i = 0; i < 10; i += 1) {
    const sum = LABELS.reduce((a, l) => a + series.shares[l][i], 0);
    assert.ok(sum === 0 || Math.abs(sum - 1) < 1e-9);
  }
});

test("JSONL and CSV downloads hold every event in (run, seq) order, safely quoted", () => {
  const s = new Store();
  s.applyHello({ run_id: "r1", labels: LABELS });
  s.add(emotion(1, "mic", "joy", 1, 2, 'He said "hi", then left'));
  s.add(emotion(0, "mic", "anger", 0, 1, "=HYPERLINK(\"http://x\")"));
  s.applyHello({ run_id: "r2", labels: LABELS });
  s.add(emotion(0, "mic", "fear", 0, 1, "line\nbreak"));
  const lines = toJSONL(s).trimEnd().split("\n").map((l) => JSON.parse(l));
  assert.deepEqual(lines.map((e) => [e.run_id, e.seq]), [["r1", 0], ["r1", 1], ["r2", 0]]);
  const csv = toCSV(s);
  const head = csv.split("\r\n")[0].split(",");
  assert.deepEqual(head.slice(0, 6), ["run_id", "seq", "ts", "time_utc", "type", "stream"]);
  assert.ok(head.includes("score_joy"));
  assert.ok(csv.includes('"He said ""hi"", then left"'));
  assert.ok(csv.includes(`"'=HYPERLINK(""http://x"")"`)); // no formula injection
  assert.ok(csv.includes('"line\nbreak"'));
  assert.equal(csvCell(-3), "-3"); // numbers are not escaped
  assert.equal(confidence({ label: "joy", scores: scores("joy") }), 0.7);
});

test("chip text colour keeps contrast", () => {
  assert.equal(textOn("#f2b134"), "#0e131a"); // dark on yellow
  assert.equal(textOn("#2e6fd8"), "#ffffff"); // white on blue
  assert.equal(textOn("nonsense"), "#0e131a");
});

test("a speaker correction re-labels its utterance, even one whose emotion comes later", () => {
  const s = new Store();
  s.applyHello({ run_id: "r1", labels: LABELS, colors: COLORS });
  const said = (seq, speaker, start) => {
    const e = emotion(seq, "mic", "joy", start, start + 1);
    e.data.speaker = speaker;
    return e;
  };
  s.add(said(0, "S1", 0));
  s.add(said(1, "S2", 2));
  const fix = (seq, uid, was, into) => ({ type: "speaker", seq, stream: "mic", ts: 1, data: { action: "corrected", speaker: was, into, utterance_id: uid } });
  s.add(fix(2, "mic-1", "S2", "S1"));
  const st = s.stream("mic");
  assert.deepEqual(st.utterances.map((u) => u.speaker), ["S1", "S1"]);
  assert.deepEqual(st.liveSpeakers(), ["S1"]);
  s.add(fix(3, "mic-5", "S2", "S1")); // before mic-5's emotion, which still carries the label first sent
  s.add(said(5, "S2", 4));
  assert.deepEqual(st.utterances.map((u) => u.speaker), ["S1", "S1", "S1"]);
});

let failed = 0;
for (const [name, fn] of tests) {
  try {
    fn();
    console.log(`ok - ${name}`);
  } catch (err) {
    failed += 1;
    console.log(`FAIL - ${name}\n${err.stack}`);
  }
}
process.exit(failed ? 1 : 0);
