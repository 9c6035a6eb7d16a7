"""``device = "auto"`` resolution shared by Whisper, the classifier and training."""

from __future__ import annotations

import torch

from training.settings import ConfigError

__all__ = ["resolve_device"]


def resolve_device(spec: str) -> torch.device:
    """``"auto"``: the first CUDA device when one is usable, else the CPU.

    ``"cuda"``/``"cuda:N"`` fail clearly when CUDA is not available instead of deep inside torch.
    """
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {spec!r} was asked for, but CUDA is not available here; use 'auto' or 'cpu'")
        dev = torch.device(spec)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {spec!r}: only {torch.cuda.device_count()} CUDA device(s) are present")
        return dev
    raise ConfigError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N")
