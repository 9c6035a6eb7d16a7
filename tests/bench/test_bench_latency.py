"""The latency breakdown from events, and a tiny real fan-out run on loopback."""

from __future__ import annotations

from typing import Any

import pytest

from bench.latency import breakdown
from stream.evaluation import Utterance


def _ev(kind: str, ts: float, **data: Any) -> dict[str, Any]:
    return {"v": 2, "type": kind, "seq": 0, "stream": "s", "ts": ts, "data": data}


def test_breakdown_splits_the_stages_and_recovers_the_truth_timeline() -> None:
    t0 = 1000.0  # wall time at which the replay started
    post_roll = 0.21
    received = []
    truth = []
    for k, (start, speech_end) in enumerate([(1.0, 2.5), (4.0, 6.0)]):
        uid = f"s-{k}"
        end_s = speech_end + post_roll
        heard = t0 + speech_end  # the last speech sample is played
        speech_ev = heard + 0.55
        text_ts = speech_ev + 0.30  # Whisper took 0.40 s, 0.10 s of it before the end (early start)
        emo_ts = text_ts + 0.10
        received += [
            (heard - 1.0, _ev("speech", heard - 1.0, state="start", utterance_id=uid, t_s=start)),
            (speech_ev + 0.001, _ev("speech", speech_ev, state="end", utterance_id=uid, start_s=start, end_s=end_s,
                                   forced=False)),
            (text_ts + 0.001, _ev("transcript", text_ts, utterance_id=uid, asr_ms=400.0, text="hi")),
            (emo_ts + 0.003, _ev("emotion", emo_ts, utterance_id=uid, start_s=start, end_s=end_s,
                                 latency_ms=(emo_ts - heard) * 1000, label="joy")),
        ]  # fmt: skip
        truth.append(Utterance(start + 0.3, speech_end - 0.05, "hi", "joy"))
    received.append((t0 + 9, _ev("stats", t0 + 9)))  # events without an utterance are ignored
    rows = breakdown(received, truth, post_roll_s=post_roll)
    assert [r["utterance_id"] for r in rows] == ["s-0", "s-1"]
    for r in rows:
        assert r["vad_tail"] == pytest.approx(0.55)
        assert r["asr"] == pytest.approx(0.40)
        assert r["after_end"] == pytest.approx(0.30)
        assert r["features_classifier"] == pytest.approx(0.10)
        assert r["delivery"] == pytest.approx(0.003)
        assert r["total"] == pytest.approx(0.953)
        assert r["total_vs_truth"] == pytest.approx(0.953 + 0.05)  # the truth ended 50 ms before the VAD's end
        assert r["vad_end_error"] == pytest.approx(0.05)


def test_breakdown_skips_utterances_without_an_emotion() -> None:
    received = [(1.0, _ev("speech", 1.0, state="end", utterance_id="x", start_s=0.0, end_s=1.0, forced=True))]
    assert breakdown(received, [], post_roll_s=0.2) == []


def test_fanout_smoke_on_loopback() -> None:
    from bench.fanout import run_size

    r = run_size(3, rate=20.0, duration_s=1.0)
    assert r["error"] is None
    assert r["connected"] == 3
    assert r["events_published"] >= 15
    assert r["delivered_fraction"] == 1.0
    assert 0 <= r["delivery_ms"]["p50"] < 1000


def test_config_text_is_a_valid_service_config(tmp_path: Any) -> None:
    from bench.latency import config_text
    from stream.config import load_config

    path = tmp_path / "c.toml"
    path.write_text(config_text(8123, str(tmp_path / "log dir"), ["vad.end_silence_ms=300", 'asr.language="en"']))
    cfg = load_config(path)
    assert (cfg.server.port, cfg.server.host, cfg.vad.end_silence_ms, cfg.asr.language) == (
        8123,
        "127.0.0.1",
        300,
        "en",
    )
    assert cfg.log.event_log_dir == str(tmp_path / "log dir")
    with pytest.raises(ValueError, match="section.key=value"):
        config_text(1, "x", ["end_silence_ms"])
