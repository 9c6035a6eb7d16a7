"""A run's rows as the model reads them: :class:`Dataset`, which branches each row uses, a batch's inputs.

Text rows are tokenised per batch; audio rows carry precomputed feature vectors (cached by
:mod:`training.features`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from training.data import Example
from training.model import FusionClassifier

__all__ = ["Dataset", "batch_inputs", "epoch_order", "row_modalities", "usable_rows"]


@dataclass(frozen=True, slots=True)
class Dataset:
    """Examples with their audio feature vectors (row i of ``features``; ``has_audio[i]`` says if valid)."""

    name: str
    examples: tuple[Example, ...]
    features: np.ndarray | None = None  # (N, D) float32
    has_audio: np.ndarray | None = None  # (N,) bool

    def __post_init__(self) -> None:
        if self.features is not None and self.features.shape[0] != len(self.examples):
            raise ValueError(f"{self.name}: {len(self.examples)} examples but {self.features.shape[0]} feature rows")

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def labels(self) -> np.ndarray:
        return np.array([e.label for e in self.examples], dtype=np.int64)

    def audio_ok(self, i: int) -> bool:
        return bool(self.has_audio is not None and self.has_audio[i])

    def subset(self, idx: Sequence[int], name: str | None = None) -> Dataset:
        idx = list(idx)
        return Dataset(
            name or self.name,
            tuple(self.examples[i] for i in idx),
            None if self.features is None else self.features[idx],
            None if self.has_audio is None else self.has_audio[idx],
        )


def row_modalities(
    model: FusionClassifier,
    data: Dataset,
    idx: Sequence[int],
    *,
    modality_dropout: float = 0.0,
    rng: random.Random | None = None,
) -> list[tuple[bool, bool]]:
    """(text, audio) to use for each row of ``idx``: what it has, less what modality dropout hides."""
    use_text, use_audio = model.config.uses_text, model.config.uses_audio
    out = []
    for i in idx:
        ex = data.examples[i]
        t = use_text and bool(ex.text and ex.text.strip())
        a = use_audio and data.audio_ok(i)
        if t and a and rng is not None and rng.random() < modality_dropout:
            if rng.random() < 0.5:
                t = False
            else:
                a = False
        out.append((t, a))
    return out


def batch_inputs(
    model: FusionClassifier,
    data: Dataset,
    idx: Sequence[int],
    device: torch.device,
    *,
    modality_dropout: float = 0.0,
    rng: random.Random | None = None,
    modalities: Sequence[tuple[bool, bool]] | None = None,
) -> dict[str, Any]:
    """Forward kwargs for rows ``idx`` of ``data`` (text/audio the model does not use are ignored).

    ``modalities`` (from :func:`row_modalities`) fixes which branches each row uses; otherwise they are
    drawn here with ``modality_dropout`` and ``rng``.
    """
    if modalities is None:
        modalities = row_modalities(model, data, idx, modality_dropout=modality_dropout, rng=rng)
    text_rows, texts, audio_pos, audio_idx = [], [], [], []
    for j, (i, (t, a)) in enumerate(zip(idx, modalities, strict=True)):
        ex = data.examples[i]
        if t:
            text_rows.append(j)
            texts.append(str(ex.text).strip())
        if a:  # by batch position: an oversampled row may appear twice in one batch
            audio_pos.append(j)
            audio_idx.append(i)
    kwargs: dict[str, Any] = {"batch_size": len(idx)}
    if text_rows:
        kwargs.update(model.tokenize(texts, device))
        kwargs["text_rows"] = torch.tensor(text_rows, device=device)
    if audio_pos:
        assert data.features is not None
        kwargs["audio_features"] = torch.from_numpy(data.features[audio_idx]).to(device)
        kwargs["audio_rows"] = torch.tensor(audio_pos, device=device)
    return kwargs


def usable_rows(model: FusionClassifier, data: Dataset) -> list[int]:
    """Rows the model can see at all (text for a text branch, audio for an audio branch)."""
    out = []
    for i, ex in enumerate(data.examples):
        if (model.config.uses_text and ex.text and ex.text.strip()) or (model.config.uses_audio and data.audio_ok(i)):
            out.append(i)
    return out


def epoch_order(model: FusionClassifier, train: Dataset, audio_oversample: int, rng: random.Random) -> list[int]:
    """One epoch's rows, shuffled; audio-only rows repeated ``audio_oversample`` times (0: to about half
    the text rows), so that the audio branch sees enough updates when audio comes from smaller corpora."""
    rows = usable_rows(model, train)
    text_rows = [i for i in rows if model.config.uses_text and train.examples[i].text]
    in_text = set(text_rows)
    audio_only = [i for i in rows if i not in in_text]
    repeat = audio_oversample
    if repeat == 0:
        repeat = max(1, round(0.5 * len(text_rows) / len(audio_only))) if audio_only and text_rows else 1
    order = text_rows + audio_only * repeat
    rng.shuffle(order)
    return order
