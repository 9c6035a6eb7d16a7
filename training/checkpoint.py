"""Checkpoints of :class:`training.model.FusionClassifier`: write, validate and read back.

A checkpoint is self-describing and stores only what training changed: the model config, the
feature config, the trained weights and where its base models came from; the frozen layers of the
packaged text encoder are reloaded from the packaged weights, whose sha256 is checked.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from training.device import resolve_device
from training.features import FEATURE_VERSION, FeatureConfig
from training.model_config import ModelConfig
from training.settings import ConfigError
from training.weights import ModelError

if TYPE_CHECKING:
    from training.model import FusionClassifier

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "CheckpointError",
    "TEXT_ENCODER_DTYPES",
    "load_checkpoint",
    "read_checkpoint",
    "round_trip_text",
    "write_checkpoint",
]

CHECKPOINT_FORMAT = "emostream-fusion-classifier"
CHECKPOINT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, of another format/version, or does not match its base models."""


TEXT_ENCODER_DTYPES = ("float32", "float16", "int8")


def _stored_text(state: dict[str, torch.Tensor], dtype: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The state with its trained text-encoder tensors stored as ``dtype``, and the int8 row scales.

    ``int8``: each weight matrix is stored as symmetric int8 per output row (its scale in float32),
    vectors (biases, layer norms) as float16. The same rounding that dynamic int8 inference applies,
    at a quarter of the float32 size.
    """
    if dtype not in TEXT_ENCODER_DTYPES:
        raise ValueError(f"text_encoder_dtype must be one of {', '.join(TEXT_ENCODER_DTYPES)}, not {dtype!r}")
    out, scales = {}, {}
    for key, value in state.items():
        if dtype == "float32" or not key.startswith("text_encoder.") or not value.is_floating_point():
            out[key] = value
        elif dtype == "int8" and value.ndim == 2:
            scale = value.float().abs().amax(dim=1).clamp(min=1e-12) / 127.0
            out[key] = torch.round(value.float() / scale[:, None]).clamp(-127, 127).to(torch.int8)
            scales[key] = scale
        else:
            out[key] = value.half()
    return out, scales


def _restored_text(state: dict[str, torch.Tensor], scales: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Undo :func:`_stored_text` (float16 tensors are cast back by ``load_state_dict``)."""
    return {k: v.float() * scales[k][:, None] if k in scales else v for k, v in state.items()}


def round_trip_text(model: FusionClassifier, dtype: str) -> None:
    """Give ``model`` the text-encoder weights it will have after being stored as ``dtype`` and read
    back, so that what is evaluated before saving is what a checkpoint load gives."""
    state, scales = _stored_text(model.trained_state_dict(), dtype)
    model.load_state_dict(_restored_text(state, scales), strict=False)


def write_checkpoint(
    model: FusionClassifier,
    path: str | Path,
    *,
    metrics: dict[str, Any] | None = None,
    trained_on: dict[str, str] | None = None,
    audio_model: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
    text_encoder_dtype: str = "float32",
) -> Path:
    """Write the self-describing checkpoint (atomically) and return its path.

    ``text_encoder_dtype``: how the trained text-encoder layers are stored: ``float16`` (half the
    size) keeps a fully fine-tuned MiniLM under 25 MB, ``int8`` (a quarter) the top three layers of
    MPNet-base. Both are cast back to float32 on load.
    """
    state, scales = _stored_text(model.trained_state_dict(), text_encoder_dtype)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = model.base_models()
    if audio_model:
        base["audio"] = dict(audio_model)
    try:
        version = importlib.metadata.version("emostream")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    blob = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "created_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "emostream_version": version,
        "torch_version": str(torch.__version__),
        "labels": list(model.config.labels),
        "model_config": model.config.to_dict(),
        "feature_config": model.feature_config.to_dict() if model.feature_config else None,
        "modalities": [m for m, on in (("text", model.config.uses_text), ("audio", model.config.uses_audio)) if on],
        "base_models": base,
        "trained_on": dict(trained_on or {}),
        "metrics": dict(metrics or {}),
        "extra": dict(extra or {}),
        "state_dict": state,
        "text_encoder_dtype": text_encoder_dtype,
        "int8_scales": scales,
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(blob, tmp)
    tmp.replace(path)
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint's dict, validated for format and version (weights not yet applied)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        raise CheckpointError(f"checkpoint {path} is corrupt or not a torch file: {exc}") from exc
    if not isinstance(blob, dict) or blob.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not an emostream classifier checkpoint (format {CHECKPOINT_FORMAT!r})")
    version = blob.get("format_version")
    if version != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {version}; this emostream reads version {CHECKPOINT_VERSION}"
        )
    for key in ("model_config", "labels", "state_dict", "base_models"):
        if key not in blob:
            raise CheckpointError(f"checkpoint {path} lacks {key!r}")
    return blob


def load_checkpoint(cls: type[FusionClassifier], path: str | Path, device: str = "auto") -> FusionClassifier:
    """Rebuild the model from the checkpoint alone (plus the packaged base models), in eval mode."""
    blob = read_checkpoint(path)
    try:
        config = ModelConfig.from_dict(blob["model_config"])
        fcfg = FeatureConfig.from_dict(blob["feature_config"]) if blob.get("feature_config") else None
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"checkpoint {path} has an incompatible model config: {exc}") from exc
    if fcfg is not None and fcfg.version != FEATURE_VERSION:
        raise CheckpointError(
            f"checkpoint {path} was trained on audio features of version {fcfg.version}; this emostream computes "
            f"version {FEATURE_VERSION}, so its audio branch would see different inputs: retrain it"
        )
    try:
        model = cls(config, fcfg)
    except (ModelError, OSError, ValueError) as exc:
        raise CheckpointError(f"cannot build the model of checkpoint {path}: {exc}") from exc
    stored = blob["base_models"].get("text", {}).get("sha256", "")
    if config.uses_text and stored and model.text_sha256 and stored != model.text_sha256:
        raise CheckpointError(
            f"checkpoint {path} was trained on text encoder {config.text_encoder!r} with sha256 {stored[:12]}..., "
            f"but the installed one has {model.text_sha256[:12]}...; reinstall the pinned package or retrain"
        )
    state = _restored_text(blob["state_dict"], blob.get("int8_scales") or {})
    expected = set(model.trained_state_dict())
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {path} does not fit its model config: missing {sorted(missing)[:3]}, "
            f"unexpected {sorted(unexpected)[:3]}"
        )
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {path} has weights of the wrong shape: {exc}") from exc
    model.checkpoint_meta = {k: v for k, v in blob.items() if k != "state_dict"}
    try:
        dev = resolve_device(device)
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from exc
    return model.to(dev).eval()
