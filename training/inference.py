"""``EmotionPredictor``: a checkpoint -> predictions for batches of (text, audio).

A row's text may be ``None``/empty (audio only) and its audio ``None`` (text only); with neither,
:meth:`EmotionPredictor.predict` raises ``ValueError``. Audio features are computed (with the same
:mod:`training.features` code that training used) only when the checkpoint has an audio branch;
:meth:`EmotionPredictor.predict_features` takes precomputed feature vectors instead.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.audio_fusion import AudioFusion
from training.checkpoint import CheckpointError
from training.device import dtype_name
from training.features import AudioFeatureExtractor
from training.model import FusionClassifier

__all__ = ["EmotionPredictor", "PastItem", "Prediction"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Prediction:
    label: str
    scores: dict[str, float]  # all labels, sum to 1
    modalities: tuple[str, ...]  # subset of ("text", "audio") actually used
    # Each branch's own label beside the fused one, for rows fused from both (fusion checkpoints).
    branches: dict[str, str] = field(default_factory=dict)
    # The pooled text encoding of this row (checkpoints with a linear text head): a stream caches it
    # so that later lines read this one as past context without encoding it again.
    text_embedding: np.ndarray | None = field(default=None, compare=False, repr=False)
    context_used: int = 0  # past utterances the text branch read for this row


# One past utterance of a row: its cached text embedding, or the index of an EARLIER row of the same
# ``predict`` call (a line spoken before it in the same micro-batch); and its speaker relation
# (``training.context.RELATION_*``).
PastItem = tuple[np.ndarray | int, int]
# One previous line of a row, for a checkpoint that reads past lines inside its encoder's input
# (``text_past_lines``): its speaker tag (``None`` = unknown) and its words.
PastLine = tuple[str | None, str]


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


class EmotionPredictor:
    """Loads a :class:`FusionClassifier` checkpoint and classifies batches of utterances."""

    def __init__(self, model: FusionClassifier, *, name: str = "classifier", batch_size: int = 32,
                 text_dtype: str = "float32") -> None:  # fmt: skip
        self.model = model.eval()
        self.labels: tuple[str, ...] = tuple(model.config.labels)
        self.uses_text = model.config.uses_text
        self.uses_audio = model.config.uses_audio
        self.batch_size = batch_size
        self.device = next(model.parameters()).device
        # The text encoder may run in bfloat16 or int8 (``text_dtype``); pooled encodings and heads stay float32.
        self.text_dtype = model.run_text_as(text_dtype)
        # A linear text head reads speaker-tagged lines ("S1: ...") and can read past context.
        self.speaker_tags = model.config.uses_text and model.config.text_head == "linear"
        self.uses_context = model.config.uses_text and hasattr(model, "context")
        # The most past utterances its context module reads (a longer window given is cut to the latest).
        self.context_utterances = int((model.config.context or {}).get("max_utterances", 0)) if self.uses_context else 0
        # How many previous lines the text encoder reads inside its input (0: each line alone).
        self.past_lines = model.config.text_past_lines if model.config.uses_text else 0
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
            if self.text_dtype != torch.float32:
                self.model_ids["text_encoder"] += f" ({dtype_name(self.text_dtype)})"
        if self._extractor is not None:
            self.model_ids["audio_encoder"] = self._extractor.model_id or model.config.audio_kind
        if self.fusion is not None:
            e = self.fusion.encoder_identity
            self.model_ids["audio_encoder"] = f"{e.model_id} ({e.compute_type}, the ASR's encoder pass)"

    @classmethod
    def from_checkpoint(cls, path: str | Path, *, device: str = "auto", text_dtype: str = "float32",
                        ) -> EmotionPredictor:  # fmt: skip
        """Load ``path``; raises :class:`training.model.CheckpointError` with a clear message.

        ``text_dtype``: ``"float32"``, ``"bfloat16"``, ``"int8"`` (CPU only), or ``"auto"`` (bfloat16 on a
        CPU that computes it natively, :func:`training.device.resolve_text_dtype`)."""
        path = Path(path)
        model = FusionClassifier.from_checkpoint(path, device=device)
        return cls(model, name=f"{path.name} (sha256 {_file_sha256(path)[:12]})", text_dtype=text_dtype)

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
        if model_sha256 != self.fusion.encoder_identity.sha256:
            # Another Whisper (e.g. tiny.en for ASR): its encoder gives other features, so the audio
            # branch keeps its own encoder (a second model in memory, but the right features).
            logger.info("the ASR runs another Whisper than the audio branch was trained on; it loads its own")
            return False
        self.fusion.share_model(whisper_model)
        same = self.fusion.accepts_asr(model_sha256, pad_s)
        if same and compute_type != self.fusion.encoder_identity.compute_type:
            logger.warning(
                "the ASR computes in %s, the audio branch was trained on %s encoder output; features differ slightly",
                compute_type,
                self.fusion.encoder_identity.compute_type,
            )
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

    def predict(
        self,
        texts: Sequence[str | None],
        audio: Sequence[np.ndarray | None],
        *,
        speakers: Sequence[str | None] | None = None,
        past: Sequence[Sequence[PastItem]] | None = None,
        past_lines: Sequence[Sequence[PastLine]] | None = None,
    ) -> list[Prediction]:
        """One :class:`Prediction` per row. Audio: float32 mono 16 kHz in [-1, 1], or ``None``.

        ``speakers``: each row's speaker tag (``"S1"``...; ``None`` = unknown), for checkpoints whose
        text branch reads tagged lines. ``past``: each row's previous utterances (oldest first), read
        by a checkpoint with a context module (:attr:`uses_context`); ``None`` = no context.
        ``past_lines``: each row's previous lines (oldest first), read inside the encoder's input by a
        checkpoint with :attr:`past_lines`; ``None`` = each line alone.
        """
        if len(texts) != len(audio):
            raise ValueError(f"got {len(texts)} texts but {len(audio)} audio rows")
        feats: list[np.ndarray | None] = [None] * len(audio)
        if self._extractor is not None or self.fusion is not None:
            rows = [i for i, a in enumerate(audio) if a is not None and np.asarray(a).size > 0]
            if rows:
                computed = self.audio_features([np.asarray(audio[i]) for i in rows])
                for j, i in enumerate(rows):
                    feats[i] = computed[j]
        return self.predict_features(texts, feats, speakers=speakers, past=past, past_lines=past_lines,
                                     _audio_given=[a is not None for a in audio])  # fmt: skip

    def text_input(self, text: str, speaker: str | None = None) -> str:
        """The line as this checkpoint's text branch reads it (speaker-tagged when it was trained so)."""
        if not self.speaker_tags:
            return text.strip()
        from training.text_branch import UNKNOWN_SPEAKER, tagged

        return tagged(text, speaker or UNKNOWN_SPEAKER)

    def predict_features(
        self,
        texts: Sequence[str | None],
        features: Sequence[np.ndarray | None],
        *,
        speakers: Sequence[str | None] | None = None,
        past: Sequence[Sequence[PastItem]] | None = None,
        past_lines: Sequence[Sequence[PastLine]] | None = None,
        streams: Sequence[str | None] | None = None,
        audio_speakers: Sequence[str | None] | None = None,
        _audio_given: Sequence[bool] | None = None,
    ) -> list[Prediction]:
        """Like :meth:`predict`, with precomputed audio feature vectors (length :attr:`feature_dim`).

        ``streams``: the stream of each row; a fusion checkpoint's audio branch normalises a row by the
        running statistics of its stream's rows classified so far (None: none). ``audio_speakers``: each
        row's speaker label within its stream; a labelled row is normalised by that speaker's rows
        instead (None: the stream's).
        """
        n = len(texts)
        if len(features) != n:
            raise ValueError(f"got {n} texts but {len(features)} feature rows")
        named = (("speakers", speakers), ("past", past), ("past_lines", past_lines), ("streams", streams),
                 ("audio_speakers", audio_speakers))  # fmt: skip
        for name, seq in named:
            if seq is not None and len(seq) != n:
                raise ValueError(f"got {n} texts but {len(seq)} rows of {name}")
        inputs = [
            self.text_input(str(t), speakers[i] if speakers is not None else None)
            if t and str(t).strip() and self.uses_text else None
            for i, t in enumerate(texts)
        ]  # fmt: skip
        pooled: dict[int, torch.Tensor] = {}
        pasts = None
        if self.speaker_tags or self.uses_context:
            # One encoder pass per line; the context module and the stream's cache reuse it.
            if self.past_lines and past_lines is not None:
                from training.text_branch import past_segment

                pasts = {i: past_segment(past_lines[i], self.past_lines) for i in range(n)}
            pooled = self._encode({i: t for i, t in enumerate(inputs) if t is not None}, pasts)
        windows = self._resolve_past(past, pooled, n) if past is not None and self.uses_context else None
        keys = None
        if streams is not None:
            keys = [(st, audio_speakers[i] if audio_speakers is not None else None) for i, st in enumerate(streams)]
        out: list[Prediction] = []
        for start in range(0, n, self.batch_size):
            end = min(n, start + self.batch_size)
            out.extend(
                self._predict_batch(
                    inputs[start:end],
                    features[start:end],
                    _audio_given[start:end] if _audio_given is not None else None,
                    text_given=[bool(t and str(t).strip()) for t in texts[start:end]],
                    offset=start,
                    pooled=pooled,
                    windows=windows,
                    audio_keys=keys[start:end] if keys is not None else None,
                )
            )
        if pasts is not None and past_lines is not None:  # lines read inside the encoder's input are context too
            read = [min(len(past_lines[i]), self.past_lines) if inputs[i] is not None else 0 for i in range(n)]
            out = [dataclasses.replace(p, context_used=max(p.context_used, r)) for p, r in zip(out, read, strict=True)]
        return out

    @torch.no_grad()
    def _encode(self, texts: dict[int, str], pasts: dict[int, str] | None = None) -> dict[int, torch.Tensor]:
        rows = sorted(texts, key=lambda i: len(texts[i]) + (len(pasts[i]) if pasts else 0))
        out: dict[int, torch.Tensor] = {}
        for s in range(0, len(rows), self.batch_size):
            idx = rows[s : s + self.batch_size]
            enc = self.model.tokenize([texts[i] for i in idx], self.device, [pasts[i] for i in idx] if pasts else None)
            vecs = self.model.pool_text(**enc).float()
            out.update({i: vecs[j] for j, i in enumerate(idx)})
        return out

    def _resolve_past(
        self, past: Sequence[Sequence[PastItem]], pooled: dict[int, torch.Tensor], n: int
    ) -> list[list[tuple[torch.Tensor, int]]]:
        """Each row's window as tensors; an int item must name an earlier row that has text."""
        width = int(self.model.text_encoder.config.hidden_size)
        out = []
        for i in range(n):
            window = []
            for item, rel in past[i]:
                if isinstance(item, (int, np.integer)):
                    j = int(item)
                    if not 0 <= j < i:
                        raise ValueError(f"row {i}: past context may only name earlier rows, got row {j}")
                    if j not in pooled:
                        continue  # that line had no text
                    window.append((pooled[j].cpu(), int(rel)))
                else:
                    vec = torch.as_tensor(np.asarray(item, dtype=np.float32)).reshape(-1)
                    if vec.numel() != width:
                        raise ValueError(f"row {i}: a past embedding must have length {width}, got {vec.numel()}")
                    window.append((vec, int(rel)))
            out.append(window)
        return out

    @torch.no_grad()
    def _predict_batch(
        self,
        texts: Sequence[str | None],
        features: Sequence[np.ndarray | None],
        audio_given: Sequence[bool] | None,
        *,
        text_given: Sequence[bool],
        offset: int,
        pooled: dict[int, torch.Tensor],
        windows: list[list[tuple[torch.Tensor, int]]] | None,
        audio_keys: Sequence[tuple[str | None, str | None]] | None = None,
    ) -> list[Prediction]:
        """``texts`` are already in the form the text branch reads (or ``None``); ``pooled`` and
        ``windows`` are indexed by row over the whole call (``offset`` is this batch's first row);
        ``audio_keys``: each row's (stream, speaker) for the audio branch's running statistics."""
        n = len(texts)
        has_text = [t is not None for t in texts]
        has_audio = [f is not None and self.uses_audio for f in features]
        self._check_rows(has_text, has_audio, features, audio_given, text_given, offset)
        text_idx = [i for i in range(n) if has_text[i]]
        audio_idx = [i for i in range(n) if has_audio[i]]
        kwargs = self._text_inputs(texts, text_idx, offset, pooled, windows) if text_idx else {}
        branches: list[dict[str, str]] = [{} for _ in range(n)]
        if self.fusion is not None:
            # The text branch alone (past context included), then the audio branch and the fusion head.
            text_logp = self.model(batch_size=n, **kwargs).float().log_softmax(-1).cpu().numpy()
            logp = self._fuse_rows(text_logp, features, has_text, audio_idx, audio_keys, branches)
            probs = np.exp(logp.astype(np.float64))
        else:
            if audio_idx:
                dim = self.feature_dim
                stacked = np.stack([np.asarray(features[i], dtype=np.float32).reshape(-1) for i in audio_idx])
                if stacked.shape[1] != dim:
                    raise ValueError(f"audio feature vectors must have length {dim}, got {stacked.shape[1]}")
                kwargs["audio_features"] = torch.from_numpy(stacked).to(self.device)
                kwargs["audio_rows"] = torch.tensor(audio_idx, device=self.device)
            logits = self.model(batch_size=n, **kwargs).float()
            probs = torch.softmax(logits, dim=-1).cpu().numpy().astype(np.float64)
        out = []
        for i in range(n):
            p = probs[i] / probs[i].sum()
            mods = tuple(m for m, on in (("text", has_text[i]), ("audio", has_audio[i])) if on)
            emb = pooled.get(offset + i)
            used = len(windows[offset + i]) if windows is not None and has_text[i] else 0
            out.append(
                Prediction(
                    label=self.labels[int(p.argmax())],
                    scores={label: float(p[j]) for j, label in enumerate(self.labels)},
                    modalities=mods,
                    branches=branches[i],
                    text_embedding=None if emb is None else emb.cpu().numpy().astype(np.float32),
                    context_used=used,
                )
            )
        return out

    def _check_rows(self, has_text: Sequence[bool], has_audio: Sequence[bool], features: Sequence[np.ndarray | None],
                    audio_given: Sequence[bool] | None, text_given: Sequence[bool], offset: int) -> None:  # fmt: skip
        """ValueError naming the first row this checkpoint cannot classify (no usable branch)."""
        for i, (text, audio) in enumerate(zip(has_text, has_audio, strict=True)):
            if text or audio:
                continue
            given = audio_given[i] if audio_given is not None else features[i] is not None
            if given or text_given[i]:
                missing = "audio" if not self.uses_audio else "text"
                raise ValueError(f"row {offset + i}: this checkpoint has no {missing} branch and the row has no "
                                 f"{'text' if missing == 'audio' else 'audio'}")  # fmt: skip
            raise ValueError(f"row {offset + i} has neither text nor audio")

    def _text_inputs(self, texts: Sequence[str | None], text_idx: list[int], offset: int,
                     pooled: dict[int, torch.Tensor], windows: list[list[tuple[torch.Tensor, int]]] | None,
                     ) -> dict[str, Any]:  # fmt: skip
        """The model's text keyword arguments: tokens (or cached pooled encodings), rows, past context."""
        kwargs: dict[str, Any] = {}
        if pooled:
            kwargs["text_pooled"] = torch.stack([pooled[offset + i] for i in text_idx]).to(self.device)
        else:
            kwargs.update(self.model.tokenize([str(texts[i]) for i in text_idx], self.device))
        kwargs["text_rows"] = torch.tensor(text_idx, device=self.device)
        if windows is not None:
            from training.context import PastContext

            width = int(self.model.text_encoder.config.hidden_size)
            kwargs["past"] = PastContext.stack([windows[offset + i] for i in text_idx], width).to(self.device)
        return kwargs

    def _fuse_rows(
        self,
        text_logp: np.ndarray,
        features: Sequence[np.ndarray | None],
        has_text: list[bool],
        audio_idx: list[int],
        audio_keys: Sequence[tuple[str | None, str | None]] | None,
        branches: list[dict[str, str]],
    ) -> np.ndarray:
        """Log-probabilities: the text branch's where there is no audio, the audio branch's where there is
        no text, the fusion head's where there are both (``branches`` gets both labels there)."""
        assert self.fusion is not None
        logp = text_logp.astype(np.float32).copy()
        if not audio_idx:
            return logp
        stacked = np.stack([np.asarray(features[i], dtype=np.float32).reshape(-1) for i in audio_idx])
        if stacked.shape[1] != self.fusion.dim:
            raise ValueError(f"audio feature vectors must have length {self.fusion.dim}, got {stacked.shape[1]}")
        keys = [audio_keys[i] if audio_keys is not None else (None, None) for i in audio_idx]
        la, novelty = self.fusion.audio_logp(stacked, [k[0] for k in keys], [k[1] for k in keys])
        both = [j for j, i in enumerate(audio_idx) if has_text[i]]
        if both:
            rows = [audio_idx[j] for j in both]
            logp[rows] = self.fusion.fuse(text_logp[rows].astype(np.float32), la[both], novelty[both])
            for j, i in zip(both, rows, strict=True):
                text_label, audio_label = self.labels[int(text_logp[i].argmax())], self.labels[int(la[j].argmax())]
                branches[i] = {"text": text_label, "audio": audio_label}
        for j, i in enumerate(audio_idx):
            if not has_text[i]:
                logp[i] = la[j]
        return logp
