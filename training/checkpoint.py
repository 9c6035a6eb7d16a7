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


TEXT_ENCODER_DTYPES = ("float32", "float16", "int8", "lowrank")
_U, _V = ".lowrank_u", ".lowrank_v"  # key suffixes of a lowrank matrix's two factors


def packaged_text_state(model: FusionClassifier) -> dict[str, torch.Tensor]:
    """The packaged encoder's own values of the tensors ``model`` trains (what ``lowrank`` stores the
    change from), read again from the packaged weights: training has overwritten them in ``model``."""
    from transformers import AutoModel

    assert model.text_model is not None
    packaged = AutoModel.from_pretrained(model.text_model.path).state_dict()
    trained = [k for k in model.trained_state_dict() if k.startswith("text_encoder.")]
    return {k: packaged[k.removeprefix("text_encoder.")] for k in trained}


def _low_rank(delta: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Factors ``(u, v)``, float16, with ``u @ v`` the best rank-``rank`` approximation of ``delta``; the
    singular values are split evenly between them, which keeps both in float16's range."""
    u, s, vh = torch.linalg.svd(delta.float(), full_matrices=False)
    root = s[:rank].sqrt()
    return (u[:, :rank] * root).half(), (root[:, None] * vh[:rank]).half()


def _known_factors(key: str, value: torch.Tensor, base: torch.Tensor, known: dict[str, torch.Tensor],
                   ) -> tuple[torch.Tensor, torch.Tensor] | None:  # fmt: skip
    """``known``'s factors of ``key`` when ``value`` is still what they give (to float32 rounding): storing
    them again instead of factorising anew keeps a stored checkpoint's weights those that were evaluated."""
    u, v = known.get(key + _U), known.get(key + _V)
    if u is None or v is None or not torch.allclose(value.float(), base.float() + u.float() @ v.float(),
                                                    rtol=0.0, atol=1e-6):  # fmt: skip
        return None
    return u, v


def _stored_text(state: dict[str, torch.Tensor], dtype: str, base: dict[str, torch.Tensor] | None = None,
                 rank: int = 0, known: dict[str, torch.Tensor] | None = None,
                 ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:  # fmt: skip
    """The state with its trained text-encoder tensors stored as ``dtype``, and the int8 row scales.

    ``int8``: each weight matrix is stored as symmetric int8 per output row (its scale in float32),
    vectors (biases, layer norms) as float16. The same rounding that dynamic int8 inference applies,
    at a quarter of the float32 size. ``lowrank``: each weight matrix is stored as its change from the
    packaged encoder's (``base``) in rank-``rank`` float16 factors (keys ``<name>.lowrank_u`` and
    ``.lowrank_v``), vectors as they are: what LoRA training changes is exactly such a product, so a
    rank-16 adapter over every layer of MPNet-base takes 5 MB instead of the layers' 340. A matrix that
    ``known`` factors (from the last round trip or load) still give is stored with those factors.
    """
    if dtype not in TEXT_ENCODER_DTYPES:
        raise ValueError(f"text_encoder_dtype must be one of {', '.join(TEXT_ENCODER_DTYPES)}, not {dtype!r}")
    if dtype == "lowrank" and (rank < 1 or base is None):
        raise ValueError("text_encoder_dtype 'lowrank' needs a rank >= 1 and the packaged encoder's weights")
    out, scales = {}, {}
    for key, value in state.items():
        if dtype == "float32" or not key.startswith("text_encoder.") or not value.is_floating_point():
            out[key] = value
        elif dtype == "lowrank":
            assert base is not None
            if value.ndim == 2:
                factors = _known_factors(key, value, base[key], known or {})
                factors = factors or _low_rank(value.float() - base[key].float(), rank)
                out[key + _U], out[key + _V] = factors
            else:
                out[key] = value
        elif dtype == "int8" and value.ndim == 2:
            scale = value.float().abs().amax(dim=1).clamp(min=1e-12) / 127.0
            out[key] = torch.round(value.float() / scale[:, None]).clamp(-127, 127).to(torch.int8)
            scales[key] = scale
        else:
            out[key] = value.half()
    return out, scales


def _lowrank_factors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The lowrank factors in a stored state (what ``FusionClassifier.lowrank_factors`` keeps)."""
    return {k: v for k, v in state.items() if k.endswith((_U, _V))}


def _restored_text(state: dict[str, torch.Tensor], scales: dict[str, torch.Tensor],
                   base: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:  # fmt: skip
    """Undo :func:`_stored_text` (float16 tensors are cast back by ``load_state_dict``); ``lowrank``
    factors are added into ``base``'s own float32 tensors, the packaged encoder's values, which both callers
    own (the model just built, or the packaged weights read again for this): no second copy of every
    changed matrix exists at once, which for MPNet changed in all 12 layers would be 330 MB more at the peak."""
    out = {}
    for key, value in state.items():
        if key.endswith(_V):
            continue
        if key.endswith(_U):
            name = key.removesuffix(_U)
            if base is None or name not in base:
                raise KeyError(f"{name} is stored as a change from the packaged encoder, which lacks it")
            out[name] = base[name].add_(value.float() @ state[name + _V].float())
        else:
            out[key] = value.float() * scales[key][:, None] if key in scales else value
    return out


def round_trip_text(model: FusionClassifier, dtype: str, rank: int = 0) -> None:
    """Give ``model`` the text-encoder weights it will have after being stored as ``dtype`` and read
    back, so that what is evaluated before saving is what a checkpoint load gives."""
    base = packaged_text_state(model) if dtype == "lowrank" else None
    state, scales = _stored_text(model.trained_state_dict(), dtype, base, rank, model.lowrank_factors)
    model.load_state_dict(_restored_text(state, scales, base), strict=False)
    model.lowrank_factors = _lowrank_factors(state)


def write_checkpoint(
    model: FusionClassifier,
    path: str | Path,
    *,
    metrics: dict[str, Any] | None = None,
    trained_on: dict[str, str] | None = None,
    audio_model: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
    text_encoder_dtype: str = "float32",
    text_delta_rank: int = 0,
) -> Path:
    """Write the self-describing checkpoint (atomically) and return its path.

    ``text_encoder_dtype``: how the trained text-encoder layers are stored: ``float16`` (half the
    size) keeps a fully fine-tuned MiniLM under 25 MB, ``int8`` (a quarter) the top three layers of
    MPNet-base. Both are cast back to float32 on load. ``lowrank`` stores the change from the packaged
    encoder at rank ``text_delta_rank`` (LoRA training's own form; any other change loses what lies
    beyond that rank, so round-trip it first, :func:`round_trip_text`).
    """
    packaged = packaged_text_state(model) if text_encoder_dtype == "lowrank" else None
    state, scales = _stored_text(model.trained_state_dict(), text_encoder_dtype, packaged, text_delta_rank,
                                 model.lowrank_factors)  # fmt: skip
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
        "text_delta_rank": text_delta_rank,
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
    try:  # the model was just built from the packaged encoder: its own values are the base of a lowrank change
        state = _restored_text(blob["state_dict"], blob.get("int8_scales") or {}, model.state_dict())
    except KeyError as exc:
        raise CheckpointError(f"checkpoint {path} does not fit its model config: {exc}") from exc
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
    model.lowrank_factors = _lowrank_factors(blob["state_dict"])
    try:
        dev = resolve_device(device)
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from exc
    return model.to(dev).eval()
