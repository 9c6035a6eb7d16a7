"""Synthetic tasks through the real CLI: generated MELD-shaped CSVs + MELD.Raw clips.

* only the audio carries the label -> the audio branch (real Whisper features) learns it;
* only the text carries the label -> the text branch learns it;
* text and audio carry complementary halves of the label -> fusion beats both single branches
  (``ablate``), and ``evaluate`` writes the documented JSON keys.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.training.meld_fakes import make_fake_meld, tiny_config
from training.cli import main

pytestmark = pytest.mark.slow

TONES = (140.0, 280.0, 560.0)  # one pitch per class
SIZES = {"train": 36, "dev": 12, "test": 18}


def _run_args(fake_dir: Path, cfg: Path, *extra: str) -> list[str]:
    return ["--config", str(cfg), "--data-dir", str(fake_dir / "meld"), "--no-progress", *extra]


def _accuracy(run_dir: Path, name: str = "meld_test") -> float:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return float(metrics["test"][name]["accuracy"])


def test_audio_only_signal_is_learned_by_the_audio_branch(tmp_path: Path) -> None:
    def row(i: int, rng: np.random.Generator) -> tuple[int, str, float]:
        label = int(rng.integers(3))
        return label, "so what do you think about it", TONES[label] * float(rng.uniform(0.95, 1.05))

    make_fake_meld(tmp_path, row, SIZES, mp4_every=9)
    cfg = tiny_config(tmp_path / "config.toml", tmp_path / "cache", epochs=15)
    run = tmp_path / "run"
    rc = main(["train", *_run_args(tmp_path, cfg, "--meld-raw-dir", str(tmp_path / "MELD.Raw")),
               "--mode", "audio", "--run-dir", str(run)])  # fmt: skip
    assert rc == 0
    assert _accuracy(run) >= 0.8  # chance is 1/3
    for name in ("config.json", "history.json", "metrics.json", "learning_curves.png", "confusion_meld_test.png",
                 "model.pt"):  # fmt: skip
        assert (run / name).is_file(), name
    assert json.loads((run / "config.json").read_text())["data"]["meld_raw"]["train"]["missing"] == 0


def test_text_only_signal_is_learned_by_the_text_branch(tmp_path: Path) -> None:
    words = ("furious", "delighted", "terrified")
    labels = (0, 3, 2)

    def row(i: int, rng: np.random.Generator) -> tuple[int, str, float]:
        k = int(rng.integers(3))
        return labels[k], f"honestly I am {words[k]} right now", 300.0

    make_fake_meld(tmp_path, row, SIZES)
    cfg = tiny_config(tmp_path / "config.toml", tmp_path / "cache", epochs=25, lr_head=1e-2)
    run = tmp_path / "run"
    assert main(["train", *_run_args(tmp_path, cfg), "--mode", "text", "--run-dir", str(run)]) == 0
    assert _accuracy(run) >= 0.8


def test_fusion_is_never_worse_than_the_better_single_branch(tmp_path: Path) -> None:
    # text decides the group (anger/disgust vs fear/joy), the tone decides within the group:
    # each branch alone can reach about 50 %, both together 100 %.
    group_words = ("red", "blue")

    def row(i: int, rng: np.random.Generator) -> tuple[int, str, float]:
        g, h = int(rng.integers(2)), int(rng.integers(2))
        label = (0, 1, 2, 3)[2 * g + h]
        return label, f"the {group_words[g]} one please", TONES[0 if h == 0 else 2]

    sizes = {"train": 48, "dev": 12, "test": 24}
    make_fake_meld(tmp_path, row, sizes)
    cfg = tiny_config(tmp_path / "config.toml", tmp_path / "cache", epochs=20)
    out = tmp_path / "ablation"
    rc = main(["ablate", *_run_args(tmp_path, cfg, "--meld-raw-dir", str(tmp_path / "MELD.Raw")),
               "--run-dir", str(tmp_path / "runs"), "--out", str(out)])  # fmt: skip
    assert rc == 0
    table = json.loads((out / "ablation.json").read_text())
    acc = {mode: table[mode]["meld_test"]["accuracy"] for mode in ("text", "audio", "fusion")}
    assert acc["fusion"] >= max(acc["text"], acc["audio"]), acc
    assert acc["fusion"] >= 0.75, acc
    assert "| fusion |" in (out / "ablation.md").read_text()

    report = tmp_path / "eval.json"
    rc = main(["evaluate", *_run_args(tmp_path, cfg, "--meld-raw-dir", str(tmp_path / "MELD.Raw")),
               "--checkpoint", str(tmp_path / "runs" / "fusion" / "model.pt"), "--split", "test",
               "--json", str(report)])  # fmt: skip
    assert rc == 0
    result = json.loads(report.read_text())
    assert {"weighted_f1", "macro_f1", "accuracy", "per_class", "n"} <= set(result)
    assert result["n"] == sizes["test"]
    assert result["accuracy"] == pytest.approx(acc["fusion"])
