"""A few seconds of ``bench.soak``: the benchmark runs, and the server leaks nothing under it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import soak


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_short_soak_leaves_nothing_behind(tmp_path: Path) -> None:
    status = soak.main(
        ["--duration", "4", "--churn", "300", "--churn-workers", "8", "--floods", "2", "--sleepers", "20"]
        + ["--ping", "1", "--rate", "20", "--results-dir", str(tmp_path)]
    )
    result = json.loads((tmp_path / "soak.json").read_text(encoding="utf-8"))
    server = result["server"]
    assert status == 0, result["failures"]
    assert server["connections_left"] == 0 and server["subscribers_left"] == 0
    assert result["loads"]["churn"]["ok"] == 300 and result["loads"]["churn"]["failed"] == 0
    assert result["loads"]["garbage"]["failed"] == 0 and result["loads"]["resume"]["failed"] == 0
    assert result["probe"]["in_order"] and result["probe"]["pongs"] > 10
    assert result["probe"]["rtt_ms"]["p50"] < 100
