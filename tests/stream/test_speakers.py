"""The speaker stage with a scripted embedder: in the pipeline, in events, and named over the websocket."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from websockets.asyncio.client import connect

from stream.config import ServerConfig
from stream.events.bus import EventBus
from stream.events.eventlog import EventLog
from stream.events.hub import Hub
from stream.pipeline import Pipeline
from stream.protocol import Event
from stream.records import Utterance
from stream.server import Server
from stream.sources import ReplaySource
from stream.stages.speaker_clustering import ClusteringParams
from stream.stages.speakers import SpeakerStage
from tests.helpers import ScriptedPredictor, ScriptedTranscriber, make_dialogue, write_wav

RNG = np.random.default_rng(0)
VOICE_A, VOICE_B = np.abs(RNG.normal(size=(2, 32))) + RNG.normal(size=(2, 32)) * 2


class ScriptedEmbedder:
    """Returns the scripted embeddings in call order (``None``: raise)."""

    model_id = "scripted-embedder"

    def __init__(self, script: Sequence[np.ndarray | None]) -> None:
        self.script = list(script)

    def embed(self, wav: np.ndarray) -> np.ndarray:
        emb = self.script.pop(0)
        if emb is None:
            raise RuntimeError("embedder exploded")
        return emb + RNG.normal(size=emb.size) * 0.05


def _utt(k: int, seconds: float = 1.0) -> Utterance:
    audio = np.zeros(int(seconds * 16000), np.float32)
    return Utterance("s", f"s-{k}", k, k + seconds, k + seconds, audio, 0.0)


async def test_stage_labels_in_order_and_survives_failures() -> None:
    stage = SpeakerStage(ScriptedEmbedder([VOICE_A, VOICE_B, None, VOICE_A]), ClusteringParams())
    utts = [_utt(k) for k in range(4)] + [_utt(9, seconds=0.1)]
    for u in utts:
        stage.start(u)
    results = [await stage.result(u) for u in utts]
    assert [r.speaker for r in results] == ["S1", "S2", None, "S1", None]  # a failure, then too short
    assert results[0].new and not results[3].new
    assert stage.failures == 1
    with pytest.raises(ValueError, match="no speaker 'S7'"):
        stage.rename("s", "S7", "Ross")
    stage.rename("s", "S2", "Rachel")
    assert stage.names() == {"s": {"S2": "Rachel"}}
    stage.close()


async def test_enrolled_speakers_are_named_and_recognised() -> None:
    stage = SpeakerStage(ScriptedEmbedder([VOICE_B, VOICE_A, VOICE_B]), ClusteringParams())
    stage.enrol("Ross", np.zeros(16000, np.float32))  # embeds as VOICE_B
    assert stage.enrolled("s") == {"S1": "Ross"}
    got = []
    for k in range(2):
        stage.start(u := _utt(k))
        got.append((await stage.result(u)).speaker)
    assert got == ["S2", "S1"]
    stage.close()


def _speaker_pipeline(
    tmp_path: Path, lines: list[str], voices: list[np.ndarray], params: ClusteringParams, events: list[Event]
) -> Pipeline:
    """Stream "a": ``lines`` spoken 1 s apart, scripted models, a speaker stage embedding them as ``voices``."""
    talk = make_dialogue(lines, gap_s=1.0)
    return Pipeline(
        [ReplaySource("a", write_wav(tmp_path / "a.wav", talk.audio), fast=True)],
        EventBus([events.append]),
        transcriber=ScriptedTranscriber(default="words"),  # type: ignore[arg-type]
        predictor=ScriptedPredictor(),  # type: ignore[arg-type]
        speakers=SpeakerStage(ScriptedEmbedder(voices), params),
    )


async def test_transcript_and_emotion_carry_the_speaker_and_names_go_out(tmp_path: Path) -> None:
    events: list[Event] = []
    lines = ["Hello there, how are you?", "I am fine, thank you.", "Good to hear that."]
    pipeline = _speaker_pipeline(tmp_path, lines, [VOICE_A, VOICE_B, VOICE_A], ClusteringParams(), events)
    await pipeline.run()
    for kind in ("transcript", "emotion"):
        assert [e.data["speaker"] for e in events if e.type == kind] == ["S1", "S2", "S1"]
    await pipeline.name_speaker("a", "S2", "Rachel")
    assert events[-1].type == "speaker" and events[-1].data == {"action": "named", "speaker": "S2", "name": "Rachel"}
    with pytest.raises(ValueError, match="no stream"):
        await pipeline.name_speaker("zz", "S1", "x")
    with pytest.raises(ValueError, match="no speaker 'S5'"):
        await pipeline.name_speaker("a", "S5", "x")


async def test_corrections_go_out_as_speaker_events_and_sent_labels_stay(tmp_path: Path) -> None:
    """A loose warm-up labels the first B as S1; later evidence re-assigns it: a `corrected` event."""
    lines = ["Hello there, how are you?", "I am fine, thank you.", "Good to hear that.", "And you?", "Yes.", "Fine."]
    events: list[Event] = []
    params = ClusteringParams(warmup=3, warmup_threshold=-0.9, correct_after=2)
    pipeline = _speaker_pipeline(tmp_path, lines, [VOICE_A, VOICE_B] * 3, params, events)
    await pipeline.run()
    sent = [(e.data["utterance_id"], e.data["speaker"]) for e in events if e.type == "transcript"]
    assert len(sent) == 6 and sent[1][1] == "S1"  # what was sent stays as sent
    fixes = [e.data for e in events if e.type == "speaker" and e.data["action"] == "corrected"]
    assert fixes and fixes[0]["utterance_id"] == sent[1][0]
    assert fixes[0]["speaker"] == "S1" and fixes[0]["into"] == sent[3][1] != "S1"
    first_fix = next(i for i, e in enumerate(events) if e.type == "speaker")
    assert any(e.type == "transcript" and e.data["utterance_id"] == sent[1][0] for e in events[:first_fix])


async def test_name_speaker_over_the_websocket_is_broadcast_logged_and_replayed(tmp_path: Path) -> None:
    hub = Hub(queue_events=100)
    with EventLog(tmp_path) as log:
        bus = EventBus([log.append, hub.publish])
        known = {("mic", "S1")}

        async def name_speaker(stream: str, speaker: str, name: str) -> None:
            if (stream, speaker) not in known:
                raise ValueError(f"stream {stream!r} has no speaker {speaker!r} (yet)")
            await bus.emit("speaker", stream, {"action": "named", "speaker": speaker, "name": name})

        async with Server(ServerConfig(port=0), hub, log, dict, name_speaker=name_speaker) as server:
            async with connect(server.ws_url) as namer, connect(server.ws_url) as watcher:
                for ws in (namer, watcher):
                    json.loads(await ws.recv())  # hello
                await namer.send(json.dumps({"type": "name_speaker", "stream": "mic", "speaker": "S1", "name": "Ross"}))
                await namer.send(json.dumps({"type": "name_speaker", "stream": "mic", "speaker": "S4", "name": "Joey"}))
                # The reply to the refused one is direct; the accepted one comes as the broadcast event.
                got = {e["type"]: e for e in [json.loads(await namer.recv()) for _ in range(2)]}
                assert got["speaker"]["data"]["name"] == "Ross"
                assert got["error"]["data"]["code"] == "bad_request" and "S4" in got["error"]["data"]["message"]
                seen = json.loads(await asyncio.wait_for(watcher.recv(), 5))
                assert seen["data"] == {"action": "named", "speaker": "S1", "name": "Ross"}
            async with connect(server.ws_url) as late:
                json.loads(await late.recv())
                await late.send(json.dumps({"type": "resume", "after_seq": -1}))
                replayed = json.loads(await asyncio.wait_for(late.recv(), 5))
                assert replayed["type"] == "speaker" and replayed["data"]["name"] == "Ross"


async def test_a_server_without_speakers_refuses_names(tmp_path: Path) -> None:
    hub = Hub(queue_events=10)
    with EventLog(tmp_path) as log:
        async with Server(ServerConfig(port=0), hub, log, dict) as server, connect(server.ws_url) as ws:
            await ws.recv()
            await ws.send(json.dumps({"type": "name_speaker", "stream": "mic", "speaker": "S1", "name": "Ross"}))
            reply = json.loads(await ws.recv())
            assert reply["type"] == "error" and "labels no speakers" in reply["data"]["message"]


def test_enrolment_specs_are_checked(tmp_path: Path) -> None:
    from stream.models import parse_enrolment

    clip = write_wav(tmp_path / "ross.wav", np.zeros(32000, np.float32))
    assert parse_enrolment([f" Ross  Geller ={clip}"]) == [("Ross Geller", clip)]
    for bad, why in [
        ("Ross", "expected NAME=CLIP"),
        (f"={clip}", "expected NAME=CLIP"),
        (f"Ross={tmp_path / 'nope.wav'}", "clip not found"),
        (f"{'x' * 65}={clip}", "longer than 64"),
    ]:
        with pytest.raises(ValueError, match=why):
            parse_enrolment([bad])
    with pytest.raises(ValueError, match="enrolled twice"):
        parse_enrolment([f"Ross={clip}", f"Ross={clip}"])
