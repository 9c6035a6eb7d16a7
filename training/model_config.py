"""``ModelConfig``: the classifier's architecture, stored in each checkpoint so the model rebuilds from it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FUSION_RULES", "MODES", "TEXT_HEADS", "ModelConfig"]

MODES = ("text", "audio", "fusion")
FUSION_RULES = ("learned", "pool")
TEXT_HEADS = ("mlp", "linear")


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """The architecture; stored in the checkpoint so the model rebuilds from the file alone."""

    labels: tuple[str, ...]
    mode: str = "fusion"  # "text" | "audio" | "fusion"
    text_encoder: str = "all-MiniLM-L6-v2"
    text_trainable_layers: int = 2
    max_text_tokens: int = 64
    audio_dim: int = 0  # length of the feature vector from training.features
    audio_kind: str = "whisper"  # "whisper" (MLP over pooled encoder states) | "logmel-cnn"
    hidden_dim: int = 256
    dropout: float = 0.3
    fusion: str = "learned"  # "learned" | "pool" (see training.model's docstring)
    audio_weight: float = 0.3  # w of the "pool" rule
    # "mlp": text rows go through text_proj + the shared head; "linear": the text branch has its own
    # linear head over the pooled encoder output (a fully fine-tuned encoder; see training.text_branch).
    text_head: str = "mlp"
    # Past-context module over the pooled embeddings of previous utterances ({} = none); see
    # training.context.ContextConfig.
    context: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.mode != "text" and self.audio_dim <= 0:
            raise ValueError(f"mode {self.mode!r} needs audio_dim > 0")
        if len(self.labels) < 2:
            raise ValueError("at least two labels are needed")
        if self.fusion not in FUSION_RULES:
            raise ValueError(f"fusion must be one of {FUSION_RULES}, got {self.fusion!r}")
        if not 0.0 <= self.audio_weight <= 1.0:
            raise ValueError(f"audio_weight must lie in [0, 1], got {self.audio_weight!r}")
        if self.text_head not in TEXT_HEADS:
            raise ValueError(f"text_head must be one of {TEXT_HEADS}, got {self.text_head!r}")

    @property
    def uses_text(self) -> bool:
        return self.mode in ("text", "fusion")

    @property
    def uses_audio(self) -> bool:
        return self.mode in ("audio", "fusion")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["labels"] = list(self.labels)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown model config keys: {', '.join(unknown)}")
        return cls(**{**data, "labels": tuple(data["labels"])})
