"""A transformers encoder run in two parts: the frozen lower layers once, the trained top layers each step.

Fine-tuning only the top ``k`` layers of a larger encoder (all-mpnet-base-v2: 12 layers, 110M
parameters) costs, per epoch, what those ``k`` layers cost, if the output of the frozen layers below
them is computed once and kept (:class:`LowerCache`): 9 of MPNet's 12 layers run once per line
instead of once per line per epoch. The two halves chained give the encoder's own output
(``tests/training/test_text_split.py`` checks it against the full forward for MiniLM and MPNet).

Works for encoders whose layers take ``(hidden, attention_mask)`` (BERT, MiniLM, RoBERTa) or
``(hidden, attention_mask, position_bias)`` (MPNet's relative position bias, computed once per
batch by its encoder).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["LowerCache", "lower_states", "upper_states"]

logger = logging.getLogger(__name__)

Tokenize = Callable[[list[str], torch.device], dict[str, torch.Tensor]]


def _layers(encoder: Any) -> nn.ModuleList:
    layers = encoder.encoder.layer
    if not isinstance(layers, nn.ModuleList):
        raise TypeError(f"{type(encoder).__name__} has no encoder.layer list")
    return layers


def _run(encoder: Any, hidden: torch.Tensor, attention_mask: torch.Tensor, layers: Sequence[nn.Module],
         ) -> torch.Tensor:  # fmt: skip
    from transformers.masking_utils import create_bidirectional_mask

    mask = create_bidirectional_mask(config=encoder.config, inputs_embeds=hidden, attention_mask=attention_mask)
    extra: tuple[torch.Tensor, ...] = ()
    if hasattr(encoder.encoder, "compute_position_bias"):  # MPNet: one relative position bias for all layers
        extra = (encoder.encoder.compute_position_bias(hidden),)
    for layer in layers:
        out = layer(hidden, mask, *extra)
        hidden = out[0] if isinstance(out, tuple) else out
    return hidden


@torch.no_grad()
def lower_states(encoder: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, n_lower: int,
                 ) -> torch.Tensor:  # fmt: skip
    """The hidden states after the embeddings and the first ``n_lower`` layers, ``(B, T, W)``."""
    hidden = encoder.embeddings(input_ids=input_ids)
    return _run(encoder, hidden, attention_mask, list(_layers(encoder))[:n_lower])


def upper_states(encoder: Any, states: torch.Tensor, attention_mask: torch.Tensor, n_lower: int,
                 ) -> torch.Tensor:  # fmt: skip
    """The encoder's last hidden state from :func:`lower_states`' output (the layers above ``n_lower``)."""
    return _run(encoder, states, attention_mask, list(_layers(encoder))[n_lower:])


class LowerCache:
    """Lower-layer states of many texts, float16, trimmed to each text's tokens; padded into batches."""

    def __init__(self, states: list[torch.Tensor]) -> None:
        self.states = states

    @classmethod
    def build(cls, encoder: Any, tokenize: Tokenize, texts: Sequence[str], n_lower: int,
              device: torch.device, batch_size: int = 64) -> LowerCache:  # fmt: skip
        """``tokenize(texts, device)`` -> ``{"input_ids", "attention_mask"}`` (the model's own tokenizer)."""
        was_training = encoder.training
        encoder.eval()
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        states: list[torch.Tensor | None] = [None] * len(texts)
        started = time.monotonic()
        for k, s in enumerate(range(0, len(order), batch_size)):
            idx = order[s : s + batch_size]
            enc = tokenize([texts[i] for i in idx], device)
            hidden = lower_states(encoder, enc["input_ids"], enc["attention_mask"], n_lower)
            lengths = enc["attention_mask"].sum(1).tolist()
            for j, i in enumerate(idx):
                states[i] = hidden[j, : int(lengths[j])].to(torch.float16).cpu().clone()
            if k % 50 == 49:
                logger.info("lower layers: %d of %d lines (%.0f s)", s + len(idx), len(texts),
                            time.monotonic() - started)  # fmt: skip
        encoder.train(was_training)
        return cls([s for s in states if s is not None])

    def batch(self, rows: Sequence[int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded states ``(B, T, W)`` float32 and their attention mask ``(B, T)`` for ``rows``."""
        seqs = [self.states[r] for r in rows]
        width, longest = seqs[0].shape[1], max(s.shape[0] for s in seqs)
        states = torch.zeros(len(seqs), longest, width)
        mask = torch.zeros(len(seqs), longest, dtype=torch.long)
        for i, s in enumerate(seqs):
            states[i, : s.shape[0]] = s.float()
            mask[i, : s.shape[0]] = 1
        return states.to(device), mask.to(device)
