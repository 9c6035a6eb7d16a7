"""The audio branch: pooled ASR-encoder features -> emotion probabilities that know when to abstain.

Input: the vector of :func:`training.asr_features.pool_utterance` (encoder mean + std over the speech
span, prosody). The branch

1. standardises it with training-set statistics;
2. optionally subtracts a **speaker offset** (:mod:`training.speaker_norm`): the running mean of the
   standardised vectors heard so far from the same speaker (the current one included when
   ``norm_includes_current``), shrunk toward zero with ``norm_prior`` pseudo-counts. A live stream has
   exactly this (per speaker label, or per stream); training simulates it: each training speaker's
   clips as a stream in a random order, each row normalised by the clips before it;
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from training.speaker_norm import RunningOffset, running_offsets, simulated_stream_offsets, speaker_offsets

__all__ = [
    "AudioBranch",
    "AudioBranchConfig",
    "Novelty",
    "RunningOffset",
    "evaluate_rows",
    "fit_audio_branch",
    "out_of_fold_logp",
    "simulated_logp",
    "speaker_offsets",
]

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
    # The utterance being classified counts in its own speaker offset (causal: it is already heard).
    # False in checkpoints written before this key existed (their offsets are of the earlier rows only).
    norm_includes_current: bool = False
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
    groups: np.ndarray | None = None,
) -> AudioBranch:
    """Train on raw feature rows ``x`` (labels ``y``, speaker of each row for the offsets).

    ``novelty_rows``: which rows define "familiar" audio for the novelty score (default all).
    ``groups``: the clip of each row (its copies share it; default: every row its own clip), so that a
    simulated stream holds each clip once and no row is normalised by a copy of itself.
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
    clips = np.arange(len(y)) if groups is None else np.asarray(groups)
    yt = torch.from_numpy(y).long()
    for member in branch.members:
        opt = torch.optim.AdamW(member.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, config.lr, total_steps=config.epochs * math.ceil(len(y) / 64))
        member.train()
        for _ in range(config.epochs):
            off = (simulated_stream_offsets(z, speakers, clips, config.norm_prior, rng,
                                            include_current=config.norm_includes_current)
                   if config.speaker_norm else np.zeros_like(z))  # fmt: skip
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
    """Log-probabilities for rows in order; offsets from the speaker's whole session (oracle), or
    (``running``) from the rows before it only (and itself, per the config), as in a live stream."""
    z = standardised(branch, x)
    spk = np.asarray(speakers).astype(str)
    prior, current = branch.config.norm_prior, branch.config.norm_includes_current
    if running:
        off = running_offsets(z, spk, prior, include_current=current)
    else:
        off = speaker_offsets(z, spk, prior, include_current=current)
    logp, _ = branch.predict(torch.from_numpy(z), torch.from_numpy(off))
    return logp.numpy()


def simulated_logp(
    branch: AudioBranch, x: np.ndarray, speakers: np.ndarray, groups: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Log-probabilities of rows with the offsets a live stream would give them (each speaker's clips
    as a stream in a random order, see :func:`training.speaker_norm.simulated_stream_offsets`)."""
    z = standardised(branch, x)
    cfg = branch.config
    off = (simulated_stream_offsets(z, np.asarray(speakers), np.asarray(groups), cfg.norm_prior, rng,
                                    include_current=cfg.norm_includes_current)
           if cfg.speaker_norm else np.zeros_like(z))  # fmt: skip
    logp, _ = branch.predict(torch.from_numpy(z), torch.from_numpy(off))
    return logp.numpy()


def out_of_fold_logp(
    x: np.ndarray, y: np.ndarray, speakers: np.ndarray, groups: np.ndarray, config: AudioBranchConfig, *,
    folds: int = 4, epochs: int = 20, fit_temperature: Callable[[np.ndarray, np.ndarray], float] | None = None,
) -> np.ndarray:  # fmt: skip
    """Audio log-probabilities of every row from a branch that never saw its speaker (speaker folds),
    with stream-like causal offsets, as the fusion head meets them at run time. ``fit_temperature``:
    one temperature fitted on all out-of-fold rows (as the final branch's on dev speakers), so the head
    learns on probabilities as sharp as the ones it will get."""
    spk = np.asarray(speakers)
    order = np.unique(spk)
    rng = np.random.default_rng(config.seed)
    rng.shuffle(order)
    held_out = [np.isin(spk, order[f::folds]) for f in range(folds)]
    branches = []
    for f, te in enumerate(held_out):
        cfg = dataclasses.replace(config, members=1, epochs=epochs)
        branches.append(fit_audio_branch(x[~te], y[~te], spk[~te], cfg, groups=np.asarray(groups)[~te]))
        logger.info("out-of-fold audio: fold %d/%d", f + 1, folds)

    def predict() -> np.ndarray:
        out = np.zeros((len(y), config.n_labels), dtype=np.float32)
        for branch, te in zip(branches, held_out, strict=True):
            out[te] = simulated_logp(branch, x[te], spk[te], np.asarray(groups)[te], np.random.default_rng(config.seed))
        return out

    out = predict()
    if fit_temperature is not None:
        t = fit_temperature(out, y)
        for branch in branches:
            branch.temperature.fill_(t)
        out = predict()
        logger.info("out-of-fold audio: temperature %.3f", t)
    return out
