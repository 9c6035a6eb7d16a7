"""The audio branch: pooled ASR-encoder features -> emotion probabilities that know when to abstain.

Input: the vector of :func:`training.asr_features.pool_utterance` (encoder mean + std over the speech
span, prosody). The branch

1. standardises it with training-set statistics;
2. optionally subtracts a **speaker (stream) offset**: the running mean of the standardised vectors
   already seen from the same speaker or stream, shrunk toward zero with ``norm_prior`` pseudo-counts
   (:class:`RunningOffset`). A live stream has exactly this; training draws the offset from a random
   number of the same speaker's other clips so that the head sees offsets of every maturity;
3. classifies with a small MLP (an ensemble of ``members``, averaged in log space);
4. measures how unlike its training audio the input is (:class:`Novelty`: the distance off the
   principal subspace of the standardised training vectors, *before* the speaker offset, so that a
   voice unlike any training voice stays unlike them however long the stream) and mixes its
   probabilities toward uniform as that distance passes the training set's own high percentiles: on
   TTS or music the branch abstains (high entropy) instead of guessing.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["AudioBranch", "AudioBranchConfig", "Novelty", "RunningOffset", "fit_audio_branch", "speaker_offsets"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AudioBranchConfig:
    """Architecture and training of the audio branch (stored in the checkpoint)."""

    dim: int = 1034
    n_labels: int = 7
    hidden: int = 256
    dropout: float = 0.4
    members: int = 3  # ensemble size
    speaker_norm: bool = True
    norm_prior: float = 4.0  # pseudo-count of the global mean in the running speaker offset
    novelty_dims: int = 32  # PCA dimensions of the novelty score
    novelty_low_pct: float = 97.0  # training percentile where abstention starts ...
    novelty_high_pct: float = 99.0  # ... and where it is complete (uniform output)
    epochs: int = 60
    lr: float = 2e-3
    weight_decay: float = 1e-2
    label_smoothing: float = 0.1
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AudioBranchConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown audio branch config keys: {', '.join(unknown)}")
        return cls(**data)


class RunningOffset:
    """Per-key (speaker or stream) running mean of standardised vectors, shrunk toward zero.

    ``offset(key)`` before ``update(key, x)``: an utterance is normalised by what came before it only.
    """

    def __init__(self, dim: int, prior: float) -> None:
        self._dim = dim
        self._prior = prior
        self._sums: dict[str, np.ndarray] = {}
        self._counts: dict[str, int] = {}

    def offset(self, key: str) -> np.ndarray:
        n = self._counts.get(key, 0)
        if n == 0:
            return np.zeros(self._dim, dtype=np.float32)
        return (self._sums[key] / (n + self._prior)).astype(np.float32)

    def update(self, key: str, x: np.ndarray) -> None:
        self._sums[key] = self._sums.get(key, np.zeros(self._dim, dtype=np.float64)) + x
        self._counts[key] = self._counts.get(key, 0) + 1

    def count(self, key: str) -> int:
        return self._counts.get(key, 0)

    def reset(self, key: str | None = None) -> None:
        if key is None:
            self._sums.clear()
            self._counts.clear()
        else:
            self._sums.pop(key, None)
            self._counts.pop(key, None)


def speaker_offsets(
    z: np.ndarray, speakers: np.ndarray, prior: float, rng: np.random.Generator | None, *, max_seen: int = 40
) -> np.ndarray:
    """Offsets for standardised rows ``z``: the shrunk mean of other rows of the same speaker.

    With ``rng``: a random number (0..``max_seen``) of random other rows (training: every stage of a
    stream); without: all other rows (a speaker whose whole session was heard).
    """
    out = np.zeros_like(z)
    for spk in np.unique(speakers):
        idx = np.flatnonzero(speakers == spk)
        n = idx.size
        if n < 2:
            continue
        if rng is None:
            k = np.full(n, n - 1)
            chosen = ~np.eye(n, dtype=bool)
        else:
            k = rng.integers(0, min(max_seen, n - 1) + 1, size=n)
            noise = rng.random((n, n))
            np.fill_diagonal(noise, 2.0)  # never the row itself
            ranks = noise.argsort(axis=1).argsort(axis=1)
            chosen = ranks < k[:, None]
        out[idx] = (chosen.astype(z.dtype) @ z[idx]) / (k[:, None] + prior)
    return out


class Novelty(nn.Module):
    """How far a row lies *off* the training audio's principal subspace; ``abstain(d)`` in [0, 1].

    The distance is the RMS of the residual after projecting the standardised row on the top ``k``
    principal directions of the training rows, divided by its training median (about 1 for familiar
    audio). Emotional extremes move a row *along* those directions and stay familiar; a synthetic voice
    (espeak-ng: 1.7-3.8 here against 0.7-1.6 for held-out actors' clips) or music leaves them.
    Abstention ramps between two percentiles of the training rows' distances.
    """

    mean: torch.Tensor
    components: torch.Tensor
    scale: torch.Tensor
    low: torch.Tensor
    high: torch.Tensor

    def __init__(self, dim: int, k: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("components", torch.zeros(k, dim))
        self.register_buffer("scale", torch.tensor(1.0))
        self.register_buffer("low", torch.tensor(1.0))
        self.register_buffer("high", torch.tensor(2.0))

    def fit(self, z: np.ndarray, low_pct: float, high_pct: float) -> None:
        mean = z.mean(axis=0)
        _, _, vt = np.linalg.svd(z - mean, full_matrices=False)
        k = self.components.shape[0]
        self.mean.copy_(torch.from_numpy(mean).float())
        self.components.copy_(torch.from_numpy(vt[:k]).float())
        self.scale.fill_(1.0)
        d = self.distance(torch.from_numpy(z).float()).numpy()
        self.scale.fill_(float(np.median(d)) or 1.0)
        d = d / float(self.scale)
        self.low.fill_(float(np.percentile(d, low_pct)))
        self.high.fill_(max(float(np.percentile(d, high_pct)), float(self.low) * 1.2))

    def distance(self, z: torch.Tensor) -> torch.Tensor:
        """RMS residual off the principal subspace, in training medians (about 1 for familiar rows)."""
        centered = z - self.mean
        residual = centered - (centered @ self.components.T) @ self.components
        return torch.sqrt((residual**2).mean(dim=-1)) / self.scale

    def abstain(self, d: torch.Tensor) -> torch.Tensor:
        return ((d - self.low) / (self.high - self.low)).clamp(0.0, 1.0)


class AudioBranch(nn.Module):
    """See the module docstring. ``forward(z_centered)`` gives log-probabilities before abstention."""

    feat_mean: torch.Tensor
    feat_std: torch.Tensor
    temperature: torch.Tensor

    def __init__(self, config: AudioBranchConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("feat_mean", torch.zeros(config.dim))
        self.register_buffer("feat_std", torch.ones(config.dim))
        self.register_buffer("temperature", torch.tensor(1.0))  # fitted on dev rows (calibration)
        self.members = nn.ModuleList(
            nn.Sequential(
                nn.Dropout(0.2),
                nn.Linear(config.dim, config.hidden),
                nn.GELU(),
                nn.Dropout(config.dropout),
                nn.Linear(config.hidden, config.n_labels),
            )  # fmt: skip
            for _ in range(config.members)
        )
        self.novelty = Novelty(config.dim, config.novelty_dims)

    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.feat_mean) / self.feat_std

    def forward(self, z_centered: torch.Tensor) -> torch.Tensor:
        logps = torch.stack([m(z_centered).log_softmax(-1) for m in self.members])
        return torch.logsumexp(logps, dim=0) - math.log(len(self.members))

    @torch.no_grad()
    def predict(self, z: torch.Tensor, offset: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(log-probabilities after abstention, novelty distance) for standardised rows ``z``."""
        centered = z - offset if (offset is not None and self.config.speaker_norm) else z
        logp = (self(centered) / self.temperature).log_softmax(-1)
        d = self.novelty.distance(z)
        a = self.novelty.abstain(d).unsqueeze(-1)
        probs = (1.0 - a) * logp.exp() + a / self.config.n_labels
        return probs.clamp_min(1e-9).log(), d


def fit_audio_branch(
    x: np.ndarray,
    y: np.ndarray,
    speakers: np.ndarray,
    config: AudioBranchConfig,
    *,
    sample_weight: np.ndarray | None = None,
    novelty_rows: np.ndarray | None = None,
) -> AudioBranch:
    """Train on raw feature rows ``x`` (labels ``y``, speaker of each row for the offsets).

    ``novelty_rows``: which rows define "familiar" audio for the novelty score (default all).
    """
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    branch = AudioBranch(config)
    mean, std = x.mean(axis=0), np.maximum(x.std(axis=0), 1e-4)
    branch.feat_mean.copy_(torch.from_numpy(mean).float())
    branch.feat_std.copy_(torch.from_numpy(std).float())
    z = ((x - mean) / std).astype(np.float32)
    branch.novelty.fit(z if novelty_rows is None else z[novelty_rows], config.novelty_low_pct,
                       config.novelty_high_pct)  # fmt: skip
    counts = np.bincount(y, minlength=config.n_labels).astype(np.float64)
    cw = np.where(counts > 0, counts.sum() / (config.n_labels * np.maximum(counts, 1)), 0.0)
    loss_fn = nn.CrossEntropyLoss(weight=torch.tensor(cw, dtype=torch.float32), reduction="none",
                                  label_smoothing=config.label_smoothing)  # fmt: skip
    w = torch.ones(len(y)) if sample_weight is None else torch.from_numpy(sample_weight).float()
    yt = torch.from_numpy(y).long()
    for member in branch.members:
        opt = torch.optim.AdamW(member.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, config.lr, total_steps=config.epochs * math.ceil(len(y) / 64))
        member.train()
        for _ in range(config.epochs):
            off = speaker_offsets(z, speakers, config.norm_prior, rng) if config.speaker_norm else np.zeros_like(z)
            zin = torch.from_numpy(z - off)
            order = torch.from_numpy(rng.permutation(len(y)))
            for s in range(0, len(y), 64):
                idx = order[s : s + 64]
                loss = (loss_fn(member(zin[idx]), yt[idx]) * w[idx]).sum() / w[idx].sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
        member.eval()
    return branch.eval()


def standardised(branch: AudioBranch, x: np.ndarray) -> np.ndarray:
    return ((x - branch.feat_mean.numpy()) / branch.feat_std.numpy()).astype(np.float32)


def evaluate_rows(
    branch: AudioBranch, x: np.ndarray, speakers: Sequence[str] | np.ndarray, *, running: bool
) -> np.ndarray:
    """Log-probabilities for rows in order; offsets from all other rows of the speaker, or (``running``)
    from the rows before it only, as in a live stream."""
    z = standardised(branch, x)
    spk = np.asarray(speakers)
    if running:
        state = RunningOffset(z.shape[1], branch.config.norm_prior)
        off = np.zeros_like(z)
        for i in range(len(z)):
            off[i] = state.offset(str(spk[i]))
            state.update(str(spk[i]), z[i])
    else:
        off = speaker_offsets(z, spk, branch.config.norm_prior, None)
    logp, _ = branch.predict(torch.from_numpy(z), torch.from_numpy(off))
    return logp.numpy()
