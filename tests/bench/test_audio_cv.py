"""bench.audio_cv: speaker folds that never train on the speakers they score, on a bank whose answer is known."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bench.audio_cv import main
from training.acoustic import ACOUSTIC_DIM

ENC = 40  # encoder columns (more than the abstention's 32 principal directions)


def _bank(folder: Path, corpus: str, speakers: list[str], rng: np.random.Generator) -> None:
    """Each speaker's own offset (along a few directions all voices share, so no voice is "novel" to the
    branch's abstention) plus a label direction: learnable across speakers once the offset is removed."""
    rows = {k: [] for k in ("uid", "corpus", "speaker", "label", "text", "variant")}
    feats, acoustic = [], []
    directions = rng.standard_normal((7, ENC + ACOUSTIC_DIM)) * 3.0
    voices = np.random.default_rng(99).standard_normal((3, ENC + ACOUSTIC_DIM))
    for s in speakers:
        offset = rng.standard_normal(3) @ voices * 2.0
        for i in range(14):
            label = i % 7
            x = offset + directions[label] + rng.standard_normal(ENC + ACOUSTIC_DIM) * 0.5
            feats.append(x[:ENC])
            acoustic.append(x[ENC:])
            for k, v in (("uid", f"{corpus}/{s}-{i}"), ("corpus", corpus), ("speaker", s), ("label", label),
                         ("text", ""), ("variant", 0)):  # fmt: skip
                rows[k].append(v)
    folder.mkdir(parents=True)
    np.savez(folder / "shard-0000.npz", features=np.asarray(feats, np.float32),
             acoustic=np.asarray(acoustic, np.float32), **{k: np.asarray(v) for k, v in rows.items()})  # fmt: skip


def test_cross_validation_scores_held_out_speakers_and_the_test_speakers(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    _bank(tmp_path / "ravdess", "ravdess", [f"ravdess{a:02d}" for a in range(1, 21)], rng)
    _bank(tmp_path / "emodb", "emodb", [f"emodb{s:02d}" for s in (3, 8, 9, 10, 11, 12, 13, 14, 15, 16)], rng)
    out = tmp_path / "cv.json"
    main(["--bank", str(tmp_path / "ravdess"), str(tmp_path / "emodb"), "--members", "1", "--epochs", "15",
          "--json", str(out)])  # fmt: skip
    report = json.loads(out.read_text())
    assert report["dim"] == ENC + ACOUSTIC_DIM
    assert len(report["cv_folds"]["ravdess"]) == 4 and len(report["cv_folds"]["emodb"]) == 4
    assert report["cv_accuracy"]["ravdess"] > 0.8  # the label directions carry to new speakers
    assert report["test_causal_5_orders"]["ravdess"] > 0.8 and report["test_causal_5_orders"]["emodb"] > 0.8
    main(["--bank", str(tmp_path / "ravdess"), "--no-acoustic", "--members", "1", "--epochs", "2", "--json", str(out)])
    assert json.loads(out.read_text())["dim"] == ENC
