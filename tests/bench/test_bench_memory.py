"""bench.memory measures the peak RSS as the kernel accounts it (wait4's ru_maxrss), not a sampled guess."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bench.memory import peak_rss


def test_a_short_lived_peak_between_polls_is_still_counted(tmp_path: Path) -> None:
    # 300 MiB touched for a moment, then freed: polling every 50 ms may miss it, ru_maxrss cannot.
    code = "import numpy as np, time; a = np.ones(300 * 2**20 // 8); del a; time.sleep(0.3)"
    r = peak_rss([sys.executable, "-c", code], timeout_s=60, log=tmp_path / "log")
    assert 300 <= r["peak_rss_mib"] < 600, r
    assert r["peak_rss_gb"] == pytest.approx(r["peak_rss_mib"] * 2**20 / 1e9, abs=0.002)


def test_a_failing_command_raises_with_its_output(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="exit status 3.*boom"):
        peak_rss([sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"], timeout_s=60, log=tmp_path / "log")
