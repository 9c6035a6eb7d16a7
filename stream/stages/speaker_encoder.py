"""Speaker embeddings: the GE2E encoder packaged in ``Resemblyzer==0.1.4``, without its librosa front-end.

Resemblyzer's wheel ships ``resemblyzer/pretrained.pt``, a GE2E speaker encoder (3-layer LSTM over
40-band mel frames, 256-d L2-normed output, Apache-2.0). Its own code imports librosa and
``webrtcvad`` (which would shadow ``webrtcvad-wheels``), so the package is installed with
``--no-deps`` and nothing of it is imported: this module checks the weights' sha256, rebuilds the
small network with torch, and computes the same mel spectrogram in numpy from Resemblyzer's
``hparams.py`` (25 ms Hann window, 10 ms hop, 40 Slaney mel bands over 0-8 kHz, power 2, not log).
``tests/stream/test_speaker_encoder.py`` checks the mel against librosa's output, computed once and
kept as a fixture (``tests/stream/data/make_mel_reference.py`` says how).

Any other encoder can be plugged in by a local path (``speakers.encoder``): a checkpoint of the same
architecture in Resemblyzer's format (``{"model_state": ...}``), or a TorchScript module mapping mel
frames ``(batch, frames, 40)`` to embeddings ``(batch, dim)``.

Embeddings use voiced frames only (webrtcvad, most aggressive mode, a little dilation), and an
utterance longer than one 1.6 s window is embedded as overlapping windows whose embeddings are
averaged -- Resemblyzer's own ``embed_utterance`` rule.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch
import webrtcvad
from torch import nn

from training.weights import ModelError, sha256_file

__all__ = [
    "GE2E_SHA256",
    "MEL_BANDS",
    "GE2ENetwork",
    "SpeakerEncoder",
    "mel_filterbank",
    "mel_spectrogram",
    "resolve_speaker_encoder",
    "voiced",
]

logger = logging.getLogger(__name__)

# From resemblyzer/hparams.py (0.1.4).
SAMPLE_RATE_HZ: Final = 16000
WINDOW_SAMPLES: Final = 400  # mel_window_length = 25 ms
HOP_SAMPLES: Final = 160  # mel_window_step = 10 ms
MEL_BANDS: Final = 40
PARTIAL_FRAMES: Final = 160  # 1.6 s windows
NORM_TARGET_DBFS: Final = -30.0  # audio_norm_target_dBFS, increase only
PARTIALS_PER_S: Final = 1.3  # embed_utterance(rate=1.3, min_coverage=0.75)
MIN_COVERAGE: Final = 0.75
VAD_FRAME_SAMPLES: Final = 480  # 30 ms

GE2E_PACKAGE: Final = ("Resemblyzer", "0.1.4")
GE2E_SHA256: Final = "39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e"
_verified: set[tuple[str, int, int]] = set()
_verify_lock = threading.Lock()


# --------------------------------------------------------------------------- the mel front-end


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa's default, ``htk=False``): linear below 1 kHz, log above."""
    hz = np.asarray(hz, dtype=np.float64)
    f_sp = 200.0 / 3
    mels = hz / f_sp
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    log_part = min_log_mel + np.log(np.maximum(hz, min_log_hz) / min_log_hz) / logstep
    return np.where(hz >= min_log_hz, log_part, mels)


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    mels = np.asarray(mels, dtype=np.float64)
    f_sp = 200.0 / 3
    freqs = f_sp * mels
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    return np.where(mels >= min_log_mel, min_log_hz * np.exp(logstep * (mels - min_log_mel)), freqs)


def mel_filterbank(
    sample_rate_hz: int = SAMPLE_RATE_HZ, n_fft: int = WINDOW_SAMPLES, n_mels: int = MEL_BANDS
) -> np.ndarray:
    """``(n_mels, n_fft // 2 + 1)`` triangular filters, Slaney-normalised (area 1), 0 Hz to Nyquist.

    The same matrix as ``librosa.filters.mel(sr=..., n_fft=..., n_mels=...)`` with its defaults.
    """
    fft_freqs = np.linspace(0.0, sample_rate_hz / 2, n_fft // 2 + 1)
    mel_points = _mel_to_hz(
        np.linspace(_hz_to_mel(np.array(0.0)), _hz_to_mel(np.array(sample_rate_hz / 2)), n_mels + 2)
    )
    widths = np.diff(mel_points)
    ramps = mel_points[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_points[2:] - mel_points[:-2]))[:, None]
    return weights.astype(np.float32)


_FILTERBANK: Final = mel_filterbank()
_WINDOW: Final = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WINDOW_SAMPLES) / WINDOW_SAMPLES)).astype(np.float32)


def mel_spectrogram(wav: np.ndarray) -> np.ndarray:
    """``(frames, 40)`` power mel spectrogram of 16 kHz audio, as Resemblyzer's ``wav_to_mel_spectrogram``.

    librosa's ``melspectrogram`` defaults: frames centred (``n_fft // 2`` of padding each side, mirrored
    as in the librosa versions the encoder was trained with), a periodic Hann window, power 2.
    """
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 1:
        raise ValueError(f"audio must be mono (1-D), got shape {wav.shape}")
    pad = WINDOW_SAMPLES // 2
    padded = np.pad(wav, pad, mode="reflect") if wav.size > pad else np.pad(wav, pad)
    n_frames = 1 + (padded.size - WINDOW_SAMPLES) // HOP_SAMPLES
    frames = np.lib.stride_tricks.sliding_window_view(padded, WINDOW_SAMPLES)[::HOP_SAMPLES][:n_frames]
    power = np.abs(np.fft.rfft(frames * _WINDOW, axis=1)) ** 2
    mel: np.ndarray = (power.astype(np.float32) @ _FILTERBANK.T).astype(np.float32)
    return mel


def voiced(wav: np.ndarray, *, dilate_frames: int = 3) -> np.ndarray:
    """The voiced parts of ``wav`` (float32 in [-1, 1]) joined, by webrtcvad in its strictest mode.

    Each speech frame keeps ``dilate_frames`` frames either side (onsets, offsets). When fewer than
    0.3 s are voiced the whole input is returned: a short embedding is better than none.
    """
    n = wav.size // VAD_FRAME_SAMPLES
    if n == 0:
        return wav
    pcm = (np.clip(wav[: n * VAD_FRAME_SAMPLES], -1.0, 1.0) * 32767).astype(np.int16)
    vad = webrtcvad.Vad(3)
    flags = np.array(
        [
            vad.is_speech(pcm[i * VAD_FRAME_SAMPLES : (i + 1) * VAD_FRAME_SAMPLES].tobytes(), SAMPLE_RATE_HZ)
            for i in range(n)
        ]
    )
    if dilate_frames > 0 and flags.any():
        kernel = np.ones(2 * dilate_frames + 1)
        flags = np.convolve(flags.astype(float), kernel, mode="same") > 0
    if flags.sum() * VAD_FRAME_SAMPLES < 0.3 * SAMPLE_RATE_HZ:
        return wav
    kept: np.ndarray = wav[: n * VAD_FRAME_SAMPLES].reshape(n, VAD_FRAME_SAMPLES)[flags].reshape(-1)
    return kept


def _normalise_volume(wav: np.ndarray) -> np.ndarray:
    rms = float(np.sqrt(np.mean(np.square(wav, dtype=np.float64)))) if wav.size else 0.0
    if rms <= 1e-8:
        return wav
    change_db = NORM_TARGET_DBFS - 20 * np.log10(rms)
    return wav if change_db < 0 else (wav * 10 ** (change_db / 20)).astype(np.float32)


def partial_slices(n_samples: int) -> list[slice]:
    """Mel-frame windows of 1.6 s covering ``n_samples`` (Resemblyzer's ``compute_partial_slices``)."""
    n_frames = int(np.ceil((n_samples + 1) / HOP_SAMPLES))
    step = int(np.round((SAMPLE_RATE_HZ / PARTIALS_PER_S) / HOP_SAMPLES))
    slices = [slice(i, i + PARTIAL_FRAMES) for i in range(0, max(1, n_frames - PARTIAL_FRAMES + step + 1), step)]
    coverage = (n_samples - slices[-1].start * HOP_SAMPLES) / (PARTIAL_FRAMES * HOP_SAMPLES)
    if coverage < MIN_COVERAGE and len(slices) > 1:
        slices = slices[:-1]
    return slices


# --------------------------------------------------------------------------- the network


class GE2ENetwork(nn.Module):
    """Resemblyzer's ``VoiceEncoder`` network: LSTM(40 -> 256, 3 layers) -> linear -> ReLU -> L2 norm."""

    def __init__(self, n_mels: int = MEL_BANDS, hidden: int = 256, dim: int = 256, layers: int = 3) -> None:
        super().__init__()
        self.lstm = nn.LSTM(n_mels, hidden, layers, batch_first=True)
        self.linear = nn.Linear(hidden, dim)
        self.relu = nn.ReLU()

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        _, (hidden, _) = self.lstm(mels)
        raw = self.relu(self.linear(hidden[-1]))
        unit: torch.Tensor = raw / torch.norm(raw, dim=1, keepdim=True).clamp_min(1e-8)
        return unit


@dataclass(frozen=True, slots=True)
class ResolvedEncoder:
    path: Path
    model_id: str
    packaged: bool


def resolve_speaker_encoder(name: str) -> ResolvedEncoder:
    """``"ge2e"`` -> Resemblyzer's packaged weights (sha256-checked); anything else is a local file path."""
    if name == "ge2e":
        spec = importlib.util.find_spec("resemblyzer")
        if spec is None or spec.origin is None:
            raise ModelError(
                "the packaged speaker encoder needs Resemblyzer==0.1.4: install it with "
                "`pip install --no-deps Resemblyzer==0.1.4` (`make setup` does this); --no-deps keeps its "
                "`webrtcvad` from shadowing `webrtcvad-wheels`"
            )
        path = Path(spec.origin).parent / "pretrained.pt"
        _check_sha256(path)
        return ResolvedEncoder(path, f"ge2e ({GE2E_PACKAGE[0]}=={GE2E_PACKAGE[1]})", True)
    path = Path(name).expanduser()
    if not path.is_file():
        raise ModelError(f"speaker encoder {name!r} is neither 'ge2e' (packaged) nor an existing file")
    return ResolvedEncoder(path.resolve(), str(path.resolve()), False)


def _check_sha256(path: Path) -> None:
    if not path.is_file():
        raise ModelError(f"speaker encoder weights {path} are missing; reinstall Resemblyzer==0.1.4 with --no-deps")
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    with _verify_lock:
        if key in _verified:
            return
        actual = sha256_file(path)
        if actual != GE2E_SHA256:
            raise ModelError(f"speaker encoder {path} failed its sha256 check (expected {GE2E_SHA256}, got {actual})")
        _verified.add(key)


def _load_network(resolved: ResolvedEncoder) -> nn.Module:
    try:
        obj: Any = torch.load(str(resolved.path), map_location="cpu", weights_only=True)
    except Exception as first:  # not a state dict: perhaps TorchScript
        try:
            module: nn.Module = torch.jit.load(str(resolved.path), map_location="cpu")  # type: ignore[no-untyped-call]
            return module.eval()
        except Exception as exc:
            raise ModelError(f"cannot load speaker encoder {resolved.path}: {first}; as TorchScript: {exc}") from exc
    state = obj.get("model_state", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        raise ModelError(f"speaker encoder {resolved.path} holds no state dict ({type(obj).__name__})")
    net = GE2ENetwork()
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing:
        raise ModelError(f"speaker encoder {resolved.path} lacks weights {missing[:4]}: not a GE2E checkpoint")
    if unexpected:  # Resemblyzer's checkpoint also holds the training loss's similarity scale
        logger.debug("speaker encoder %s: ignored keys %s", resolved.path, unexpected)
    return net.eval()


class SpeakerEncoder:
    """Audio -> unit-length speaker embedding (numpy float32). Thread-safe; uses the torch CPU threads.

    ``stateless``: an embedding depends on the audio alone, so utterance previews may be embedded early."""

    stateless = True

    def __init__(self, network: nn.Module, model_id: str) -> None:
        self._net = network
        self.model_id = model_id
        self._lock = threading.Lock()

    @classmethod
    def load(cls, name: str = "ge2e") -> SpeakerEncoder:
        resolved = resolve_speaker_encoder(name)
        return cls(_load_network(resolved), resolved.model_id)

    def embed_windows(self, wav: np.ndarray, *, voiced_only: bool = True) -> np.ndarray:
        """``(windows, dim)`` embeddings of ``wav``'s 1.6 s windows (voiced frames only by default)."""
        wav = np.asarray(wav, dtype=np.float32)
        if wav.ndim != 1 or wav.size == 0:
            raise ValueError(f"audio must be non-empty mono, got shape {wav.shape}")
        if voiced_only:
            wav = voiced(wav)
        wav = _normalise_volume(wav)
        slices = partial_slices(wav.size)
        needed = slices[-1].stop * HOP_SAMPLES
        if needed > wav.size:
            wav = np.pad(wav, (0, needed - wav.size))
        mel = mel_spectrogram(wav)
        batch = np.stack([mel[s] for s in slices])
        with self._lock, torch.inference_mode():
            out = self._net(torch.from_numpy(batch))
        return np.asarray(out.detach().cpu().numpy(), dtype=np.float32)

    def embed(self, wav: np.ndarray, *, voiced_only: bool = True) -> np.ndarray:
        """One embedding per utterance: its windows' embeddings averaged and L2-normed."""
        windows = self.embed_windows(wav, voiced_only=voiced_only)
        mean = windows.mean(axis=0)
        norm = float(np.linalg.norm(mean))
        out: np.ndarray = (mean / norm).astype(np.float32) if norm > 0 else mean
        return out
