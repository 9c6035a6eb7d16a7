"""Dynamic int8 for the text encoder on CPUs without native bfloat16 (``[classifier] text_dtype = "int8"``).

Plain dynamic quantisation (``torch.ao``'s ``quantize_dynamic``: int8 weights, each call's input mapped
to 8 bits by its one smallest and largest value) ruins a sentence encoder. In MPNet a token or two of
every line carries "massive activations": inputs of 50-100 to a feed-forward output layer where every
other token stays under ~3. One range for all tokens leaves the ordinary ones a handful of levels (MELD
dev weighted-F1 of the MPNet option fell from 0.60 to 0.42). So every Linear here keeps int8 weights
per output channel, and its input is quantised **per token** in the same single call: each token is
first mapped onto [-1, 1] by its own centre ``c`` and half-range ``r``, and the output is mapped back,
``y = r * (Wq x' ) + c * (Wq 1) + b``, exact algebra for a Linear (``Wq 1``, the row sums of the int8
weights, is computed once). That costs two elementwise passes, not extra matrix calls: measured in the
README ("The classifier").

``torch.ao.quantization`` is deprecated in favour of torchao, but it is what ships inside torch: it
needs no other package, and its x86 kernels are the ones measured here.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

__all__ = ["TokenScaledLinear", "quantize_int8"]


class TokenScaledLinear(nn.Module):
    """A dynamically quantised Linear whose input is quantised per token (each token's own range)."""

    bias: torch.Tensor | None
    row_sums: torch.Tensor

    def __init__(self, inner: Any) -> None:
        """``inner``: a ``torch.ao.nn.quantized.dynamic.Linear``."""
        super().__init__()
        self.inner = inner
        bias = inner.bias()
        self.register_buffer("bias", bias.detach().clone() if bias is not None else None)
        # Wq @ 1: what a constant shift of the input adds to the output, through the int8 weights.
        self.register_buffer("row_sums", inner.weight().dequantize().sum(dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hi = x.amax(dim=-1, keepdim=True)
        lo = x.amin(dim=-1, keepdim=True)
        centre = (hi + lo) / 2
        half = ((hi - lo) / 2).clamp(min=1e-6)
        y: torch.Tensor = self.inner((x - centre) / half)  # every token spans [-1, 1]: one range fits them all
        if self.bias is not None:
            y = y - self.bias
        y = y * half + centre * self.row_sums
        return y + self.bias if self.bias is not None else y


def quantize_int8(encoder: nn.Module) -> int:
    """Replace every Linear of ``encoder`` (on the CPU) by its int8 form, in place; returns how many.

    Embeddings and LayerNorms stay float32, as do inputs and outputs, so the pooled encodings, the
    context module and the heads are unchanged."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    if next(encoder.parameters()).device.type != "cpu":
        raise ValueError("int8 text encoding runs on the CPU only; use float32 or bfloat16 on CUDA")
    spec = {name: per_channel_dynamic_qconfig for name, m in encoder.named_modules() if isinstance(m, nn.Linear)}
    with warnings.catch_warnings():  # torch.ao's deprecation notices, once per layer
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        quantize_dynamic(encoder, spec, inplace=True)  # type: ignore[no-untyped-call]
    replaced = 0
    for name, module in list(encoder.named_modules()):
        if isinstance(module, DynamicLinear):
            parent, _, attr = name.rpartition(".")
            setattr(encoder.get_submodule(parent) if parent else encoder, attr, TokenScaledLinear(module))
            replaced += 1
    return replaced
