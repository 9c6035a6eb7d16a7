"""The learned fusion head: how much to trust the words and how much the voice, row by row.

The head sees each branch's log-probabilities (text ``lt``, audio ``la`` after the audio branch's own
abstention) and a few numbers that say how far to trust them -- each branch's entropy and top
probability, the audio novelty distance (:class:`training.audio_branch.Novelty`) -- and outputs

    logits = (a_t(m) * lt + a_a(m) * la) / T

where ``a_t, a_a >= 0`` come from a small gate network over those numbers ``m`` and ``T`` is a
temperature fitted afterwards on held-out rows (calibration). No class bias: when the audio branch
abstains (``la`` uniform), the fused label is the text label, so speech whose voice carries nothing
(TTS, other languages' prosody) never loses what the words say. A row with one modality missing gets
that branch's own calibrated prediction.

It is trained on **paired** rows of two regimes (see :mod:`training.fuse`): real emotional voices
with neutral words (label from the voice) and speech whose words carry the emotion and whose voice
carries nothing (label from the words), so the gate learns when to trust which.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["FusionHead", "FusionHeadConfig", "fit_fusion_head", "fit_temperature", "gate_inputs"]

logger = logging.getLogger(__name__)

N_GATE_INPUTS = 5


@dataclass(frozen=True, slots=True)
class FusionHeadConfig:
    n_labels: int = 7
    hidden: int = 16
    epochs: int = 150
    lr: float = 1e-2
    weight_decay: float = 1e-3
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FusionHeadConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown fusion head config keys: {', '.join(unknown)}")
        return cls(**data)


def _entropy(logp: torch.Tensor) -> torch.Tensor:
    return -(logp.exp() * logp).sum(-1)


def gate_inputs(lt: torch.Tensor, la: torch.Tensor, novelty: torch.Tensor) -> torch.Tensor:
    """The gate's per-row numbers: entropies (scaled to [0, 1]), top probabilities, novelty (clipped)."""
    k = math.log(lt.shape[-1])
    return torch.stack(
        [
            _entropy(lt) / k,
            _entropy(la) / k,
            lt.exp().max(-1).values,
            la.exp().max(-1).values,
            torch.log1p(novelty.clamp(0.0, 50.0)),
        ],
        dim=-1,
    )


class FusionHead(nn.Module):
    """See the module docstring."""

    temperature: torch.Tensor

    def __init__(self, config: FusionHeadConfig) -> None:
        super().__init__()
        self.config = config
        out = nn.Linear(config.hidden, 2)
        nn.init.zeros_(out.weight)
        nn.init.constant_(out.bias, 0.5413)  # softplus(0.5413) = 1: start as the plain product of experts
        self.gate = nn.Sequential(nn.Linear(N_GATE_INPUTS, config.hidden), nn.Tanh(), out)
        self.register_buffer("temperature", torch.tensor(1.0))

    def weights(self, lt: torch.Tensor, la: torch.Tensor, novelty: torch.Tensor) -> torch.Tensor:
        """``(B, 2)``: the text and audio weights of each row."""
        return nn.functional.softplus(self.gate(gate_inputs(lt, la, novelty)))

    def raw_logits(self, lt: torch.Tensor, la: torch.Tensor, novelty: torch.Tensor) -> torch.Tensor:
        w = self.weights(lt, la, novelty)
        return w[:, :1] * lt + w[:, 1:] * la

    def forward(self, lt: torch.Tensor, la: torch.Tensor, novelty: torch.Tensor) -> torch.Tensor:
        """Calibrated fused log-probabilities."""
        return (self.raw_logits(lt, la, novelty) / self.temperature).log_softmax(-1)


def fit_temperature(logits: np.ndarray, labels: np.ndarray, *, grid: np.ndarray | None = None) -> float:
    """The temperature in [0.25, 8] minimising the negative log-likelihood of ``labels``."""
    grid = np.exp(np.linspace(math.log(0.25), math.log(8.0), 121)) if grid is None else grid
    t = torch.from_numpy(logits).double()
    y = torch.from_numpy(labels).long()
    nll = [float(nn.functional.cross_entropy(t / g, y)) for g in grid]
    return float(grid[int(np.argmin(nll))])


def expected_calibration_error(logp: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """ECE of the top-label confidence (equal-width bins)."""
    p = np.exp(logp)
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def fit_fusion_head(
    lt: np.ndarray,
    la: np.ndarray,
    novelty: np.ndarray,
    labels: np.ndarray,
    config: FusionHeadConfig,
    *,
    sample_weight: np.ndarray | None = None,
) -> FusionHead:
    """Train the gate on paired rows (full batch, AdamW); the temperature stays 1 (see fit_temperature)."""
    torch.manual_seed(config.seed)
    head = FusionHead(config)
    tl, ta, tn = (torch.from_numpy(np.asarray(a, dtype=np.float32)) for a in (lt, la, novelty))
    y = torch.from_numpy(labels).long()
    w = torch.ones(len(y)) if sample_weight is None else torch.from_numpy(sample_weight).float()
    opt = torch.optim.AdamW(head.gate.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    for _ in range(config.epochs):
        loss = (nn.functional.cross_entropy(head.raw_logits(tl, ta, tn), y, reduction="none") * w).sum() / w.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return head.eval()
