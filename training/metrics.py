"""Classification metrics (NumPy only) and the run's figures (matplotlib, Agg backend)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["classification_metrics", "plot_confusion", "plot_learning_curves"]

logger = logging.getLogger(__name__)


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """``weighted_f1, macro_f1, accuracy, per_class{label: precision, recall, f1, support}, n, confusion``.

    Macro-F1 averages over the labels present in ``y_true`` (a label absent from a corpus, e.g.
    surprise in EmoDB, would otherwise count as a zero).
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    k = len(labels)
    conf = np.zeros((k, k), dtype=np.int64)
    np.add.at(conf, (y_true, y_pred), 1)
    n = int(conf.sum())
    per_class: dict[str, dict[str, float | int]] = {}
    f1s, supports = [], []
    for i, label in enumerate(labels):
        tp = conf[i, i]
        support = int(conf[i].sum())
        predicted = int(conf[:, i].sum())
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = {"precision": float(precision), "recall": float(recall), "f1": float(f1), "support": support}
        f1s.append(f1)
        supports.append(support)
    f1_arr, sup = np.array(f1s), np.array(supports)
    present = sup > 0
    return {
        "weighted_f1": float((f1_arr * sup).sum() / n) if n else 0.0,
        "macro_f1": float(f1_arr[present].mean()) if present.any() else 0.0,
        "accuracy": float(np.trace(conf) / n) if n else 0.0,
        "per_class": per_class,
        "n": n,
        "confusion": conf.tolist(),
        "labels": list(labels),
    }


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(confusion: Sequence[Sequence[int]], labels: Sequence[str], path: str | Path, title: str) -> Path:
    """Row-normalised confusion matrix with counts, saved as PNG."""
    plt = _pyplot()
    conf = np.asarray(confusion, dtype=np.float64)
    norm = conf / np.maximum(conf.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6.4, 5.4), dpi=110)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    for i in range(conf.shape[0]):
        for j in range(conf.shape[1]):
            ax.text(j, i, f"{int(conf[i, j])}", ha="center", va="center", fontsize=8,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_learning_curves(history: Sequence[dict[str, Any]], path: str | Path, title: str) -> Path:
    """Training loss per step and dev weighted-F1 per epoch, saved as PNG."""
    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110)
    steps: list[float] = []
    for row in history:
        steps.extend(row.get("step_losses", []))
    if steps:
        smooth = np.convolve(steps, np.ones(min(25, len(steps))) / min(25, len(steps)), mode="valid")
        ax1.plot(steps, alpha=0.25, label="step")
        ax1.plot(np.arange(len(smooth)) + (len(steps) - len(smooth)), smooth, label="smoothed")
    ax1.set_xlabel("step")
    ax1.set_ylabel("training loss")
    ax1.legend()
    epochs = [row["epoch"] for row in history]
    for key in sorted({k for row in history for k in row if k.endswith("_weighted_f1")}):
        ax2.plot(epochs, [row.get(key, np.nan) for row in history], marker="o", label=key.removesuffix("_weighted_f1"))
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("dev weighted-F1")
    if len(ax2.get_lines()):
        ax2.legend()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
