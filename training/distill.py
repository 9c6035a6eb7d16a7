"""Knowledge distillation for the text branch: a larger teacher's soft labels for a small student.

The larger text branch (MPNet-base, ``models/emostream-mpnet.pt``) is better on MELD but costs five
times the per-utterance time of the shipped MiniLM. Its softened class distribution on each training
line carries what a hard MELD label does not (which wrong classes are near, which lines are ambiguous);
a student trained on a mix of both can keep its own cost and take some of the teacher's accuracy.

* :func:`teacher_logits` runs the teacher's text branch over every training line in the two forms the
  student sees (its speaker's tag, and the unknown-speaker tag; a teacher that reads past lines inside
  its input, ``text_past_lines``, reads each line with its dialogue's past in the same form, as it was
  trained), once, and keeps the result in the user cache keyed by the teacher file and the lines (an
  MPNet pass over MELD train costs about 10 minutes on two cores);
* :func:`ensemble_logits` averages the logits of several teachers (e.g. runs of one recipe with
  different seeds): the student learns from what the ensemble says, at one model's cost;
* the student's loss mixes cross-entropy on the labels with Hinton et al.'s softened KL term
  (:func:`training.text_branch.distill_loss`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from training.data import Example
from training.model import FusionClassifier
from training.text_branch import both_past_forms, both_tag_forms, encode_pooled
from training.weights import cache_root, sha256_file

__all__ = ["ensemble_logits", "teacher_logits", "with_unscored"]

logger = logging.getLogger(__name__)


def teacher_logits(checkpoint: str | Path, examples: Sequence[Example], labels: Sequence[str],
                   device: torch.device, cache_dir: Path | None = None) -> torch.Tensor:  # fmt: skip
    """The teacher checkpoint's text-only logits ``(2N, C)`` for ``examples``, rows in the order of
    :func:`training.text_branch.both_tag_forms`; read from the cache when this teacher file has scored
    these lines (in these dialogues) before."""
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"teacher checkpoint {path} does not exist")
    texts = both_tag_forms(examples)
    digest = hashlib.sha256(b"v2" + sha256_file(path).encode())
    for t, e in zip(texts, [*examples, *examples], strict=True):  # the uids place each line in its dialogue
        digest.update(t.encode() + b"\0" + e.uid.encode() + b"\0")
    cached = (cache_dir or cache_root() / "teacher-logits") / f"{digest.hexdigest()[:32]}.pt"
    if cached.is_file():
        logger.info("teacher logits from %s", cached)
        out: torch.Tensor = torch.load(cached, map_location="cpu")
        return out
    teacher = FusionClassifier.from_checkpoint(path, device=str(device))
    if not teacher.config.uses_text:
        raise ValueError(f"teacher {path} has no text branch")
    if list(teacher.config.labels) != list(labels):
        raise ValueError(f"teacher {path} labels {list(teacher.config.labels)} differ from {list(labels)}")
    k = teacher.config.text_past_lines
    pasts = both_past_forms(examples, k) if k else None
    logger.info("scoring %d lines with the teacher %s (once; cached in %s)", len(texts), path, cached)
    pooled = encode_pooled(teacher, texts, device, pasts=pasts)
    with torch.no_grad():
        out = teacher.text_logits(pooled.to(device)).float().cpu()
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(".tmp")
    torch.save(out, tmp)
    tmp.replace(cached)
    return out


def ensemble_logits(checkpoints: Sequence[str | Path], examples: Sequence[Example], labels: Sequence[str],
                    device: torch.device, cache_dir: Path | None = None) -> torch.Tensor:  # fmt: skip
    """The mean of :func:`teacher_logits` over ``checkpoints`` (one teacher: its own logits)."""
    if not checkpoints:
        raise ValueError("ensemble_logits needs at least one teacher checkpoint")
    return torch.stack([teacher_logits(p, examples, labels, device, cache_dir) for p in checkpoints]).mean(dim=0)


def with_unscored(logits: torch.Tensor, extra: int) -> torch.Tensor:
    """Teacher logits ``(2N, C)`` for N lines, widened to N + ``extra`` lines appended after them (in the
    :func:`training.text_branch.both_tag_forms` order): the extra lines' rows are NaN, which the student's
    loss reads as "not scored" (their label alone trains them)."""
    if logits.ndim != 2 or logits.shape[0] % 2:
        raise ValueError(f"teacher logits must be (2N, C), got {tuple(logits.shape)}")
    if extra < 0:
        raise ValueError(f"extra must be >= 0, got {extra}")
    n, c = logits.shape[0] // 2, logits.shape[1]
    gap = torch.full((extra, c), float("nan"), dtype=logits.dtype)
    return torch.cat([logits[:n], gap, logits[n:], gap])
