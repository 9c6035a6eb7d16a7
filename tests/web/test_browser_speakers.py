"""Speakers in the real dashboard: a timeline lane per speaker, the share per speaker, renaming in the page."""

from __future__ import annotations

from pathlib import Path

from stream.config import ServerConfig
from stream.events.bus import EventBus
from stream.events.eventlog import EventLog
from stream.events.hub import Hub
from stream.server import Server
from tests.web.chromium import ARTIFACTS, browser_marks, chromium_page
from tests.web.scripted import SCRIPT, Speaker
from tests.web.test_browser import hello

pytestmark = browser_marks(120)

WHO = ["S1", "S2", "S1", "S3", "S2", "S1"]


async def test_lanes_per_speaker_shares_and_renaming_in_the_page(tmp_path: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    hub = Hub(queue_events=1000)
    log = EventLog(tmp_path / "events")
    bus = EventBus([log.append, hub.publish])
    mic = Speaker(bus, "mic", seed=4)
    for (text, label), who in zip(SCRIPT[: len(WHO)], WHO, strict=True):
        mic.say(text, label, speaker=who)
    bus.emit_nowait("speaker", "mic", {"action": "merged", "speaker": "S3", "into": "S2", "utterance_id": "mic-4"})
    renames: list[tuple[str, str, str]] = []

    async def name_speaker(stream: str, speaker: str, name: str) -> None:  # as Pipeline.name_speaker does
        if speaker not in WHO:
            raise ValueError(f"stream {stream!r} has no speaker {speaker!r} (yet)")
        renames.append((stream, speaker, name))
        await bus.emit("speaker", stream, {"action": "named", "speaker": speaker, "name": name})

    problems: list[str] = []
    async with (
        Server(ServerConfig(port=0), hub, log, hello, name_speaker=name_speaker) as server,
        chromium_page() as page,
    ):
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        await page.goto(server.url)
        await page.wait_for_selector("#conn[data-state=live]", timeout=15000)
        await page.wait_for_function("() => document.querySelectorAll('#timeline rect.utt').length === 6")
        # S3 was merged into S2: two lanes, and S3's utterance sits in S2's.
        lanes = await page.eval_on_selector_all("#timeline g.lane", "els => els.map(e => e.dataset.speaker)")
        assert lanes == ["S1", "S2"]
        rects = await page.eval_on_selector_all("#timeline rect.utt", "els => els.map(e => e.dataset.speaker)")
        assert sorted(rects) == ["S1", "S1", "S1", "S2", "S2", "S2"]
        # One share row per speaker, each with its emotions.
        await page.wait_for_selector(".speakers:not([hidden]) .speaker-row")
        rows = await page.eval_on_selector_all(".speaker-row", "els => els.map(e => e.dataset.speaker)")
        assert sorted(rows) == ["S1", "S2"]
        s1_labels = await page.eval_on_selector_all(
            ".speaker-row[data-speaker=S1] .speaker-seg", "els => els.map(e => e.dataset.label)"
        )
        assert sorted(s1_labels) == sorted({SCRIPT[k][1] for k, w in enumerate(WHO) if w == "S1"})

        # Rename S2 in the page: the service broadcasts it, and every view shows the name.
        field = page.locator("input.speaker-name[data-speaker=S2]")
        await field.fill("Rachel")
        await field.press("Enter")
        await page.wait_for_function(
            "() => [...document.querySelectorAll('#timeline .lane-name')].some(e => e.textContent === 'Rachel')"
        )
        assert renames == [("mic", "S2", "Rachel")]
        feed_names = await page.eval_on_selector_all("#feed .feed-speaker", "els => els.map(e => e.textContent)")
        assert feed_names.count("Rachel") == 3 and feed_names.count("S1") == 3
        await page.screenshot(path=str(ARTIFACTS / "dashboard-speakers.png"), full_page=True)

        # A page opened later gets the name from the log.
        await page.reload()
        await page.wait_for_selector("#conn[data-state=live]", timeout=15000)
        await page.wait_for_function(
            "() => [...document.querySelectorAll('#timeline .lane-name')].some(e => e.textContent === 'Rachel')"
        )
        assert await page.input_value("input.speaker-name[data-speaker=S2]") == "Rachel"
    log.close()
    assert not problems, problems
