"""Latency: end of speech in the audio -> ``emotion`` event received by a websocket client.

For each ASR model the real service runs as its own process (``emostream run --source testset.wav
--exit-when-done``, replaying at real time, 127.0.0.1 only) while this process is a websocket
subscriber that stamps every event on arrival. Per utterance, from the events' own fields:

* end of speech ``E``: ``emotion.ts - emotion.latency_ms`` (the pipeline's reference: the wall time
  at which the last speech sample was played, from the replay's pacing);
* VAD tail: ``speech(end).ts - E`` (the trailing silence the segmenter waits for, plus VAD work);
* ASR: ``transcript.asr_ms`` (Whisper's time on the utterance, wherever it was spent);
* after end: ``transcript.ts - speech(end).ts`` -- what of Whisper and the speaker label was still left
  when the utterance ended (with ``vad.early_start_ms`` both start before the end, on its preview);
* features + classifier: ``emotion.ts - transcript.ts`` (audio features, both branches, the
  micro-batch wait and any queueing behind the previous utterance);
* delivery: client arrival - ``emotion.ts`` (event bus, hub queue, websocket, client parse).

The total is also measured against the *truth* end of speech (the test set's spans): the replay's
start time is recovered from the utterances' ends (``E - (end_s - post_roll)``, median), and
``arrival - (start + truth end)`` is reported beside the pipeline's own figure.

Usage: ``python -m bench.latency [--models tiny.en,base] [--n 6] [--set vad.end_silence_ms=300]``;
``--full`` uses 30 utterances; ``--out NAME`` writes ``bench/results/NAME.json``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import (
    REPO,
    markdown_table,
    models_of,
    replay_parser,
    replay_setup,
    summarize,
    write_result,
)
from bench.procs import free_port
from stream.records import SAMPLE_RATE_HZ

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 120.0  # model loading included
STAGES = ("vad_tail", "asr", "after_end", "features_classifier", "delivery", "total", "total_vs_truth")


def parse_setting(item: str) -> tuple[str, Any]:
    key, _, value = item.partition("=")
    return key.strip(), tomllib.loads(f"v = {value.strip()}")["v"]


async def collect(url: str, deadline_s: float) -> list[tuple[float, dict[str, Any]]]:
    """Connect (retrying while the service loads its models) and keep ``(arrival, event)`` until ``end``."""
    from websockets.asyncio.client import connect

    start = time.monotonic()
    while True:
        try:
            ws = await connect(url, open_timeout=5, ping_interval=None, max_size=2**22)
            break
        except OSError:
            if time.monotonic() - start > CONNECT_TIMEOUT_S:
                raise
            await asyncio.sleep(0.05)
    got: list[tuple[float, dict[str, Any]]] = []
    async with ws:
        async with asyncio.timeout(deadline_s):
            async for raw in ws:
                arrival = time.time()
                event = json.loads(raw)
                got.append((arrival, event))
                if event.get("type") == "end":
                    break
    return got


def breakdown(
    received: list[tuple[float, dict[str, Any]]], truth: list[Any], *, post_roll_s: float
) -> list[dict[str, Any]]:
    """Per-utterance stage times in seconds (see the module docstring) from the received events."""
    from stream.evaluation import Utterance, align

    by_utt: dict[str, dict[str, Any]] = {}
    for arrival, e in received:
        d = e.get("data") or {}
        uid = d.get("utterance_id")
        if uid is None:
            continue
        slot = by_utt.setdefault(uid, {})
        if e["type"] == "speech" and d.get("state") == "end":
            slot["speech_end"] = e
        elif e["type"] in ("transcript", "emotion"):
            slot[e["type"]] = e
            if e["type"] == "emotion":
                slot["arrival"] = arrival
    rows = []
    for uid, slot in by_utt.items():
        if not {"speech_end", "transcript", "emotion"} <= slot.keys():
            continue
        emo, end_ev, text_ev = slot["emotion"], slot["speech_end"], slot["transcript"]
        speech_end_wall = emo["ts"] - emo["data"]["latency_ms"] / 1000
        asr = float(text_ev["data"].get("asr_ms", 0.0)) / 1000
        rows.append({
            "utterance_id": uid,
            "start_s": emo["data"]["start_s"],
            "end_s": emo["data"]["end_s"],
            "forced": bool(end_ev["data"].get("forced")),
            "speech_end_wall": speech_end_wall,
            "vad_tail": end_ev["ts"] - speech_end_wall,
            "asr": asr,
            "after_end": text_ev["ts"] - end_ev["ts"],
            "features_classifier": emo["ts"] - text_ev["ts"],
            "delivery": slot["arrival"] - emo["ts"],
            "total": slot["arrival"] - speech_end_wall,
        })  # fmt: skip
    rows.sort(key=lambda r: r["start_s"])
    # The replay's start on the wall clock, from utterances that ended on silence (not forced splits).
    starts = [r["speech_end_wall"] - (r["end_s"] - post_roll_s) for r in rows if not r["forced"]]
    if starts and truth:
        t0 = statistics.median(starts)
        preds = [Utterance(r["start_s"], r["end_s"], "", None, r["utterance_id"]) for r in rows]
        for m in align(preds, truth):
            rows[m.pred]["truth_end_s"] = truth[m.truth].end_s
            rows[m.pred]["total_vs_truth"] = (
                rows[m.pred]["speech_end_wall"] + rows[m.pred]["total"] - (t0 + truth[m.truth].end_s)
            )
            rows[m.pred]["vad_end_error"] = (rows[m.pred]["end_s"] - post_roll_s) - truth[m.truth].end_s
    return rows


def config_text(port: int, log_dir: str, settings: Sequence[str] = ()) -> str:
    """A TOML config for the service: loopback server on ``port``, event log in ``log_dir``, plus
    ``section.key=value`` settings (TOML values, checked by the service's strict loader)."""
    tables: dict[str, list[str]] = {"server": [f"port = {port}", 'host = "127.0.0.1"'],
                                    "log": [f"event_log_dir = {json.dumps(log_dir)}"]}  # fmt: skip
    for item in settings:
        key, sep, value = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not (sep and dot and name and value.strip()):
            raise ValueError(f"--set wants section.key=value, got {item!r}")
        tables.setdefault(section, []).append(f"{name} = {value.strip()}")
    return "".join(f"[{t}]\n" + "".join(line + "\n" for line in lines) for t, lines in tables.items())


def run_model(
    model: str, wav: Path, truth_csv: Path, checkpoint: Path, audio_s: float, *, settings: Sequence[str] = ()
) -> dict[str, Any]:
    import psutil

    from stream.config import load_config
    from stream.evaluation import load_truth

    port = free_port()
    cfg = load_config(None, **dict(parse_setting(x) for x in settings))
    frame = round(cfg.audio.sample_rate_hz * cfg.vad.frame_ms / 1000)
    # As the segmenter rounds it: whole frames.
    post_roll_s = math.ceil(cfg.vad.post_roll_ms * SAMPLE_RATE_HZ / 1000 / frame) * frame / SAMPLE_RATE_HZ
    with tempfile.TemporaryDirectory(prefix="emostream-latency-") as tmp:
        conf = Path(tmp) / "bench.toml"
        conf.write_text(config_text(port, tmp, settings))
        cmd = [sys.executable, "-m", "stream", "run", "--config", str(conf), "--source", str(wav),
               "--asr-model", model, "--device", "cpu", "--checkpoint", str(checkpoint), "--exit-when-done",
               "--quiet", "--log-level", "WARNING"]  # fmt: skip
        log = Path(tmp) / "service.log"
        with log.open("w") as log_fh:  # a file, not a pipe: a chatty service must never block on it
            service = subprocess.Popen(cmd, cwd=REPO, stdout=log_fh, stderr=subprocess.STDOUT)
            try:
                proc = psutil.Process(service.pid)
                received = asyncio.run(collect(f"ws://127.0.0.1:{port}/ws", CONNECT_TIMEOUT_S + 3 * audio_s + 60))
                cpu = proc.cpu_times()
                service.wait(timeout=60)
            finally:
                if service.poll() is None:
                    service.kill()
                    service.wait()
        if service.returncode != 0:
            tail = log.read_text(errors="replace").strip()[-2000:]
            raise RuntimeError(f"the service exited with {service.returncode}: {tail}")
    rows = breakdown(received, load_truth([truth_csv]), post_roll_s=post_roll_s)
    stages = {s: summarize([r[s] for r in rows if s in r], digits=3) for s in STAGES}
    vad_err = [r["vad_end_error"] for r in rows if "vad_end_error" in r]
    stats = [e["data"] for _, e in received if e.get("type") == "stats"]
    return {
        "model": model,
        "utterances": len(rows),
        # Whisper passes on previews: used for their utterance, or wasted when speech resumed (the run's last stats).
        "early_start": stats[-1].get("early") if stats else None,
        "stages_s": stages,
        "vad_end_error_s_median": round(statistics.median(vad_err), 3) if vad_err else None,
        "service_cpu_s": round(cpu.user + cpu.system, 2),
        "per_utterance": rows,
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = replay_parser(
        "latency", __doc__, default_n=6, n_help="6: about 40 s per model at real time",
        full_n=30, full_help="30 utterances (about 3 minutes per model)",
    )  # fmt: skip
    args, ts, checkpoint, source = replay_setup(p, argv)
    results, rows = [], []
    for model in models_of(args.models):
        logger.info("latency: %s, %d utterances replayed at real time (%.0f s)", model, ts.n_utterances, ts.duration_s)
        r = run_model(model, ts.wav, ts.truth_csv, checkpoint, ts.duration_s, settings=args.set)
        results.append(r)
        st = r["stages_s"]
        for stage in STAGES:
            rows.append({"model": model, "stage": stage, "p50 s": st[stage]["p50"], "p95 s": st[stage]["p95"],
                         "max s": st[stage]["max"], "n": st[stage]["n"]})  # fmt: skip
    table = markdown_table(rows)
    print(table)
    path = write_result(args.out, {
        "settings": {"utterances": ts.n_utterances, "audio_s": ts.duration_s, "checkpoint": source,
                     "service_settings": args.set,
                     "replay": "real time, service in its own process, one websocket client on 127.0.0.1"},
        "results": results,
        "table": table,
    })  # fmt: skip
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
