"""``device = "auto"`` resolution shared by Whisper, the classifier and training."""

from __future__ import annotations

import torch

from training.settings import ConfigError

__all__ = ["ctranslate2_device", "resolve_device"]


def ctranslate2_device(spec: str) -> tuple[str, int]:
    """``spec`` for CTranslate2 (Whisper, the Whisper audio encoder): ``("cpu" | "cuda", device index)``.

    ``"auto"`` is CUDA device 0 when CTranslate2 sees one, else the CPU; ``"cuda:N"`` keeps its index.
    """
    if spec == "auto":
        try:
            import ctranslate2

            return ("cuda", 0) if ctranslate2.get_cuda_device_count() > 0 else ("cpu", 0)
        except Exception:  # a CPU-only CTranslate2 build
            return "cpu", 0
    if spec == "cpu":
        return "cpu", 0
    if spec == "cuda" or spec.startswith("cuda:"):
        index = spec.partition(":")[2]
        if index and not index.isdigit():
            raise ConfigError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N")
        return "cuda", int(index or 0)
    raise ConfigError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N")


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
