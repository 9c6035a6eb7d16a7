"""The benchmarks' pure helpers: percentiles, summaries, tables, result files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.common import markdown_table, percentile, summarize, write_result


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=50),
    st.floats(0, 100),
)
def test_percentile_matches_numpy(values: list[float], q: float) -> None:
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)), rel=1e-9, abs=1e-6)


def test_percentile_edges() -> None:
    assert percentile([3.0], 99) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
    with pytest.raises(ValueError, match=r"\[0, 100\]"):
        percentile([1.0], 101)


def test_summarize() -> None:
    s = summarize([float(v) for v in range(1, 101)])
    assert s == {"n": 100, "mean": 50.5, "p50": 50.5, "p95": 95.05, "p99": 99.01, "max": 100.0}
    assert summarize([])["p50"] is None


def test_markdown_table_aligns_numbers_and_marks_missing() -> None:
    table = markdown_table([{"model": "base", "p50 s": 0.51234, "n": 12}, {"model": "tiny.en", "p50 s": None, "n": 3}])
    lines = table.splitlines()
    assert lines[0] == "| model | p50 s | n |"
    assert lines[1] == "|---|---:|---:|"
    assert lines[2] == "| base | 0.512 | 12 |"
    assert lines[3] == "| tiny.en | – | 3 |"
    assert markdown_table([]) == "(no rows)\n"


def test_write_result_adds_machine_info(tmp_path: Path) -> None:
    path = write_result("x", {"results": [1, 2]}, out_dir=tmp_path)
    body = json.loads(path.read_text())
    assert body["benchmark"] == "x"
    assert body["results"] == [1, 2]
    assert body["machine"]["cpu_count"] >= 1
    with pytest.raises(ValueError):
        write_result("nan", {"v": float("nan")}, out_dir=tmp_path)
