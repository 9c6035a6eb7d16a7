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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from training.audio_fusion import AudioFusion
from training.features import AudioFeatureExtractor
from training.model import CheckpointError, FusionClassifier

__all__ = ["EmotionPredictor", "Prediction"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Prediction:
    label: str
    scores: dict[str, float]  # all labels, sum to 1
    modalities: tuple[str, ...]  # subset of ("text", "audio") actually used
    # Each branch's own label beside the fused one, for rows fused from both (fusion checkpoints).
    branches: dict[str, str] = field(default_factory=dict)


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
        # A checkpoint written by training.fuse: text model + audio branch + learned fusion head.
        self.fusion: AudioFusion | None = None
        if model.checkpoint_meta.get("audio_fusion"):
            try:
                self.fusion = AudioFusion.from_blob(model.checkpoint_meta["audio_fusion"])
            except (KeyError, TypeError, ValueError, RuntimeError) as exc:
                raise CheckpointError(f"checkpoint {name} has an unreadable audio_fusion part: {exc}") from exc
            if self.fusion.labels_n != len(self.labels):
                raise CheckpointError(f"checkpoint {name}: the audio branch has {self.fusion.labels_n} labels")
            self.uses_audio = True
        elif self.uses_audio:
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
        if self.fusion is not None:
            e = self.fusion.encoder_identity
            self.model_ids["audio_encoder"] = f"{e.model_id} ({e.compute_type}, the ASR's encoder pass)"

    @classmethod
    def from_checkpoint(cls, path: str | Path, *, device: str = "auto") -> EmotionPredictor:
        """Load ``path``; raises :class:`training.model.CheckpointError` with a clear message."""
        path = Path(path)
        model = FusionClassifier.from_checkpoint(path, device=device)
        return cls(model, name=f"{path.name} (sha256 {_file_sha256(path)[:12]})")

    @property
    def feature_dim(self) -> int:
        """Length of the audio feature vectors :meth:`predict_features` takes (0 without audio)."""
        if self.fusion is not None:
            return self.fusion.dim
        return self._extractor.dim if self._extractor is not None else 0

    def audio_features(self, audio: Sequence[np.ndarray]) -> np.ndarray:
        """Feature vectors for float32 mono 16 kHz arrays (the checkpoint's feature config)."""
        if self.fusion is not None:
            return self.fusion.features(audio)
        if self._extractor is None:
            raise ValueError("this checkpoint has no audio branch")
        return self._extractor.compute(audio)

    def attach_asr(self, whisper_model: object, *, model_sha256: str, pad_s: float, compute_type: str) -> bool:
        """Share the service's loaded Whisper for the audio features (no second encoder in memory).

        Returns True when the ASR's own encoder pass gives this checkpoint's features exactly (same
        weights and padding): then the transcriber should hand over its encoder output
        (:meth:`features_from_encoder`) and no second encoder pass is needed at all.
        """
        if self.fusion is None:
            return False
        self.fusion.share_model(whisper_model)
        same = self.fusion.accepts_asr(model_sha256, pad_s)
        if same and compute_type != self.fusion.encoder_identity.compute_type:
            logger.warning("the ASR computes in %s, the audio branch was trained on %s encoder output; features "
                           "differ slightly", compute_type, self.fusion.encoder_identity.compute_type)
        return same

    def features_from_encoder(self, audio: np.ndarray, frames: np.ndarray) -> np.ndarray:
        """The feature vector of one utterance from the ASR's encoder output over it (see attach_asr)."""
        if self.fusion is None:
            raise ValueError("this checkpoint has no audio branch over the ASR encoder")
        return self.fusion.pool(audio, frames)

    def reset_stream(self, stream: str | None = None) -> None:
        """Forget a stream's running speaker statistics (all streams when None)."""
        if self.fusion is not None:
            self.fusion.reset(stream)

    def predict(self, texts: Sequence[str | None], audio: Sequence[np.ndarray | None]) -> list[Prediction]:
        """One :class:`Prediction` per row. Audio: float32 mono 16 kHz in [-1, 1], or ``None``."""
        if len(texts) != len(audio):
            raise ValueError(f"got {len(texts)} texts but {len(audio)} audio rows")
        feats: list[np.ndarray | None] = [None] * len(audio)
        if self._extractor is not None or self.fusion is not None:
            rows = [i for i, a in enumerate(audio) if a is not None and np.asarray(a).size > 0]
            if rows:
                computed = self.audio_features([np.asarray(audio[i]) for i in rows])
                for j, i in enumerate(rows):
                    feats[i] = computed[j]
        return self.predict_features(texts, feats, _audio_given=[a is not None for a in audio])

    def predict_features(
        self,
        texts: Sequence[str | None],
        features: Sequence[np.ndarray | None],
        *,
        streams: Sequence[str | None] | None = None,
        _audio_given: Sequence[bool] | None = None,
    ) -> list[Prediction]:
        """Like :meth:`predict`, with precomputed audio feature vectors (length :attr:`feature_dim`).

        ``streams``: the stream (or speaker) of each row; the audio branch normalises a row by the
        running statistics of the rows of its stream classified before it (None: no normalisation).
        """
        if len(texts) != len(features):
            raise ValueError(f"got {len(texts)} texts but {len(features)} feature rows")
        if streams is not None and len(streams) != len(texts):
            raise ValueError(f"got {len(texts)} texts but {len(streams)} stream keys")
        out: list[Prediction] = []
        for start in range(0, len(texts), self.batch_size):
            out.extend(
                self._predict_batch(
                    texts[start : start + self.batch_size],
                    features[start : start + self.batch_size],
                    _audio_given[start : start + self.batch_size] if _audio_given is not None else None,
                    start,
                    streams[start : start + self.batch_size] if streams is not None else None,
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
        streams: Sequence[str | None] | None = None,
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
        if self.fusion is not None:
            return self._predict_fused(texts, features, has_text, has_audio, streams)
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
        return self._predictions(probs, has_text, has_audio)

    def _predict_fused(
        self,
        texts: Sequence[str | None],
        features: Sequence[np.ndarray | None],
        has_text: list[bool],
        has_audio: list[bool],
        streams: Sequence[str | None] | None,
    ) -> list[Prediction]:
        """Text branch alone, audio branch alone, or the learned fusion head over both, row by row."""
        assert self.fusion is not None
        n = len(texts)
        logp = np.zeros((n, len(self.labels)), dtype=np.float32)
        text_idx = [i for i in range(n) if has_text[i]]
        audio_idx = [i for i in range(n) if has_audio[i]]
        if text_idx:
            kw = self.model.tokenize([str(texts[i]).strip() for i in text_idx], self.device)
            logits = self.model(batch_size=len(text_idx), text_rows=torch.arange(len(text_idx), device=self.device),
                                **kw)  # fmt: skip
            logp[text_idx] = logits.float().log_softmax(-1).cpu().numpy()
        if audio_idx:
            stacked = np.stack([np.asarray(features[i], dtype=np.float32).reshape(-1) for i in audio_idx])
            if stacked.shape[1] != self.fusion.dim:
                raise ValueError(f"audio feature vectors must have length {self.fusion.dim}, got {stacked.shape[1]}")
            keys = [streams[i] for i in audio_idx] if streams is not None else [None] * len(audio_idx)
            la, novelty = self.fusion.audio_logp(stacked, keys)
            both = [j for j, i in enumerate(audio_idx) if has_text[i]]
            alone = [j for j, i in enumerate(audio_idx) if not has_text[i]]
            text_logp = logp.copy()
            if both:
                rows = [audio_idx[j] for j in both]
                logp[rows] = self.fusion.fuse(logp[rows], la[both], novelty[both])
            for j in alone:
                logp[audio_idx[j]] = la[j]
        branches: list[dict[str, str]] = [{} for _ in range(n)]
        if audio_idx:
            for j in both:
                i = audio_idx[j]
                text_label, audio_label = self.labels[int(text_logp[i].argmax())], self.labels[int(la[j].argmax())]
                branches[i] = {"text": text_label, "audio": audio_label}
        probs = np.exp(logp.astype(np.float64))
        return self._predictions(probs, has_text, has_audio, branches)

    def _predictions(
        self,
        probs: np.ndarray,
        has_text: list[bool],
        has_audio: list[bool],
        branches: Sequence[dict[str, str]] | None = None,
    ) -> list[Prediction]:
        out = []
        for i in range(len(has_text)):
            p = probs[i] / probs[i].sum()
            mods = tuple(m for m, on in (("text", has_text[i]), ("audio", has_audio[i])) if on)
            out.append(
                Prediction(
                    label=self.labels[int(p.argmax())],
                    scores={label: float(p[j]) for j, label in enumerate(self.labels)},
                    modalities=mods,
                    branches=dict(branches[i]) if branches is not None else {},
                )
            )
        return out
