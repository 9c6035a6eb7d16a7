"""The audio branch and the fusion head at run time, stored beside any text branch in one checkpoint.

A checkpoint with the key ``"audio_fusion"`` (written by :mod:`training.fuse`) carries, next to its
text model: the audio branch (:class:`training.audio_branch.AudioBranch`), the fusion head
(:class:`training.late_fusion.FusionHead`), the identity of the Whisper encoder pass its features come
from (model sha256, compute type, ``pad_s``), how it was trained (the command) and its metrics.
:class:`AudioFusion` turns rows of (text log-probabilities or nothing, feature vector or nothing) into
fused log-probabilities, keeping running speaker offsets per stream and per speaker label within it
(:class:`training.speaker_norm.StreamSpeakerOffsets`).

Features are computed from the ASR's own encoder output when the service's Whisper is the one the
branch was trained on (:meth:`AudioFusion.accepts_asr`), else by one encoder pass of that Whisper
(:class:`training.asr_features.AsrEncoder`, sharing an already loaded model when given one).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from training.asr_features import AsrEncoder, EncoderIdentity, pool_utterance
from training.audio_branch import AudioBranch, AudioBranchConfig
from training.late_fusion import FusionHead, FusionHeadConfig
from training.speaker_norm import StreamSpeakerOffsets

__all__ = ["AUDIO_FUSION_FORMAT", "AudioFusion"]

logger = logging.getLogger(__name__)

AUDIO_FUSION_FORMAT = 1
ABSTAIN_TEXT_ALONE = 0.5  # at this abstention (0..1) of the audio branch, the text alone decides


def _half(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: (v.half() if v.is_floating_point() and v.ndim >= 2 else v.clone()) for k, v in state.items()}


def _full(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}


class AudioFusion:
    """Audio branch + fusion head of a checkpoint; thread-safe (one lock around the running offsets)."""

    def __init__(
        self,
        branch: AudioBranch,
        head: FusionHead,
        encoder: EncoderIdentity,
        *,
        whisper_model: str,
        prosody: bool = True,
        acoustic: bool = False,
        info: dict[str, Any] | None = None,
    ) -> None:
        self.branch = branch.eval()
        self.head = head.eval()
        self.encoder_identity = encoder
        self.whisper_model = whisper_model
        self.prosody = prosody
        self.acoustic = acoustic  # spectral / voice-quality statistics appended (training.acoustic)
        self.info = dict(info or {})
        self.labels_n = branch.config.n_labels
        cfg = branch.config
        self._offsets = StreamSpeakerOffsets(cfg.dim, cfg.norm_prior, include_current=cfg.norm_includes_current)
        self._lock = threading.Lock()
        self._encoder: AsrEncoder | None = None

    # ------------------------------------------------------------------ (de)serialisation
    def to_blob(self) -> dict[str, Any]:
        e = self.encoder_identity
        return {
            "format": AUDIO_FUSION_FORMAT,
            "encoder": {"whisper_model": self.whisper_model, "model_id": e.model_id, "sha256": e.sha256,
                        "compute_type": e.compute_type, "pad_s": e.pad_s, "prosody": self.prosody,
                        "acoustic": self.acoustic},
            "audio_branch": {"config": self.branch.config.to_dict(), "state": _half(self.branch.state_dict())},
            "fusion_head": {"config": self.head.config.to_dict(), "state": _half(self.head.state_dict())},
            "info": self.info,
        }  # fmt: skip

    @classmethod
    def from_blob(cls, blob: dict[str, Any]) -> AudioFusion:
        if blob.get("format") != AUDIO_FUSION_FORMAT:
            raise ValueError(f"audio_fusion format {blob.get('format')!r}; this emostream reads {AUDIO_FUSION_FORMAT}")
        branch = AudioBranch(AudioBranchConfig.from_dict(dict(blob["audio_branch"]["config"])))
        branch.load_state_dict(_full(blob["audio_branch"]["state"]))
        head = FusionHead(FusionHeadConfig.from_dict(dict(blob["fusion_head"]["config"])))
        head.load_state_dict(_full(blob["fusion_head"]["state"]))
        enc = blob["encoder"]
        identity = EncoderIdentity(str(enc["model_id"]), str(enc["sha256"]), str(enc["compute_type"]),
                                   float(enc["pad_s"]))  # fmt: skip
        return cls(branch, head, identity, whisper_model=str(enc["whisper_model"]), prosody=bool(enc["prosody"]),
                   acoustic=bool(enc.get("acoustic", False)), info=dict(blob.get("info", {})))  # fmt: skip

    # ------------------------------------------------------------------ features
    @property
    def dim(self) -> int:
        return self.branch.config.dim

    def encoder(self) -> AsrEncoder:
        if self._encoder is None:
            e = self.encoder_identity
            self._encoder = AsrEncoder(self.whisper_model, pad_s=e.pad_s, compute_type=e.compute_type)
            if self._encoder.identity.sha256 != e.sha256:
                raise ValueError(
                    f"the audio branch was trained on Whisper {self.whisper_model!r} sha256 {e.sha256[:12]}..., "
                    f"but the installed one has {self._encoder.identity.sha256[:12]}...; reinstall it or retrain"
                )
        return self._encoder

    def accepts_asr(self, model_sha256: str, pad_s: float) -> bool:
        """Whether the live ASR's encoder pass is the one the branch was trained on (same weights, pad)."""
        e = self.encoder_identity
        return model_sha256 == e.sha256 and math.isclose(pad_s, e.pad_s)

    def share_model(self, whisper_model: Any) -> None:
        """Use an already loaded faster-whisper model for the encoder passes (no second copy)."""
        enc = self.encoder()
        enc._model = whisper_model  # noqa: SLF001 - the same object the transcriber decodes with

    def features(self, audio: Sequence[np.ndarray]) -> np.ndarray:
        enc = self.encoder()
        return np.stack([enc.features(np.asarray(a, dtype=np.float32), prosody=self.prosody, acoustic=self.acoustic)
                         for a in audio])  # fmt: skip

    def pool(self, audio: np.ndarray, frames: np.ndarray) -> np.ndarray:
        return pool_utterance(audio, frames, prosody=self.prosody, acoustic=self.acoustic)

    # ------------------------------------------------------------------ prediction
    def reset(self, key: str | None = None) -> None:
        """Forget the running speaker offsets of stream ``key`` and its speakers (all when None)."""
        with self._lock:
            self._offsets.reset(key)

    @torch.no_grad()
    def audio_logp(
        self, feats: np.ndarray, keys: Sequence[str | None], speakers: Sequence[str | None] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(log-probabilities after abstention, novelty) of raw feature rows, updating running offsets.

        ``keys``: each row's stream (None: no running normalisation for that row); ``speakers``: each
        row's speaker label within its stream (None: the stream's statistics normalise the row)."""
        z = self.branch.standardise(torch.from_numpy(np.asarray(feats, dtype=np.float32)))
        with self._lock:
            off = self._offsets.observe(z.numpy(), keys, speakers)
        logp, d = self.branch.predict(z, torch.from_numpy(off))
        return logp.numpy(), d.numpy()

    @torch.no_grad()
    def fuse(self, text_logp: np.ndarray, audio_logp: np.ndarray, novelty: np.ndarray) -> np.ndarray:
        """Fused, calibrated log-probabilities for rows that have both modalities.

        Where the audio branch abstains (novelty past the middle of its abstention ramp) the words decide
        alone: the row gets the text branch's own probabilities, so unfamiliar audio (TTS, music) never
        moves what the words say.
        """
        nov = torch.from_numpy(novelty).float()
        out = self.head(torch.from_numpy(text_logp).float(), torch.from_numpy(audio_logp).float(), nov).numpy()
        unsure = (self.branch.novelty.abstain(nov) >= ABSTAIN_TEXT_ALONE).numpy()
        out[unsure] = text_logp[unsure]
        return out
