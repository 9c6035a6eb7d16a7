"""Speaker cross-validation of the audio branch: how a change to its input or training is chosen.

The test speakers (RAVDESS actors 17-20, EmoDB 15-16) are left out entirely; the other speakers are
split into 4 folds, each fold's speakers held out in turn and their clips (as recorded, variant 0)
classified in 3 random orders with the causal per-speaker offsets a live stream has (each clip
normalised by its speaker's clips before it). Then, for the figures only, the branch trained as
``training.fuse`` trains it (train speakers; dev speakers left out) is scored on the test speakers'
clips in 5 orders, as ``training.fuse`` reports them.

Usage: ``python -m bench.audio_cv [--no-acoustic] [--members 3] [--seed 0] [--json OUT]``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from training.audio_branch import AudioBranch, AudioBranchConfig, evaluate_rows, fit_audio_branch
from training.featurebank import Bank, load_bank
from training.fuse import EMODB_DEV, EMODB_TEST, RAVDESS_DEV, RAVDESS_TEST

__all__ = ["main"]


def _causal_accuracy(branch: AudioBranch, bank: Bank, rows: np.ndarray, orders: int) -> float:
    accs = []
    for seed in range(orders):
        p = np.random.default_rng(seed).permutation(rows)
        logp = evaluate_rows(branch, bank.features[p], bank.speaker[p].astype(str), running=True)
        accs.append(float((logp.argmax(1) == bank.label[p]).mean()))
    return float(np.mean(accs))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.audio_cv", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bank", nargs="+", default=["runs/bank/ravdess", "runs/bank/emodb"])
    parser.add_argument("--no-acoustic", dest="acoustic", action="store_false")
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--json", default="", help="also write the figures here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # tiny networks: a second thread only spins (see training.fuse)
    started = time.monotonic()
    bank = Bank.concat([load_bank(p, acoustic=args.acoustic) for p in args.bank])
    speaker, corpus = bank.speaker.astype(str), bank.corpus.astype(str)
    test = np.isin(speaker, RAVDESS_TEST + EMODB_TEST)
    clips = bank.variant == 0

    def fit(rows: np.ndarray) -> AudioBranch:
        cfg = AudioBranchConfig(dim=bank.features.shape[1], members=args.members, epochs=args.epochs,
                                norm_includes_current=True, seed=args.seed)  # fmt: skip
        return fit_audio_branch(bank.features[rows], bank.label[rows], speaker[rows], cfg, groups=bank.uid[rows])

    pool = np.unique(speaker[~test])
    np.random.default_rng(123).shuffle(pool)
    folds: dict[str, list[float]] = {"ravdess": [], "emodb": []}
    for f in range(args.folds):
        held = np.isin(speaker, pool[f :: args.folds])
        branch = fit(~test & ~held)
        for name, accuracies in folds.items():
            rows = np.flatnonzero(held & clips & (corpus == name))
            if rows.size:
                accuracies.append(_causal_accuracy(branch, bank, rows, 3))
    dev = np.isin(speaker, RAVDESS_DEV + EMODB_DEV)
    branch = fit(~test & ~dev)
    ravdess_test = np.flatnonzero(np.isin(speaker, RAVDESS_TEST) & clips)
    emodb_test = np.flatnonzero(np.isin(speaker, EMODB_TEST) & clips)
    report = {
        "acoustic": args.acoustic, "members": args.members, "seed": args.seed, "dim": int(bank.features.shape[1]),
        "cv_accuracy": {k: round(float(np.mean(v)), 4) for k, v in folds.items() if v},
        "cv_folds": {k: [round(a, 4) for a in v] for k, v in folds.items()},
        "test_causal_5_orders": {
            "ravdess": round(_causal_accuracy(branch, bank, ravdess_test, 5), 4),
            "emodb": round(_causal_accuracy(branch, bank, emodb_test, 5), 4),
        },
        "seconds": round(time.monotonic() - started),
    }  # fmt: skip
    print(json.dumps(report, indent=1))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
