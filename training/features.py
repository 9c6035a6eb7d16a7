"""Audio features shared by training and serving: one module, so the two cannot drift.

The feature vector of an utterance is

* ``whisper``: the frozen Whisper encoder of the packaged ASR weights (CTranslate2), run on the
  utterance only, mean and std pooled over the encoder frames that cover real audio; plus
* ``prosody`` (optional, :data:`training.prosody.PROSODY_DIM` values): duration, energy level/spread/range, active
  fraction, pitch level/spread/range, speaking rate (energy peaks per active second), zero-crossing rate.

CTranslate2's Whisper encoder accepts fewer than the 3000 mel frames (30 s) that Whisper pads to.
Encoding only the utterance, zero-padded (silence) up to a multiple of ``pad_to_s`` seconds, is
~20x faster for short utterances than padding to 30 s. Training and serving both go through
:meth:`AudioFeatureExtractor.compute`, so they always see the same padding. Audio longer than 30 s
is cut into 30 s windows whose frames are pooled together.

With ``encoder = "logmel-cnn"`` the vector is instead a fixed-size log-mel patch (``LOGMEL_BANDS`` x
``LOGMEL_FRAMES``, flattened) for a CNN trained from scratch (see ``training.model``), plus prosody.

Computed vectors are cached on disk (:class:`FeatureCache`) under a folder named by what produced
them (model sha256 + feature config) and a file name derived from the audio file's path, size and mtime.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.audio import SAMPLE_RATE_HZ, AudioDecodeError, load_audio
from training.device import ctranslate2_device
from training.prosody import PROSODY_DIM, prosody_features, trim_silence
from training.weights import cache_root, resolve_asr_model

__all__ = [
    "FEATURE_VERSION",
    "LOGMEL_BANDS",
    "LOGMEL_FRAMES",
    "AudioFeatureExtractor",
    "FeatureCache",
    "FeatureConfig",
]

logger = logging.getLogger(__name__)

HOP = 160  # Whisper mel hop: 100 frames per second
WINDOW_FRAMES = 3000  # Whisper's 30 s window
LOGMEL_BANDS = 64
LOGMEL_FRAMES = 256  # 2.56 s at 10 ms; longer audio is centre-cropped, shorter zero-padded
FEATURE_VERSION = 2  # 2: autocorrelation pitch tracker


@dataclass(frozen=True, slots=True)
class FeatureConfig:
    """Everything that decides an audio feature vector; stored in checkpoints and cache keys."""

    encoder: str = "whisper"  # "whisper" | "logmel-cnn"
    whisper_model: str = "base"
    prosody: bool = True
    pad_to_s: float = 2.0  # the utterance is zero-padded up to a multiple of this before encoding
    trim_silence: bool = True  # drop leading/trailing silence (energy-based) before all features
    version: int = FEATURE_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown feature config keys: {', '.join(unknown)}")
        return cls(**data)


# --------------------------------------------------------------------------------------------
# extractor
# --------------------------------------------------------------------------------------------


class AudioFeatureExtractor:
    """Audio -> fixed-size feature vectors (see the module docstring). Thread-safe."""

    def __init__(self, config: FeatureConfig, *, device: str = "cpu", cpu_threads: int = 0) -> None:
        if config.version != FEATURE_VERSION:
            raise ValueError(
                f"audio features of version {config.version} come from another emostream release (this one computes "
                f"version {FEATURE_VERSION}); retrain the checkpoint with this release"
            )
        if config.encoder not in ("whisper", "logmel-cnn"):
            raise ValueError(f"unknown audio encoder {config.encoder!r}; use 'whisper' or 'logmel-cnn'")
        self.config = config
        self.device, self._device_index = ctranslate2_device(device)
        self._cpu_threads = cpu_threads
        self._lock = threading.Lock()
        self._model: Any = None
        self._mel: Any = None
        self._hidden = 0
        self.model_sha256 = ""
        self.model_id = ""
        if config.encoder == "whisper":
            resolved = resolve_asr_model(config.whisper_model)
            self._model_path = resolved.path
            self.model_sha256 = resolved.provenance.get("sha256", resolved.path)
            self.model_id = resolved.model_id
            pre = Path(resolved.path) / "preprocessor_config.json"  # present for 128-mel models
            cfg = json.loads(pre.read_text(encoding="utf-8")) if pre.exists() else {}
            self._n_mels = int(cfg.get("feature_size", 80))
        else:
            self._n_mels = LOGMEL_BANDS

    @property
    def dim(self) -> int:
        if self.config.encoder == "whisper" and not self._hidden:
            with self._lock:
                self._load()
        base = 2 * self._hidden if self.config.encoder == "whisper" else LOGMEL_BANDS * LOGMEL_FRAMES
        return base + (PROSODY_DIM if self.config.prosody else 0)

    def _load(self) -> None:
        if self._model is not None or self.config.encoder != "whisper":
            return
        import ctranslate2
        from faster_whisper.feature_extractor import FeatureExtractor

        compute = "float16" if self.device == "cuda" else "float32"
        self._model = ctranslate2.models.Whisper(
            self._model_path,
            device=self.device,
            device_index=self._device_index,
            compute_type=compute,
            intra_threads=self._cpu_threads,
        )
        self._mel = FeatureExtractor(feature_size=self._n_mels)
        probe = np.zeros((1, self._n_mels, 200), dtype=np.float32)
        encoded = self._model.encode(ctranslate2.StorageView.from_array(probe), to_cpu=True)
        self._hidden = int(np.asarray(encoded).shape[-1])
        logger.info("loaded Whisper encoder %s for audio features (%s, %s)", self.model_id, self.device, compute)

    def compute(self, audios: Sequence[np.ndarray]) -> np.ndarray:
        """Feature vectors, shape ``(len(audios), dim)``, for float32 mono 16 kHz arrays."""
        out = np.zeros((len(audios), self.dim), dtype=np.float32)
        for i, raw in enumerate(audios):
            audio = np.ascontiguousarray(raw, dtype=np.float32).reshape(-1)
            if audio.size == 0:
                raise ValueError(f"audio #{i} is empty")
            if self.config.trim_silence:
                audio = trim_silence(audio)
            parts = [self._whisper(audio) if self.config.encoder == "whisper" else _logmel_patch(audio)]
            if self.config.prosody:
                parts.append(prosody_features(audio))
            out[i] = np.concatenate(parts)
        return out

    def _whisper(self, audio: np.ndarray) -> np.ndarray:
        import ctranslate2

        with self._lock:
            self._load()
            pad = max(1, round(self.config.pad_to_s * 100)) * HOP  # samples in one padding step
            window = WINDOW_FRAMES * HOP
            frames: list[np.ndarray] = []
            for start in range(0, audio.size, window):
                piece = audio[start : start + window]
                padded_len = min(window, -(-piece.size // pad) * pad)
                wave = np.zeros(padded_len, dtype=np.float32)
                wave[: piece.size] = piece
                mel = self._mel(wave, padding=0)[:, : padded_len // HOP]
                enc = self._model.encode(ctranslate2.StorageView.from_array(mel[None].astype(np.float32)), to_cpu=True)
                hidden = np.asarray(enc, dtype=np.float32)[0]  # (frames/2, width)
                keep = max(1, -(-piece.size // (2 * HOP)))  # encoder frames covering real audio
                frames.append(hidden[:keep])
        allf = np.concatenate(frames)
        return np.concatenate([allf.mean(axis=0), allf.std(axis=0)]).astype(np.float32)


def mel_filterbank(
    n_freqs: int, n_mels: int, sample_rate_hz: int, f_min: float = 0.0, f_max: float | None = None
) -> np.ndarray:
    """HTK-scale triangular mel filters, (n_freqs, n_mels) float32, unnormalised.

    The same matrix as ``torchaudio.functional.melscale_fbanks`` with its defaults (``norm=None``,
    ``mel_scale="htk"``), which the log-mel branch was built on; torchaudio is not a dependency.
    """
    f_max = sample_rate_hz / 2 if f_max is None else f_max
    all_freqs = np.linspace(0.0, sample_rate_hz // 2, n_freqs)
    mel_min, mel_max = (2595.0 * np.log10(1.0 + f / 700.0) for f in (f_min, f_max))
    f_pts = 700.0 * (10.0 ** (np.linspace(mel_min, mel_max, n_mels + 2) / 2595.0) - 1.0)
    f_diff = np.diff(f_pts)
    slopes = f_pts[None, :] - all_freqs[:, None]  # (n_freqs, n_mels + 2)
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return np.maximum(0.0, np.minimum(down, up)).astype(np.float32)


def _logmel_patch(audio: np.ndarray) -> np.ndarray:
    """A (LOGMEL_BANDS, LOGMEL_FRAMES) log-mel patch, centre-cropped or zero-padded, flattened."""
    spec = torch.from_numpy(mel_filterbank(201, LOGMEL_BANDS, SAMPLE_RATE_HZ))
    wave = torch.from_numpy(np.ascontiguousarray(audio))
    stft = torch.stft(wave, 400, HOP, window=torch.hann_window(400), return_complex=True).abs() ** 2
    mel = torch.log10(torch.clamp(spec.T @ stft, min=1e-10))
    mel = torch.maximum(mel, mel.max() - 8.0)
    arr = ((mel + 4.0) / 4.0).numpy()
    out = np.zeros((LOGMEL_BANDS, LOGMEL_FRAMES), dtype=np.float32)
    n = arr.shape[1]
    if n >= LOGMEL_FRAMES:
        s = (n - LOGMEL_FRAMES) // 2
        out[:] = arr[:, s : s + LOGMEL_FRAMES]
    else:
        out[:, :n] = arr
    return out.reshape(-1)


# --------------------------------------------------------------------------------------------
# on-disk cache
# --------------------------------------------------------------------------------------------


class FeatureCache:
    """Feature vectors of audio files on disk, keyed by producer and by file identity.

    Folder: ``<root>/<sha of (model sha256, feature config)>/``; file: ``<sha of (path, size,
    mtime)>.npy``. A changed file (size or mtime) or a changed producer misses the cache.
    """

    def __init__(self, extractor: AudioFeatureExtractor, root: str | Path | None = None) -> None:
        self.extractor = extractor
        producer = json.dumps(
            {"model_sha256": extractor.model_sha256, "config": extractor.config.to_dict()}, sort_keys=True
        )
        base = Path(root) if root else cache_root() / "features"
        self.folder = base / hashlib.sha256(producer.encode()).hexdigest()[:20]
        self.hits = 0
        self.misses = 0

    def _key(self, path: Path) -> Path:
        st = path.stat()
        ident = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
        return self.folder / f"{hashlib.sha256(ident.encode()).hexdigest()[:32]}.npy"

    def get_files(
        self, paths: Sequence[str | Path], *, progress: Callable[[int], None] | None = None
    ) -> tuple[np.ndarray, list[str]]:
        """Features for each file (zeros where it failed) and, per file, ``""`` or why it failed.

        A missing or undecodable file is logged and reported in the error list; it never stops the run.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        out = np.zeros((len(paths), self.extractor.dim), dtype=np.float32)
        errors = [""] * len(paths)
        for i, p in enumerate(paths):
            path = Path(p)
            try:
                key = self._key(path)
            except OSError:
                errors[i] = f"missing audio file: {path}"
                continue
            if key.exists():
                try:
                    vec = np.load(key)
                    if vec.shape == (self.extractor.dim,):
                        out[i] = vec
                        self.hits += 1
                        if progress:
                            progress(1)
                        continue
                except (OSError, ValueError):
                    logger.warning("rebuilding unreadable cached features %s", key)
            try:
                audio = load_audio(path)
                vec = self.extractor.compute([audio])[0]
            except (AudioDecodeError, ValueError) as exc:
                errors[i] = str(exc)
                continue
            # Unique temporary name: several processes may fill one cache at the same time.
            tmp = key.with_name(f"{key.stem}.{os.getpid()}.{threading.get_ident()}.tmp.npy")
            np.save(tmp, vec)
            tmp.replace(key)
            out[i] = vec
            self.misses += 1
            if progress:
                progress(1)
        return out, errors
