"""``emostream-train`` with the frozen text encoder's own dropout off, for the torchrun test.

The encoder's dropout masks are drawn per process share, so they are the one thing a data-parallel
run cannot reproduce; with them off, 2 processes must give the single-process result up to
floating-point summation order. Everything else is ``training.cli.main`` as shipped.
"""

from __future__ import annotations

import sys

from training.cli import main
from training.model import FusionClassifier

_train = FusionClassifier.train


def _train_without_encoder_dropout(self: FusionClassifier, mode: bool = True) -> FusionClassifier:
    _train(self, mode)
    encoder = getattr(self, "text_encoder", None)
    if encoder is not None:
        encoder.eval()
    return self


if __name__ == "__main__":
    FusionClassifier.train = _train_without_encoder_dropout  # type: ignore[method-assign,assignment]
    sys.exit(main())
