"""Classification metrics (scikit-learn) and the run's figures (matplotlib, Agg backend)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["TrainingDiverged", "classification_metrics", "collapsed_to", "plot_confusion", "plot_learning_curves"]

logger = logging.getLogger(__name__)


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """``weighted_f1, macro_f1, accuracy, per_class{label: precision, recall, f1, support}, n, confusion``
    (scikit-learn's metrics over the label indices ``0..len(labels)-1``).

    Macro-F1 averages over the labels present in ``y_true`` (a label absent from a corpus, e.g.
    surprise in EmoDB, would otherwise count as a zero).
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    index = list(range(len(labels)))
    conf = confusion_matrix(y_true, y_pred, labels=index) if y_true.size else np.zeros((len(index),) * 2, np.int64)
    n = int(conf.sum())
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=index, zero_division=0.0
    ) if n else (np.zeros(len(index)),) * 4  # fmt: skip
    per_class = {
        label: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                "support": int(support[i])}
        for i, label in enumerate(labels)
    }  # fmt: skip
    present = sorted(set(y_true.tolist()))

    def f1_over(over: list[int], average: str) -> float:
        return float(f1_score(y_true, y_pred, labels=over, average=average, zero_division=0.0)) if n else 0.0

    return {
        "weighted_f1": f1_over(index, "weighted"),
        "macro_f1": f1_over(present, "macro"),
        "accuracy": float(accuracy_score(y_true, y_pred)) if n else 0.0,
        "per_class": per_class,
        "n": n,
        "confusion": conf.tolist(),
        "labels": list(labels),
    }  # fmt: skip


class TrainingDiverged(ValueError):
    """Training ended on weights that give every dev line the same label: nothing was learnt."""


def collapsed_to(metrics: dict[str, Any]) -> str | None:
    """The one label a model gave every line of a set whose truth holds more than one, else ``None``
    (``metrics`` from :func:`classification_metrics`).

    A run that diverges (a learning rate too high for its draw) settles on the majority class: on MELD
    that still scores a weighted-F1 of 0.25-0.31, so the figure alone does not give it away."""
    conf = np.asarray(metrics["confusion"])
    if conf.sum() == 0 or np.count_nonzero(conf.sum(axis=1)) < 2:
        return None
    predicted = np.flatnonzero(conf.sum(axis=0))
    return str(metrics["labels"][int(predicted[0])]) if predicted.size == 1 else None


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
            ax.text(
                j,
                i,
                f"{int(conf[i, j])}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if norm[i, j] > 0.5 else "black",
            )
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
