"""``EmotionPredictor``: a checkpoint -> predictions for batches of (text, audio).

A row's text may be ``None``/empty (audio only) and its audio ``None`` (text only); with neither,
:meth:`EmotionPredictor.predict` raises ``ValueError``. Audio features are computed (with the same
:mod:`training.features` code that training used) only when the checkpoint has an audio branch;
:meth:`EmotionPredictor.predict_features` takes precomputed feature vectors instead.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from training.features import AudioFeatureExtractor
from training.model import CheckpointError, FusionClassifier

__all__ = ["EmotionPredictor", "Prediction"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Prediction:
    label: str
    scores: dict[str, float]  # all labels, sum to 1
    modalities: tuple[str, ...]  # subset of ("text", "audio") actually used


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


class EmotionPredictor:
    """Loads a :class:`FusionClassifier` checkpoint and classifies batches of utterances."""

    def __init__(self, model: FusionClassifier, *, name: str = "classifier", batch_size: int = 32) -> None:
        self.model = model.eval()
        self.labels: tuple[str, ...] = tuple(model.config.labels)
        self.uses_text = model.config.uses_text
        self.uses_audio = model.config.uses_audio
        self.batch_size = batch_size
        self.device = next(model.parameters()).device
        self._extractor: AudioFeatureExtractor | None = None
        if self.uses_audio:
            assert model.feature_config is not None
            self._extractor = AudioFeatureExtractor(model.feature_config, device=str(self.device))
            stored = model.checkpoint_meta.get("base_models", {}).get("audio", {}).get("sha256", "")
            if stored and self._extractor.model_sha256 and stored != self._extractor.model_sha256:
                raise CheckpointError(
                    f"checkpoint {name} was trained on audio features of Whisper "
                    f"{model.feature_config.whisper_model!r} "
                    f"sha256 {stored[:12]}..., but the installed one has {self._extractor.model_sha256[:12]}..."
                )
        self.model_ids: dict[str, str] = {"classifier": name}
        if model.text_model is not None:
            self.model_ids["text_encoder"] = model.text_model.model_id
        if self._extractor is not None:
            self.model_ids["audio_encoder"] = self._extractor.model_id or model.config.audio_kind

    @classmethod
    def from_checkpoint(cls, path: str | Path, *, device: str = "auto") -> EmotionPredictor:
        """Load ``path``; raises :class:`training.model.CheckpointError` with a clear message."""
        path = Path(path)
        model = FusionClassifier.from_checkpoint(path, device=device)
        return cls(model, name=f"{path.name} (sha256 {_file_sha256(path)[:12]})")

    @property
    def feature_dim(self) -> int:
        """Length of the audio feature vectors :meth:`predict_features` takes (0 without audio)."""
        return self._extractor.dim if self._extractor is not None else 0

    def audio_features(self, audio: Sequence[np.ndarray]) -> np.ndarray:
        """Feature vectors for float32 mono 16 kHz arrays (the checkpoint's feature config)."""
        if self._extractor is None:
            raise ValueError("this checkpoint has no audio branch")
        return self._extractor.compute(audio)

    def predict(self, texts: Sequence[str | None], audio: Sequence[np.ndarray | None]) -> list[Prediction]:
        """One :class:`Prediction` per row. Audio: float32 mono 16 kHz in [-1, 1], or ``None``."""
        if len(texts) != len(audio):
            raise ValueError(f"got {len(texts)} texts but {len(audio)} audio rows")
        feats: list[np.ndarray | None] = [None] * len(audio)
        if self._extractor is not None:
            rows = [i for i, a in enumerate(audio) if a is not None and np.asarray(a).size > 0]
            if rows:
                computed = self._extractor.compute([np.asarray(audio[i]) for i in rows])
                for j, i in enumerate(rows):
                    feats[i] = computed[j]
        return self.predict_features(texts, feats, _audio_given=[a is not None for a in audio])

    def predict_features(
        self,
        texts: Sequence[str | None],
        features: Sequence[np.ndarray | None],
        *,
        _audio_given: Sequence[bool] | None = None,
    ) -> list[Prediction]:
        """Like :meth:`predict`, with precomputed audio feature vectors (length :attr:`feature_dim`)."""
        if len(texts) != len(features):
            raise ValueError(f"got {len(texts)} texts but {len(features)} feature rows")
        out: list[Prediction] = []
        for start in range(0, len(texts), self.batch_size):
            out.extend(
                self._predict_batch(
                    texts[start : start + self.batch_size],
                    features[start : start + self.batch_size],
                    _audio_given[start : start + self.batch_size] if _audio_given is not None else None,
                    start,
                )
            )
        return out

    @torch.no_grad()
    def _predict_batch(
        self,
        texts: Sequence[str | None],
        features: Sequence[np.ndarray | None],
        audio_given: Sequence[bool] | None,
        offset: int,
    ) -> list[Prediction]:
        n = len(texts)
        has_text = [bool(t and t.strip()) and self.uses_text for t in texts]
        has_audio = [f is not None and self.uses_audio for f in features]
        for i in range(n):
            if not has_text[i] and not has_audio[i]:
                given = audio_given[i] if audio_given is not None else features[i] is not None
                if given or (texts[i] and str(texts[i]).strip()):
                    missing = "audio" if not self.uses_audio else "text"
                    raise ValueError(f"row {offset + i}: this checkpoint has no {missing} branch and the row has no "
                                     f"{'text' if missing == 'audio' else 'audio'}")
                raise ValueError(f"row {offset + i} has neither text nor audio")
        kwargs: dict[str, torch.Tensor] = {}
        text_idx = [i for i in range(n) if has_text[i]]
        audio_idx = [i for i in range(n) if has_audio[i]]
        if text_idx:
            kwargs.update(self.model.tokenize([str(texts[i]).strip() for i in text_idx], self.device))
            kwargs["text_rows"] = torch.tensor(text_idx, device=self.device)
        if audio_idx:
            dim = self.feature_dim
            stacked = np.stack([np.asarray(features[i], dtype=np.float32).reshape(-1) for i in audio_idx])
            if stacked.shape[1] != dim:
                raise ValueError(f"audio feature vectors must have length {dim}, got {stacked.shape[1]}")
            kwargs["audio_features"] = torch.from_numpy(stacked).to(self.device)
            kwargs["audio_rows"] = torch.tensor(audio_idx, device=self.device)
        probs = torch.softmax(self.model(batch_size=n, **kwargs).float(), dim=-1).cpu().numpy().astype(np.float64)
        out = []
        for i in range(n):
            p = probs[i] / probs[i].sum()
            mods = tuple(m for m, on in (("text", has_text[i]), ("audio", has_audio[i])) if on)
            out.append(
                Prediction(
                    label=self.labels[int(p.argmax())],
                    scores={label: float(p[j]) for j, label in enumerate(self.labels)},
                    modalities=mods,
                )
            )
        return out
