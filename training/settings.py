"""Strict TOML -> frozen dataclass loading, and the ``[training.*]`` settings.

The service (``stream.config``) and the trainer share this loader so that an unknown key, a value
of the wrong type or a value out of range fails the same way everywhere: with a :class:`ConfigError`
that names the dotted key and what is allowed.

A field's allowed range is declared next to it::

    lr: float = field(default=3e-5, metadata=bounds(0.0, 1.0, low_open=True))
    device: str = field(default="auto", metadata=choices("auto", "cpu", "cuda"))
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "DEVICE",
    "SERVICE_SECTIONS",
    "TEXT_DTYPES",
    "ConfigError",
    "TrainingConfig",
    "bounds",
    "choices",
    "load_section",
    "load_training_config",
    "read_toml",
]

T = TypeVar("T")

# The sections ``stream.config`` validates (the trainer only accepts their names; a test keeps the two equal).
SERVICE_SECTIONS = frozenset({"audio", "vad", "asr", "classifier", "speakers", "server", "log", "bus"})


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type or out of range."""


def bounds(
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> dict[str, Any]:
    """Field metadata: the value must lie in ``[low, high]`` (or open at either end)."""
    return {"bounds": (low, high, low_open, high_open)}


def choices(*allowed: str, pattern_ok: str | None = None) -> dict[str, Any]:
    """Field metadata: the value must be one of ``allowed`` (or start with ``pattern_ok``)."""
    return {"choices": allowed, "prefix_ok": pattern_ok}


def _describe_range(meta: Mapping[str, Any]) -> str:
    low, high, low_open, high_open = meta["bounds"]
    left = "(" if low_open else "["
    right = ")" if high_open else "]"
    lo = "-inf" if low is None else repr(low)
    hi = "inf" if high is None else repr(high)
    return f"{left}{lo}, {hi}{right}"


def _check_range(key: str, value: float, meta: Mapping[str, Any]) -> None:
    low, high, low_open, high_open = meta["bounds"]
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key} = {value!r} is not finite; allowed range {_describe_range(meta)}")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        raise ConfigError(f"{key} = {value!r} is out of range; allowed range {_describe_range(meta)}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(key: str, value: Any, tp: Any) -> Any:  # noqa: PLR0912 - one branch per annotation kind
    """Check ``value`` against the annotation ``tp``; ints are accepted where floats are expected."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        members = typing.get_args(tp)
        if value is None and type(None) in members:
            return None
        errors = []
        for member in members:
            if member is type(None):
                continue
            try:
                return _coerce(key, value, member)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key}: unsupported value {value!r}")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key} must be a list, got {type(value).__name__} {value!r}")
        item_tp = args[0] if args else Any
        return tuple(_coerce(f"{key}[{i}]", v, item_tp) for i, v in enumerate(value))
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {type(value).__name__} {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key} must be a number, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {type(value).__name__} {value!r}")
        return value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, Mapping):
            raise ConfigError(f"[{key}] must be a table, got {type(value).__name__}")
        return load_section(tp, value, key)
    raise ConfigError(f"{key}: unsupported type {_type_name(tp)}")


def load_section(cls: type[T], table: Mapping[str, Any], prefix: str) -> T:
    """Build the frozen dataclass ``cls`` from ``table``, rejecting unknown keys and bad values.

    ``prefix`` is the dotted name of the table (``"vad"``, ``"training.optim"``) used in messages.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - set(fields))
    if unknown:
        name = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ConfigError(
            f"unknown key {name!r}; allowed keys in [{prefix or 'top level'}]: {', '.join(sorted(fields))}"
        )
    values: dict[str, Any] = {}
    for name, value in table.items():
        key = f"{prefix}.{name}" if prefix else name
        fld = fields[name]
        coerced = _coerce(key, value, hints[name])
        if "bounds" in fld.metadata and coerced is not None:
            items = coerced if isinstance(coerced, tuple) else (coerced,)
            for item in items:
                _check_range(key, item, fld.metadata)
        if "choices" in fld.metadata and coerced is not None:
            allowed = fld.metadata["choices"]
            prefix_ok = fld.metadata.get("prefix_ok")
            if coerced not in allowed and not (prefix_ok and str(coerced).startswith(prefix_ok)):
                extra = f" or {prefix_ok}<...>" if prefix_ok else ""
                raise ConfigError(f"{key} = {coerced!r} is not allowed; choose one of {', '.join(allowed)}{extra}")
        values[name] = coerced
    try:
        return cls(**values)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[{prefix}]: {exc}") from exc


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file, turning I/O and syntax errors into :class:`ConfigError`."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc


# --------------------------------------------------------------------------------------------
# [training.*]
# --------------------------------------------------------------------------------------------

# ``device`` keys everywhere: auto, cpu, cuda or cuda:N (resolved by training.device).
DEVICE = choices("auto", "cpu", "cuda", pattern_ok="cuda:")
# The text encoder's compute dtype ("auto": bfloat16 on a CPU that computes it natively; training.device;
# "int8": dynamic int8 on the CPU, training.quantize).
TEXT_DTYPES = ("auto", "float32", "bfloat16", "int8")


@dataclass(frozen=True, slots=True)
class TrainingDataConfig:
    meld_dir: str = "../shared/data/meld"
    meld_raw_dir: str = ""  # MELD.Raw folder with train_splits/ ...; empty = text only
    ravdess_dir: str = "../shared/data/ravdess"
    emodb_dir: str = "../shared/data/emodb"
    goemotions_dir: str = "../shared/data/goemotions_ekman"
    use_goemotions: bool = False
    calm_as_neutral: bool = True  # RAVDESS calm -> neutral (False: drop calm clips)
    ravdess_test_actors: tuple[int, ...] = (17, 18, 19, 20)
    emodb_test_speakers: tuple[int, ...] = (15, 16)
    ravdess_dev_actors: tuple[int, ...] = (15, 16)  # early stopping for the audio branch; never tested on
    emodb_dev_speakers: tuple[int, ...] = (14,)
    audio_corpora: tuple[str, ...] = ("ravdess", "emodb")  # extra audio-only corpora ([] = none)
    cache_dir: str = ""  # feature cache; empty = the user cache dir
    max_train_samples: int = field(default=0, metadata=bounds(0))  # 0 = all


@dataclass(frozen=True, slots=True)
class TrainingModelConfig:
    text_encoder: str = "all-MiniLM-L6-v2"
    text_trainable_layers: int = field(default=2, metadata=bounds(0, 48))
    max_text_tokens: int = field(default=64, metadata=bounds(8, 512))
    audio_encoder: str = field(default="whisper", metadata=choices("whisper", "logmel-cnn"))
    whisper_model: str = "base"
    prosody: bool = True
    trim_silence: bool = True  # audio features skip leading/trailing silence
    hidden_dim: int = field(default=256, metadata=bounds(8, 4096))
    dropout: float = field(default=0.3, metadata=bounds(0.0, 1.0, high_open=True))
    modality_dropout: float = field(default=0.3, metadata=bounds(0.0, 1.0, high_open=True))
    # Fusion without paired training rows mixes the branch predictions: (1 - w) p_text + w p_audio.
    pool_audio_weight: float = field(default=0.3, metadata=bounds(0.0, 1.0))


@dataclass(frozen=True, slots=True)
class TrainingOptimConfig:
    mode: str = field(default="fusion", metadata=choices("text", "audio", "fusion"))
    epochs: int = field(default=6, metadata=bounds(1, 1000))
    batch_size: int = field(default=32, metadata=bounds(1, 4096))
    lr_encoder: float = field(default=5e-5, metadata=bounds(0.0, 1.0, low_open=True))
    lr_head: float = field(default=1e-3, metadata=bounds(0.0, 1.0, low_open=True))
    weight_decay: float = field(default=0.01, metadata=bounds(0.0, 1.0))
    warmup_ratio: float = field(default=0.1, metadata=bounds(0.0, 1.0))
    patience_epochs: int = field(default=2, metadata=bounds(1, 1000))
    class_weighted_loss: bool = True
    class_weight_power: float = field(default=0.5, metadata=bounds(0.0, 2.0))  # (N/(K*n_c))**power
    audio_oversample: int = field(default=0, metadata=bounds(0, 100))  # 0 = auto; repeats of audio-only rows
    seed: int = field(default=1234, metadata=bounds(0))
    device: str = field(default="auto", metadata=DEVICE)
    num_threads: int = field(default=0, metadata=bounds(0, 1024))  # 0 = torch default


@dataclass(frozen=True, slots=True)
class TrainingConfig:
    data: TrainingDataConfig = TrainingDataConfig()
    model: TrainingModelConfig = TrainingModelConfig()
    optim: TrainingOptimConfig = TrainingOptimConfig()
    runs_dir: str = "runs"


def load_training_config(path: str | Path | None) -> TrainingConfig:
    """Load ``[training.*]`` from ``path`` (``None``: defaults).

    The service's own sections are validated by ``stream.config``; here only their names are
    accepted so that one ``config.toml`` serves both programs.
    """
    if path is None:
        return TrainingConfig()
    raw = read_toml(path)
    unknown = sorted(set(raw) - SERVICE_SECTIONS - {"training"})
    if unknown:
        raise ConfigError(
            f"unknown section [{unknown[0]}]; allowed: {', '.join(sorted(SERVICE_SECTIONS | {'training'}))}"
        )
    return load_section(TrainingConfig, raw.get("training", {}), "training")
