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
    # Past lines read inside the text encoder's input (EmoBERTa's design): each line is encoded as a pair,
    # the line first, then up to this many previous lines of its dialogue or stream, speaker-tagged, cut from
    # the oldest end to max_pair_tokens; the encoding is pooled over the line's own tokens. 0 = the line alone.
    text_past_lines: int = 0
    max_pair_tokens: int = 128
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
        if not 0 <= self.text_past_lines <= 16:
            raise ValueError(f"text_past_lines must lie in [0, 16], got {self.text_past_lines!r}")
        if self.text_past_lines and self.text_head != "linear":
            raise ValueError("text_past_lines needs text_head = 'linear' (a fine-tuned text branch)")
        if self.text_past_lines and self.max_pair_tokens < self.max_text_tokens + 8:
            raise ValueError(f"max_pair_tokens ({self.max_pair_tokens}) must leave room for past lines after "
                             f"the line's own max_text_tokens ({self.max_text_tokens})")  # fmt: skip

    @property
    def uses_text(self) -> bool:
        return self.mode in ("text", "fusion")

    @property
    def uses_audio(self) -> bool:
        return self.mode in ("audio", "fusion")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["labels"] = list(self.labels)
        if not self.text_past_lines:  # a checkpoint without past lines stays readable by earlier versions
            del d["text_past_lines"], d["max_pair_tokens"]
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown model config keys: {', '.join(unknown)}")
        return cls(**{**data, "labels": tuple(data["labels"])})
