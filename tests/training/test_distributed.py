"""``emostream-train`` under ``torchrun``: 2 CPU processes (gloo) match a single-process run.

Same tiny generated MELD set, same seed, same global batches, dropout off (ours by config, the
frozen text encoder's own by ``ddp_entry``: dropout masks are drawn per process share, the one thing
data parallelism cannot reproduce). The loss curve, the weights and the test metrics of the 2-process
run must then equal the single-process run's up to floating-point summation order.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.training.meld_fakes import make_fake_meld, tiny_config

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
WORDS = ("furious", "delighted", "terrified")
LABELS = (0, 3, 2)


def _row(i: int, rng: np.random.Generator) -> tuple[int, str, float]:
    k = int(rng.integers(3))
    return LABELS[k], f"honestly I am {WORDS[k]} right now", 300.0


def test_two_processes_match_one(tmp_path: Path) -> None:
    make_fake_meld(tmp_path, _row, {"train": 40, "dev": 12, "test": 12})
    # 40 rows in batches of 8: no tail batch smaller than the 2 processes.
    cfg = tiny_config(tmp_path / "config.toml", tmp_path / "cache", epochs=4, batch_size=8, lr_head=1e-2)
    text = cfg.read_text().replace("dropout = 0.1", "dropout = 0.0").replace("modality_dropout = 0.2",
                                                                            "modality_dropout = 0.0")  # fmt: skip
    cfg.write_text(text)
    args = ["train", "--config", str(cfg), "--data-dir", str(tmp_path / "meld"), "--no-progress", "--mode", "text"]
    one, two = tmp_path / "one", tmp_path / "two"
    env = {**os.environ, "PYTHONPATH": str(REPO),
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}  # fmt: skip
    entry = str(REPO / "tests" / "training" / "ddp_entry.py")
    for cmd in (
        [sys.executable, entry, *args, "--run-dir", str(one)],
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", entry, *args,
         "--run-dir", str(two)],
    ):  # fmt: skip
        done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert json.loads((two / "config.json").read_text())["processes"] == 2

    h1 = json.loads((one / "history.json").read_text())
    h2 = json.loads((two / "history.json").read_text())
    assert len(h1) == len(h2) == 4
    for a, b in zip(h1, h2, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
    w1 = torch.load(one / "model.pt", map_location="cpu", weights_only=False)
    w2 = torch.load(two / "model.pt", map_location="cpu", weights_only=False)
    s1, s2 = w1["state_dict"], w2["state_dict"]
    assert s1.keys() == s2.keys() and s1
    diff = sum(float((s1[k].float() - s2[k].float()).norm() ** 2) for k in s1) ** 0.5
    size = sum(float(s1[k].float().norm() ** 2) for k in s1) ** 0.5
    print(f"relative weight difference {diff / size:.2e}")
    assert diff / size < 1e-3, f"weights differ by {diff / size:.2e} (relative L2)"
    m1 = json.loads((one / "metrics.json").read_text())["test"]
    m2 = json.loads((two / "metrics.json").read_text())["test"]
    for key in ("accuracy", "weighted_f1"):
        assert m2["meld_test"][key] == pytest.approx(m1["meld_test"][key], abs=1e-6)
