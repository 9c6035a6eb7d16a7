"""The dashboard in a real headless Chromium against a real Server fed by scripted events.

Checks that the page connects, shows utterances with the right labels and the colours from
``hello``, survives a server restart by reconnecting and resuming (same run: no gap, no duplicate;
a new run: starts over without losing the old one), and saves screenshots under test-artifacts/.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from stream.config import ServerConfig
from stream.events.bus import EventBus
from stream.events.eventlog import EventLog
from stream.events.hub import Hub
from stream.protocol import LABEL_COLORS, LABELS
from stream.server import Server
from tests.helpers.service import running_service
from tests.web.chromium import ARTIFACTS, browser_marks, chromium_page
from tests.web.scripted import SCRIPT, Speaker

GOLDEN = Path(__file__).with_name("protocol_golden.json")

playwright_api = pytest.importorskip("playwright.async_api", reason="the playwright package is not installed")
pytestmark = browser_marks(120)

# A colour that is not the default, to prove the page takes colours from hello.
JOY_FROM_HELLO = "#00c2a8"


def hello() -> dict[str, Any]:
    return {
        "labels": list(LABELS),
        "colors": {**LABEL_COLORS, "joy": JOY_FROM_HELLO},
        "streams": [
            {"id": "mic", "kind": "mic", "name": "default input"},
            {"id": "ep1", "kind": "file", "name": "ep1.mp4"},
        ],
        "model_ids": {"asr": "tiny.en", "classifier": "test"},
    }


async def feed_labels(page: Any) -> list[str]:
    return await page.eval_on_selector_all("#feed .feed-item", "els => els.map(e => e.dataset.label)")


async def wait_for_feed(page: Any, count: int) -> None:
    await page.wait_for_function(
        "n => document.querySelectorAll('#feed .feed-item').length >= n", arg=count, timeout=15000
    )


async def test_dashboard_connects_shows_labels_and_resumes_after_restart(tmp_path: Path) -> None:
    script, speaker = SCRIPT, Speaker
    ARTIFACTS.mkdir(exist_ok=True)
    hub = Hub(queue_events=1000)
    log = EventLog(tmp_path / "events")
    bus = EventBus([log.append, hub.publish])
    mic, ep1 = speaker(bus, "mic", seed=1), speaker(bus, "ep1", seed=2)
    mic.say_all(script[:4])
    ep1.say_all(script[6:8])
    problems: list[str] = []

    async with chromium_page() as page:
        page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))

        server = Server(ServerConfig(port=0), hub, log, hello)
        await server.__aenter__()
        port = server.port
        await page.goto(server.url)
        await page.wait_for_selector("#conn[data-state=live]", timeout=15000)
        await wait_for_feed(page, 4)

        # Utterances published before the page opened came from the log, with the right labels.
        assert await feed_labels(page) == [label for _, label in reversed(script[:4])]
        mic.say_all(script[4:6])  # live
        await wait_for_feed(page, 6)
        assert await feed_labels(page) == [label for _, label in reversed(script[:6])]
        assert await page.get_attribute("#now-label", "data-label") == script[5][1]
        assert script[5][0] in (await page.text_content("#now-text") or "")
        # Labels (order) and colours are hello's.
        assert await page.eval_on_selector_all("#bars .bar-row", "els => els.map(e => e.dataset.label)") == list(LABELS)
        joy = await page.eval_on_selector("#timeline rect.utt[data-label=joy]", "e => e.getAttribute('fill')")
        assert joy == JOY_FROM_HELLO
        assert await page.locator("#timeline rect.utt").count() == 6
        # Two streams: a picker; ep1 shows its own utterances.
        assert await page.locator(".stream-tab").count() == 2
        await page.click(".stream-tab[data-stream=ep1]")
        await page.wait_for_function("() => document.querySelectorAll('#feed .feed-item').length === 2")
        assert await feed_labels(page) == [label for _, label in reversed(script[6:8])]
        await page.click(".stream-tab[data-stream=mic]")
        await wait_for_feed(page, 6)

        # Hover an utterance: the tooltip shows its text and scores.
        await page.hover("#timeline rect.utt[data-label=anger]")
        await page.wait_for_selector("#tip:not([hidden])")
        tip = await page.text_content("#tip") or ""
        assert script[3][0] in tip and "anger" in tip and "%" in tip
        await page.screenshot(path=str(ARTIFACTS / "dashboard-hover.png"))
        await page.mouse.move(5, 5)

        # Restart the server (same run, same log): the page reconnects and resumes from its last seq.
        await server.__aexit__(None, None, None)
        await page.wait_for_selector("#conn[data-state=reconnecting]", timeout=15000)
        mic.say_all(script[6:9])  # said while the page was disconnected
        server = Server(ServerConfig(port=port), hub, log, hello)
        await server.__aenter__()
        await page.wait_for_selector("#conn[data-state=live]", timeout=20000)
        await wait_for_feed(page, 9)
        mic.say(*script[9])
        await wait_for_feed(page, 10)
        assert await feed_labels(page) == [label for _, label in reversed(script[:10])]
        seqs = await page.evaluate("() => window.emostream.store.events.map(e => e.seq)")
        assert sorted(seqs) == list(range(bus.last_seq + 1))  # every logged event once: no gap, no duplicate
        await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

        # Downloads carry the whole session.
        async with page.expect_download() as dl_info:
            await page.click("#dl-jsonl")
        jsonl = (await (await dl_info.value).path()).read_text(encoding="utf-8").splitlines()
        assert [json.loads(line)["seq"] for line in jsonl] == list(range(bus.last_seq + 1))
        async with page.expect_download() as dl_info:
            await page.click("#dl-csv")
        csv_rows = (await (await dl_info.value).path()).read_text(encoding="utf-8").splitlines()
        assert csv_rows[0].startswith("run_id,seq,ts,time_utc,type,stream")
        assert len(csv_rows) == bus.last_seq + 2

        # A restarted service is a new run (new log, seq from 0): the page starts that run over.
        await server.__aexit__(None, None, None)
        first_run_events = bus.last_seq + 1
        log2 = EventLog(tmp_path / "events")
        hub2 = Hub(queue_events=1000)
        bus2 = EventBus([log2.append, hub2.publish])
        speaker(bus2, "mic", seed=3).say(*script[1])
        server = Server(ServerConfig(port=port), hub2, log2, hello)
        await server.__aenter__()
        try:
            # Wait for what the page *shows* (drawn at the next animation frame), not for its store: reading
            # the page right after the store filled up once read the frame before (the old run's label).
            await page.wait_for_function(
                "([r, n]) => document.body.dataset.run === r && document.body.dataset.drawnEvents === String(n)",
                arg=[log2.run_id, first_run_events + 4],
                timeout=20000,
            )
            assert await page.get_attribute("#now-label", "data-label") == script[1][1]
            # the new run's words, not the last run's transcript (its seq was higher) shown as in progress
            assert script[1][0] in (await page.text_content("#now-text") or "")
            assert "stale" not in (await page.get_attribute("#now-label", "class") or "")
            # the share and timeline show the new run's utterance
            assert await page.locator("#timeline rect.utt").count() == 1
        finally:
            await server.__aexit__(None, None, None)
            log.close()
            log2.close()
    assert not problems, problems


async def test_page_protocol_module_matches_the_golden_file(tmp_path: Path) -> None:
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    hub = Hub(queue_events=10)
    with EventLog(tmp_path) as log:
        async with Server(ServerConfig(port=0), hub, log, hello) as server, chromium_page() as page:
            await page.goto(server.url)
            got = await page.evaluate(
                """async () => {
                    const p = await import('/protocol.js');
                    return {version: p.PROTOCOL_VERSION, event_types: p.EVENT_TYPES, client_types: p.CLIENT_TYPES,
                            error_codes: p.ERROR_CODES, service_stream: p.SERVICE_STREAM,
                            connection_stream: p.CONNECTION_STREAM, max_stream_filter: p.MAX_STREAM_FILTER,
                            max_stream_id_chars: p.MAX_STREAM_ID_CHARS, envelope_keys: p.ENVELOPE_KEYS};
                }"""
            )
    assert got == golden["constants"]
    await asyncio.sleep(0)


ROOT = Path(__file__).resolve().parents[2]
CHECKPOINT = ROOT / "models" / "emostream-default.pt"
DEMO = ROOT / "stream" / "assets" / "demo.flac"


@pytest.mark.slow
@pytest.mark.skipif(not CHECKPOINT.is_file(), reason=f"no classifier checkpoint at {CHECKPOINT} (train one)")
@pytest.mark.skipif(not DEMO.is_file(), reason=f"no demo recording at {DEMO}")
# Loading Whisper and the classifier took 150 s with the 2 cores shared by 20 busy processes (10 s when
# quiet), then the demo plays 44 s at real time: the module's 120 s limit is for the scripted tests.
@pytest.mark.timeout(480)
async def test_dashboard_follows_a_real_replay(tmp_path: Path) -> None:
    """The real service (packaged tiny.en + the default checkpoint) replays the demo; the page shows
    every emotion event the service logged, with the same labels, in order."""
    from stream.config import load_config
    from stream.events.eventlog import read_events

    overrides: dict[str, Any] = {
        "server.port": 0,
        "log.event_log_dir": str(tmp_path / "events"),
        "asr.model": "tiny.en",
        "audio.replay_speed": 3.0,
        "classifier.checkpoint": str(CHECKPOINT),
    }
    config = load_config(None, **overrides)
    async with running_service(config, [str(DEMO)], start_timeout_s=300) as server:
        watch = server.hub.subscribe()
        async with chromium_page() as page:
            await page.goto(server.url)
            await page.wait_for_selector("#conn[data-state=live]", timeout=15000)
            log_path = server.event_log.path
            async with asyncio.timeout(150):
                while (await watch.get()).event.type != "end":
                    pass
            labels = [e.data["label"] for e in read_events(log_path) if e.type == "emotion"]
            # One per demo line or per sentence (the end-of-turn check); tests/stream/test_demo.py checks them.
            assert 7 <= len(labels) <= 21, labels
            await wait_for_feed(page, len(labels))
            assert await feed_labels(page) == labels[::-1]
            await page.wait_for_selector("#ended:not([hidden])")
            await page.screenshot(path=str(ARTIFACTS / "dashboard-replay.png"), full_page=True)
