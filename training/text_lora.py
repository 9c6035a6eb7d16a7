"""LoRA adapters (``peft``) over a text encoder's trained layers, merged back into plain weights.

Instead of updating a layer's weight matrices, training learns a low-rank change ``B @ A`` (rank ``r``)
beside each of them; the matrices themselves, the biases and the layer norms stay frozen. After
training, :func:`merge_lora` folds every change into its matrix and removes the adapters, so the
encoder is a plain transformers model again: the checkpoint stores and the service runs exactly what a
full fine-tune gives them, at the same cost per utterance (``emostream-train text --lora-rank R``).
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

from torch import nn

from training.model import _encoder_layers

__all__ = ["PEFT_MISSING", "add_lora", "merge_lora", "peft_installed"]

logger = logging.getLogger(__name__)

PEFT_MISSING = "LoRA adapters need peft, an optional extra: pip install 'emostream[lora]'"


def peft_installed() -> bool:
    """Whether ``peft`` (the ``emostream[lora]`` extra) can be imported, without importing it."""
    return importlib.util.find_spec("peft") is not None


def _linear_names(encoder: nn.Module, first_layer: int) -> list[str]:
    """Every Linear inside the transformer layers numbered ``first_layer`` and up (not the pooler)."""
    layers = list(_encoder_layers(encoder))[first_layer:]
    inside = {id(m) for layer in layers for m in layer.modules() if isinstance(m, nn.Linear)}
    return [name for name, module in encoder.named_modules() if id(module) in inside]


def add_lora(encoder: nn.Module, first_layer: int, rank: int, alpha: int | None = None,
             dropout: float = 0.1) -> int:  # fmt: skip
    """Put rank-``rank`` adapters on every Linear of the layers from ``first_layer`` up, and leave only
    the adapters trainable. ``alpha`` defaults to ``2 * rank``. Returns the number of adapter parameters."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError as exc:
        raise ImportError(f"{PEFT_MISSING} ({exc})") from exc
    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    targets = _linear_names(encoder, first_layer)
    if not targets:
        raise ValueError(f"{type(encoder).__name__} has no Linear layers in encoder layers >= {first_layer}")
    config = LoraConfig(r=rank, lora_alpha=alpha if alpha is not None else 2 * rank, lora_dropout=dropout,
                        target_modules=targets, bias="none")  # fmt: skip
    inject_adapter_in_model(config, encoder)
    n = 0
    for name, p in encoder.named_parameters():
        p.requires_grad_("lora_" in name)
        n += p.numel() if p.requires_grad else 0
    logger.info("LoRA rank %d on %d Linear layers: %d trainable parameters", rank, len(targets), n)
    return n


def merge_lora(encoder: nn.Module) -> int:
    """Fold every adapter into its Linear and put the plain Linear back; returns how many were merged."""
    from peft.tuners.lora import LoraLayer

    merged = 0
    for name, module in list(encoder.named_modules()):
        if not isinstance(module, LoraLayer):
            continue
        module.merge()
        base: Any = module.get_base_layer()
        parent_name, _, child = name.rpartition(".")
        setattr(encoder.get_submodule(parent_name) if parent_name else encoder, child, base)
        merged += 1
    return merged
