"""Metrics over label indices, and telling a run that answers one label for everything."""

from __future__ import annotations

import numpy as np

from training.data import LABELS
from training.metrics import classification_metrics, collapsed_to


def _metrics(y_true: list[int], y_pred: list[int]) -> dict:
    return classification_metrics(np.array(y_true), np.array(y_pred), LABELS)


def test_one_label_for_every_row_of_a_mixed_set_is_named() -> None:
    neutral = LABELS.index("neutral")
    m = _metrics([0, 3, 4, 4, 6], [neutral] * 5)
    assert m["weighted_f1"] > 0.2  # the majority class still scores: the figure alone does not tell
    assert collapsed_to(m) == "neutral"


def test_two_labels_predicted_or_one_label_true_is_not_a_collapse() -> None:
    assert collapsed_to(_metrics([0, 3, 4, 4, 6], [4, 4, 4, 4, 3])) is None
    assert collapsed_to(_metrics([4, 4, 4], [4, 4, 4])) is None  # a one-class set cannot tell
    assert collapsed_to(_metrics([], [])) is None
