"""The page's downloads (web/export.js) format subtitles and tables exactly as `emostream export` does."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from stream.export import cues_from_events, to_csv, to_srt, to_vtt

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
NODE = shutil.which("node")
from tests.stream.test_export import make_events  # noqa: E402


@pytest.mark.skipif(NODE is None, reason="Node.js is not installed; the browser test covers export.js")
def test_page_exports_match_the_cli(tmp_path: Path) -> None:
    events = make_events("ep1") + make_events("ep2")
    path = tmp_path / "events.json"
    path.write_text(json.dumps([e.to_dict() for e in events]), encoding="utf-8")
    assert NODE is not None
    done = subprocess.run(
        [NODE, str(HERE / "export_check.mjs"), (ROOT / "web" / "export.js").as_uri(), str(path), "ep2"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    one = cues_from_events(events, stream="ep2")
    assert got["srt"] == to_srt(one)
    assert got["vtt"] == to_vtt(one)
    assert got["csv"] == to_csv(cues_from_events(events))
