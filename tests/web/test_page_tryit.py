"""The "Try it" card in a real headless Chromium against the real service: type, upload, speak.

Typing and uploading run the service with scripted models (what is checked is the page and the HTTP
API); speaking runs the real pipeline (packaged tiny.en + the default checkpoint) on espeak-ng lines
that Chromium plays as its microphone (``--use-file-for-fake-audio-capture``). Screenshots of each
state go to test-artifacts/.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stream.config import Config, load_config
from stream.events.eventlog import read_events
from tests.helpers import ScriptedPredictor, ScriptedTranscriber, make_dialogue, requires_espeak, write_wav
from tests.helpers.service import running_service
from tests.web.chromium import ARTIFACTS, browser_marks, chromium_page

ROOT = Path(__file__).resolve().parents[2]
CHECKPOINT = ROOT / "models" / "emostream-default.pt"

playwright_api = pytest.importorskip("playwright.async_api", reason="the playwright package is not installed")
pytestmark = browser_marks(180)


def mic_args(*, fake_mic: Path | None = None, deny_mic: bool = False, no_device: bool = False) -> list[str]:
    """Chromium flags for the microphone: a file played as one, a refused permission, or no device."""
    args = ["--autoplay-policy=no-user-gesture-required"]
    if fake_mic is not None:
        args += [
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={fake_mic}",
        ]
    elif deny_mic:
        args += ["--use-fake-device-for-media-stream", "--deny-permission-prompts"]
    elif no_device:
        args += ["--use-fake-ui-for-media-stream"]  # permission granted, but this machine has no microphone
    return args


def scripted_config(tmp_path: Path, **audio: Any) -> Config:
    cfg = load_config(None, **{"log.event_log_dir": str(tmp_path / "events"), "server.port": 0})
    server = dataclasses.replace(cfg.server, upload_dir=str(tmp_path / "uploads"))
    return dataclasses.replace(cfg, server=server, audio=dataclasses.replace(cfg.audio, **audio))


def watch(page: Any) -> list[str]:
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    return problems


async def test_type_a_sentence_and_upload_a_file(tmp_path: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    idle = write_wav(tmp_path / "idle.wav", np.zeros(16000, dtype=np.float32))
    clip = write_wav(tmp_path / "party.wav", make_dialogue(["Hello there.", "I am so happy today."]).audio)
    models = (
        ScriptedTranscriber(default="I am so happy"),
        ScriptedPredictor(keywords={"happy": "joy", "awful": "anger"}),
    )
    cfg = scripted_config(tmp_path, replay_fast=True)
    async with running_service(cfg, [str(idle)], models) as server, chromium_page(mic_args()) as page:
        problems = watch(page)
        await page.goto(server.url)
        await page.wait_for_selector("#conn[data-state=live]", timeout=15000)
        await page.screenshot(path=str(ARTIFACTS / "tryit-start.png"))

        # Type a sentence.
        await page.fill("#type-text", "This is awful, I hate it")
        await page.click("#type-go")
        await page.wait_for_selector("#type-result[data-state=done]", timeout=15000)
        assert await page.get_attribute("#type-result", "data-label") == "anger"
        assert "70%" in (await page.text_content("#type-result") or "")
        await page.screenshot(path=str(ARTIFACTS / "tryit-typed.png"))
        # An empty sentence is refused by the page; an over-long one by the server, said in words.
        await page.evaluate("() => { document.getElementById('type-text').value = ' '.repeat(3) + 'x'.repeat(5000); }")
        await page.click("#type-go")
        await page.wait_for_selector("#type-result[data-state=error]", timeout=15000)
        assert "exceeds" in (await page.text_content("#type-result") or "")

        # Upload a file: a new stream, selected, with its emotions.
        await page.set_input_files("#file-pick", str(clip))
        await page.wait_for_function(
            "() => (document.getElementById('upload-status').textContent || '').includes('playing as stream party')",
            timeout=15000,
        )
        await page.wait_for_selector(".stream-tab[data-stream=party][aria-pressed=true]", timeout=15000)
        await page.wait_for_function(
            "() => document.querySelectorAll('#feed .feed-item[data-label=joy]').length >= 2", timeout=20000
        )
        await page.wait_for_selector("#ended:not([hidden])", timeout=20000)
        await page.screenshot(path=str(ARTIFACTS / "tryit-uploaded.png"), full_page=True)

        # Its subtitles download from the page, timed like `emostream export`.
        async with page.expect_download() as info:
            await page.click("#dl-srt")
        srt = (await (await info.value).path()).read_text(encoding="utf-8")
        assert srt.startswith("1\n00:00:") and srt.count("(joy 70%)") == 2
        # A file that is not audio: the server's reason is shown.
        notes = tmp_path / "notes.wav"
        notes.write_bytes(b"not audio at all " * 64)
        await page.set_input_files("#file-pick", str(notes))
        await page.wait_for_selector("#upload-status[data-kind=error]", timeout=15000)
        assert "not a media file" in (await page.text_content("#upload-status") or "")
        await page.screenshot(path=str(ARTIFACTS / "tryit-upload-refused.png"))
    assert not [p for p in problems if "415" not in p and "413" not in p], problems


async def test_no_microphone_is_said(tmp_path: Path) -> None:
    await check_mic_error(tmp_path, mic_args(no_device=True), "no microphone found", "tryit-no-mic.png")


async def test_microphone_permission_denied_is_said(tmp_path: Path) -> None:
    page = await check_mic_error(tmp_path, mic_args(deny_mic=True), "permission denied", "tryit-mic-denied.png")
    assert page["aria-pressed"] == "false"


async def check_mic_error(tmp_path: Path, args: list[str], expected: str, screenshot: str) -> dict[str, Any]:
    """Click the microphone button in a page whose Chromium has ``args``: the status says ``expected``."""
    idle = write_wav(tmp_path / "idle.wav", np.zeros(1600, dtype=np.float32))
    cfg = scripted_config(tmp_path, replay_fast=True)
    models = ScriptedTranscriber(), ScriptedPredictor()
    async with running_service(cfg, [str(idle)], models) as server, chromium_page(args) as page:
        await page.goto(server.url)
        await page.wait_for_selector("#conn[data-state=live]", timeout=15000)
        await page.click("#mic-btn")
        await page.wait_for_selector("#mic-status[data-kind=error]", timeout=15000)
        status = await page.text_content("#mic-status") or ""
        assert expected in status, status
        pressed = await page.get_attribute("#mic-btn", "aria-pressed")
        await page.screenshot(path=str(ARTIFACTS / screenshot))
    return {"status": status, "aria-pressed": pressed}


async def test_the_page_passes_its_token_once(tmp_path: Path) -> None:
    """Opened as /?token=T: the page connects, calls the API, survives a reload; without it, 401."""
    token = "page-token-0123456789abcdef"
    idle = write_wav(tmp_path / "idle.wav", np.zeros(1600, dtype=np.float32))
    cfg = scripted_config(tmp_path, replay_fast=True)
    cfg = dataclasses.replace(cfg, server=dataclasses.replace(cfg.server, token=token))
    models = ScriptedTranscriber(), ScriptedPredictor(keywords={"happy": "joy"})
    async with running_service(cfg, [str(idle)], models) as server, chromium_page(mic_args()) as page:
        problems = watch(page)
        response = await page.goto(server.url)
        assert response is not None and response.status == 401
        await page.goto(f"{server.url}?token={token}")
        await page.wait_for_selector("#conn[data-state=live]", timeout=15000)
        assert "token" not in page.url  # taken out of the address bar (and so out of history)
        await page.reload()
        await page.wait_for_selector("#conn[data-state=live]", timeout=15000)
        await page.fill("#type-text", "I am so happy")
        await page.click("#type-go")
        await page.wait_for_selector("#type-result[data-state=done][data-label=joy]", timeout=15000)
    assert not [p for p in problems if "401" not in p], problems


DEMO_LINES = (
    "I can't believe we actually won the award!",
    "This is completely unacceptable, I told you twice.",
    "I'm so sorry, I really miss her.",
)


@pytest.mark.slow
@requires_espeak
@pytest.mark.skipif(not CHECKPOINT.is_file(), reason=f"no classifier checkpoint at {CHECKPOINT} (train one)")
async def test_speak_into_the_page(tmp_path: Path) -> None:
    """espeak-ng lines as Chromium's microphone -> AudioWorklet -> /ingest -> the real pipeline -> the page."""
    ARTIFACTS.mkdir(exist_ok=True)
    talk = make_dialogue(list(DEMO_LINES), lead_s=1.0, gap_s=1.2, tail_s=1.5)
    # 48 kHz, as a sound card records: the server resamples to 16 kHz.
    samples = np.interp(np.arange(talk.audio.size * 3) / 3, np.arange(talk.audio.size), talk.audio)
    # Chromium loops the file; silence after the lines keeps a second round from starting before we stop.
    mic_wav = write_wav(tmp_path / "mic.wav", np.concatenate([samples, np.zeros(48000 * 30)]).astype(np.float32), 48000)
    idle = write_wav(tmp_path / "idle.wav", np.zeros(1600, dtype=np.float32))
    cfg = load_config(
        None,
        **{
            "log.event_log_dir": str(tmp_path / "events"),
            "server.port": 0,
            "asr.model": "tiny.en",
            "classifier.checkpoint": str(CHECKPOINT),
        },
    )
    async with running_service(cfg, [str(idle)]) as server:
        watch_sub = server.hub.subscribe()
        async with chromium_page(mic_args(fake_mic=mic_wav)) as page:
            problems = watch(page)
            await page.goto(server.url)
            await page.wait_for_selector("#conn[data-state=live]", timeout=15000)
            await page.click("#mic-btn")
            await page.wait_for_selector("#mic-btn[data-state=live]", timeout=15000)
            stream = await page.evaluate("() => window.emostream.tryIt.mic.streamId")
            assert stream and stream.startswith("browser-mic")
            # The raw signal, as asked: no gain control, noise suppression or echo cancellation.
            settings = await page.evaluate("() => window.emostream.tryIt.mic.media.getAudioTracks()[0].getSettings()")
            assert settings.get("autoGainControl") is False, settings
            assert settings.get("noiseSuppression") is False and settings.get("echoCancellation") is False, settings
            await page.wait_for_function(
                "() => parseFloat(document.getElementById('mic-level').style.width) > 5", timeout=10000
            )
            await page.screenshot(path=str(ARTIFACTS / "tryit-speaking.png"))
            # One emotion per line, or per sentence where the end-of-turn check cuts a line at a sentence
            # end Whisper reads at a pause inside it: until the last line's end has been labelled.
            emotions: list[dict[str, Any]] = []
            last_end = talk.spans_s()[-1][1]
            async with asyncio.timeout(90):
                while not (emotions and emotions[-1]["end_s"] >= last_end - 0.3):
                    event = (await watch_sub.get()).event
                    if event.stream == stream and event.type == "emotion":
                        emotions.append(dict(event.data))
            await page.wait_for_function(
                "n => document.querySelectorAll('#feed .feed-item').length >= n", arg=len(emotions), timeout=15000
            )
            await page.screenshot(path=str(ARTIFACTS / "tryit-spoken.png"), full_page=True)
            await page.click("#mic-btn")  # stop: the stream ends cleanly
            async with asyncio.timeout(20):
                while not ((e := (await watch_sub.get()).event).stream == stream and e.type == "end"):
                    pass
            assert e.data["reason"] == "eof"
            await page.screenshot(path=str(ARTIFACTS / "tryit-stopped.png"))
        log_path = server.event_log.path
    words = " ".join(str(e["text"]).lower() for e in emotions)
    assert sum(w in words for w in ("award", "unacceptable", "sorry", "miss")) >= 2, words
    for e in emotions:  # the same utterance times as the spoken lines, within the VAD's rolls
        assert e["label"] and e["modalities"] and e["latency_ms"] < 10000
    spans = talk.spans_s()
    assert len(DEMO_LINES) <= len(emotions) <= 2 * len(DEMO_LINES), emotions
    for a, b in spans:  # each line covered by its own utterances, none reaching into another line
        mine = [e for e in emotions if a - 0.3 <= (e["start_s"] + e["end_s"]) / 2 <= b + 0.3]
        assert mine and mine[0]["start_s"] <= a + 0.3 and mine[-1]["end_s"] >= b - 0.3, (mine, a, b)
        assert all(a - 0.5 <= e["start_s"] and e["end_s"] <= b + 0.5 for e in mine), (mine, a, b)
    logged = [ev for ev in read_events(log_path) if ev.stream == stream]
    assert [ev.type for ev in logged].count("emotion") >= len(DEMO_LINES) and logged[-1].type == "end"
    assert not problems, problems
    print(json.dumps([{k: e[k] for k in ("text", "label", "latency_ms")} for e in emotions]))
