"""Past-context classification: a small module over the pooled embeddings of previous utterances.

CoMPM-like and built for a small sentence encoder: the same encoder that reads the current line
encodes each previous utterance of the conversation once (a stream caches these encodings, so a
line costs one encoder pass however long the window). The current line's pooled embedding queries
the window by attention; each past utterance is keyed by its embedding, how far back it is, and its
speaker relation to the current line (same speaker, another speaker, or unknown when the stream has
no speaker labels), and it also offers the text head's emotion distribution for that line (emotions
persist and answer each other in a conversation). A learned "no context" slot lets the module
ignore the window. The output is a correction added to the single-utterance logits; its last layer
starts at zero, so an untrained module reproduces the single-utterance model exactly.

Only the past is ever read: :func:`past_windows` builds the windows of a dialogue from the lines
*before* each one, and the stream's window (``stream/stages/context.py``) holds only lines that were
already classified.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = [
    "RELATION_OTHER",
    "RELATION_SAME",
    "RELATION_UNKNOWN",
    "ContextConfig",
    "AttentionContext",
    "ContextModule",
    "PastContext",
    "past_windows",
    "TransitionContext",
    "relation",
]

RELATION_OTHER, RELATION_SAME, RELATION_UNKNOWN = 0, 1, 2


def relation(speaker: str, past_speaker: str) -> int:
    """Same / other / unknown (either side has no speaker label)."""
    if not speaker or not past_speaker:
        return RELATION_UNKNOWN
    return RELATION_SAME if speaker == past_speaker else RELATION_OTHER


@dataclass(frozen=True, slots=True)
class ContextConfig:
    """The context module's shape; stored in the checkpoint's model config."""

    max_utterances: int = 8  # longest window the module was built for (position embeddings)
    dim: int = 128
    dropout: float = 0.2
    # "attention": the current line's embedding attends over the past lines' embeddings and emotion
    # distributions; "transition": a small emotion-transition model over the past lines' emotion
    # distributions only (by speaker relation and distance; ~200 parameters, fits a few hundred lines).
    kind: str = "attention"

    def __post_init__(self) -> None:
        if self.kind not in ("attention", "transition"):
            raise ValueError(f"context kind must be 'attention' or 'transition', got {self.kind!r}")
        if not 1 <= self.max_utterances <= 64:
            raise ValueError(f"context max_utterances must lie in [1, 64], got {self.max_utterances}")
        if self.dim < 8:
            raise ValueError(f"context dim must be >= 8, got {self.dim}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ContextConfig:
        return cls(**data)


@dataclass(frozen=True, slots=True)
class PastContext:
    """The windows of a batch: row i's previous utterances, most recent LAST, left-padded.

    ``pooled`` (B, N, W) float; ``mask`` (B, N) bool, True where a past utterance exists;
    ``relation`` (B, N) long, one of ``RELATION_*``.
    """

    pooled: torch.Tensor
    mask: torch.Tensor
    relation: torch.Tensor

    @classmethod
    def stack(
        cls, windows: Sequence[Sequence[tuple[torch.Tensor, int]]], width: int, *, size: int | None = None
    ) -> PastContext:
        """Pack per-row windows of ``(pooled, relation)`` (oldest first) into padded tensors."""
        n = size if size is not None else max((len(w) for w in windows), default=0)
        n = max(n, 1)
        pooled = torch.zeros(len(windows), n, width)
        mask = torch.zeros(len(windows), n, dtype=torch.bool)
        rel = torch.full((len(windows), n), RELATION_UNKNOWN, dtype=torch.long)
        for i, full in enumerate(windows):
            window = list(full)[-n:]
            for j, (vec, r) in enumerate(window):
                k = n - len(window) + j
                pooled[i, k] = vec
                mask[i, k] = True
                rel[i, k] = r
        return cls(pooled, mask, rel)

    def to(self, device: torch.device | str) -> PastContext:
        return PastContext(self.pooled.to(device), self.mask.to(device), self.relation.to(device))

    def last(self, n: int) -> PastContext:
        """The ``n`` most recent positions of every window (all of them when there are fewer)."""
        return PastContext(self.pooled[:, -n:], self.mask[:, -n:], self.relation[:, -n:])


def ContextModule(config: ContextConfig, width: int, n_labels: int) -> nn.Module:  # noqa: N802 - a factory
    """The context module of ``config.kind``; ``forward(pooled, past, text_head)`` -> corrected logits."""
    if config.kind == "transition":
        return TransitionContext(config, n_labels)
    return AttentionContext(config, width, n_labels)


class TransitionContext(nn.Module):
    """logits = t * base + sum over relations r of M_r @ (weighted mean of the past lines' emotion
    distributions of relation r) + b, the weights learned per distance and relation. ``M`` and ``b``
    start at zero and ``t`` at one, so an untrained module is the single-utterance model."""

    def __init__(self, config: ContextConfig, n_labels: int) -> None:
        super().__init__()
        self.config = config
        self.distance_logit = nn.Parameter(torch.zeros(3, config.max_utterances))
        self.mix = nn.Parameter(torch.zeros(3, n_labels, n_labels))
        self.bias = nn.Parameter(torch.zeros(n_labels))
        self.log_temperature = nn.Parameter(torch.zeros(()))

    def forward(
        self, pooled: torch.Tensor, past: PastContext, text_head: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        base = text_head(pooled)
        recent = past.last(self.config.max_utterances)
        b, n_use, _ = recent.pooled.shape
        probs = text_head(recent.pooled.to(pooled.dtype)).softmax(-1).detach()  # (B, N, K)
        mask, rel = recent.mask, recent.relation
        distance = torch.arange(n_use - 1, -1, -1, device=pooled.device)
        weight = self.distance_logit[rel, distance.unsqueeze(0).expand(b, -1)].exp() * mask  # (B, N)
        out = self.log_temperature.exp() * base + self.bias
        for r in range(3):
            w = weight * (rel == r)
            total = w.sum(1, keepdim=True)
            summary = (w.unsqueeze(-1) * probs).sum(1) / total.clamp(min=1e-6)  # (B, K)
            out = out + (total > 0) * (summary @ self.mix[r].T)
        return out


class AttentionContext(nn.Module):
    """Attention from the current line over its past window; returns corrected logits."""

    def __init__(self, config: ContextConfig, width: int, n_labels: int) -> None:
        super().__init__()
        self.config = config
        d = config.dim
        self.query = nn.Linear(width, d)
        self.key = nn.Linear(width + n_labels, d)
        self.value = nn.Linear(width + n_labels, d)
        self.relation_emb = nn.Embedding(3, d)
        self.position_emb = nn.Embedding(config.max_utterances, d)  # 0 = the line just before
        self.null_key = nn.Parameter(torch.zeros(d))
        self.null_value = nn.Parameter(torch.zeros(d))
        self.drop = nn.Dropout(config.dropout)
        self.mix = nn.Sequential(nn.Linear(2 * d, d), nn.GELU(), nn.Dropout(config.dropout))
        self.out = nn.Linear(d, n_labels)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(
        self, pooled: torch.Tensor, past: PastContext, text_head: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        """``text_head``: the frozen single-utterance text logits of a pooled embedding."""
        base = text_head(pooled)
        recent = past.last(self.config.max_utterances)
        b, n_use, _ = recent.pooled.shape
        past_vecs = recent.pooled.to(pooled.dtype)
        mask, rel = recent.mask, recent.relation
        past_probs = text_head(past_vecs).softmax(-1).detach()  # the text head is not trained here
        items = torch.cat([self.drop(past_vecs), past_probs], dim=-1)
        distance = torch.arange(n_use - 1, -1, -1, device=pooled.device).clamp(max=self.config.max_utterances - 1)
        tags = self.relation_emb(rel) + self.position_emb(distance).unsqueeze(0)
        keys = self.key(items) + tags
        values = self.value(items) + tags
        d = self.config.dim
        keys = torch.cat([self.null_key.expand(b, 1, d), keys], dim=1)
        values = torch.cat([self.null_value.expand(b, 1, d), values], dim=1)
        valid = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=mask.device), mask], dim=1)
        q = self.query(self.drop(pooled))
        scores = (keys @ q.unsqueeze(-1)).squeeze(-1) / math.sqrt(d)
        scores = scores.masked_fill(~valid, float("-inf"))
        attended = (scores.softmax(-1).unsqueeze(-1) * values).sum(1)
        correction: torch.Tensor = self.out(self.mix(torch.cat([q, attended], dim=-1)))
        return base + correction


def past_windows(
    dialogue_ids: Sequence[str], speakers: Sequence[str], max_utterances: int
) -> list[list[tuple[int, int]]]:
    """For rows in conversation order, each row's window: ``(row index, relation)`` of up to
    ``max_utterances`` previous rows of the same dialogue, oldest first. Never a later row."""
    out: list[list[tuple[int, int]]] = []
    history: dict[str, list[int]] = {}
    for i, (dia, spk) in enumerate(zip(dialogue_ids, speakers, strict=True)):
        prev = history.setdefault(dia, [])
        window = prev[-max_utterances:] if max_utterances > 0 else []
        out.append([(j, relation(spk, speakers[j])) for j in window])
        prev.append(i)
    return out
