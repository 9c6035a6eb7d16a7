"""``device = "auto"`` resolution shared by Whisper, the classifier and training."""

from __future__ import annotations

import torch

from training.settings import TEXT_DTYPES, ConfigError

__all__ = [
    "INT8_AUTO_MIN_PARAMS",
    "ctranslate2_device",
    "dtype_name",
    "native_bf16",
    "resolve_device",
    "resolve_text_dtype",
    "x86_int8",
]

# "auto" runs a text encoder this large in int8 on a CPU without native bf16 (MPNet-base has 110M parameters,
# MiniLM-L6 22M; the small one is faster in float32, where int8's per-token scaling costs more than it saves).
INT8_AUTO_MIN_PARAMS = 50_000_000


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


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX): there bf16 matmuls are faster
    than float32; elsewhere torch emulates them, slower than float32."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def x86_int8() -> bool:
    """Whether torch quantises with its x86 kernels (fbgemm/oneDNN), the ones int8 was measured with; on
    other engines (QNNPACK on ARM) ``"auto"`` keeps float32 rather than run unmeasured kernels."""
    return str(torch.backends.quantized.engine) in ("x86", "fbgemm")


def resolve_text_dtype(spec: str, device: torch.device, *, encoder_params: int = 0) -> torch.dtype:
    """The dtype the text encoder runs in. ``"auto"``: bfloat16 on a CPU with native bf16; on another CPU,
    int8 (``torch.qint8``, :mod:`training.quantize`) for an encoder of ``encoder_params`` >=
    :data:`INT8_AUTO_MIN_PARAMS` (MPNet-base: float32 costs it 100-125 ms per line on two AVX2 cores, int8
    60 ms, MELD dev within 0.003) where torch has its x86 int8 kernels, float32 for a small one (MiniLM
    runs faster in float32 than int8) or elsewhere; float32 on CUDA (the text encoder is a few
    milliseconds there either way). ``"int8"`` is CPU-only."""
    if spec not in TEXT_DTYPES:
        raise ConfigError(f"unknown text dtype {spec!r}; use {', '.join(TEXT_DTYPES)}")
    if spec == "auto":
        if device.type != "cpu":
            return torch.float32
        if native_bf16():
            return torch.bfloat16
        return torch.qint8 if encoder_params >= INT8_AUTO_MIN_PARAMS and x86_int8() else torch.float32
    if spec == "int8":
        if device.type != "cpu":
            raise ConfigError(f"text dtype 'int8' runs on the CPU only, not on {device}; use auto, float32 or bfloat16")
        return torch.qint8
    return torch.bfloat16 if spec == "bfloat16" else torch.float32


def dtype_name(dtype: torch.dtype) -> str:
    """The ``text_dtype`` name of a resolved dtype: ``"float32"``, ``"bfloat16"`` or ``"int8"``."""
    return "int8" if dtype == torch.qint8 else str(dtype).removeprefix("torch.")
