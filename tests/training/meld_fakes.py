"""Generated MELD-shaped corpora (CSV + MELD.Raw clips in wav and mp4) for the training tests."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import wave
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from training.audio import SAMPLE_RATE_HZ
from training.data import LABELS, MELD_RAW_FOLDERS

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(os.environ.get("EMOSTREAM_DATA_DIR", REPO.parent / "shared" / "data"))
SR = SAMPLE_RATE_HZ

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def tone(freq_hz: float, seconds: float, *, seed: int, sr: int = SR, amp: float = 0.4) -> np.ndarray:
    """A voiced-like tone (fundamental + two harmonics) with a syllable envelope and a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f = freq_hz * (1.0 + 0.02 * np.sin(2 * np.pi * 3 * t))  # slight vibrato
    phase = 2 * np.pi * np.cumsum(f) / sr
    sig = np.sin(phase) + 0.5 * np.sin(2 * phase) + 0.25 * np.sin(3 * phase)
    env = 0.6 + 0.4 * np.sin(2 * np.pi * 4 * t) ** 2
    out = amp * sig * env / 1.75 + 0.01 * rng.standard_normal(t.size)
    return out.astype(np.float32)


def write_wav(path: Path, audio: np.ndarray, sr: int = SR, channels: int = 1) -> None:
    pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
    if channels > 1:
        pcm = np.repeat(pcm[:, None], channels, axis=1).reshape(-1)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(pcm.tobytes())


def write_mp4(path: Path, audio: np.ndarray, tmp: Path) -> None:
    """An mp4 with a video track and AAC audio at 44.1 kHz stereo, as MELD.Raw ships them."""
    src = tmp / f"{path.stem}.src.wav"
    write_wav(src, audio)
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "color=c=gray:s=32x32:r=10",
         "-i", str(src), "-shortest", "-c:v", "libx264", "-c:a", "aac", "-ar", "44100", "-ac", "2", str(path)],
        check=True,
    )  # fmt: skip
    src.unlink()


@dataclass(frozen=True, slots=True)
class FakeMeld:
    meld_dir: Path
    raw_dir: Path
    labels: dict[str, list[int]]  # split -> labels in row order


RowFn = Callable[[int, np.random.Generator], tuple[int, str, float]]  # i -> (label, text, tone Hz)


def make_fake_meld(
    root: Path,
    row: RowFn,
    sizes: dict[str, int],
    *,
    mp4_every: int = 0,
    missing: tuple[str, ...] = (),
    corrupt: tuple[str, ...] = (),
    seconds: float = 0.6,
) -> FakeMeld:
    """MELD CSVs plus a MELD.Raw-shaped folder; ``missing``/``corrupt`` name clips like ``train/dia0_utt1``."""
    meld, raw = root / "meld", root / "MELD.Raw"
    meld.mkdir(parents=True)
    labels: dict[str, list[int]] = {}
    for split, n in sizes.items():
        rng = np.random.default_rng(zlib.crc32(split.encode()) % 1000)  # hash() of a str changes per process
        folder = raw / MELD_RAW_FOLDERS[split]
        folder.mkdir(parents=True)
        labels[split] = []
        with (meld / f"{split}_sent_emo.csv").open("w", encoding="utf-8", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(
                [
                    "Sr No.",
                    "Utterance",
                    "Speaker",
                    "Emotion",
                    "Sentiment",
                    "Dialogue_ID",
                    "Utterance_ID",
                    "Season",
                    "Episode",
                    "StartTime",
                    "EndTime",
                ]
            )
            for i in range(n):
                label, text, freq = row(i, rng)
                labels[split].append(label)
                dia, utt = i // 5, i % 5
                w.writerow(
                    [i + 1, text, "Joey", LABELS[label], "neutral", dia, utt, 1, 1, "00:00:01,000", "00:00:02,000"]
                )
                stem = f"dia{dia}_utt{utt}"
                key = f"{split}/{stem}"
                if key in missing:
                    continue
                if key in corrupt:
                    (folder / f"{stem}.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
                    continue
                audio = tone(freq, seconds * float(rng.uniform(0.8, 1.2)), seed=i)
                if mp4_every and i % mp4_every == 0:
                    write_mp4(folder / f"{stem}.mp4", audio, root)
                else:
                    write_wav(folder / f"{stem}.wav", audio)
    return FakeMeld(meld, raw, labels)


def tiny_config(path: Path, cache_dir: Path, **optim: object) -> Path:
    """A config.toml with tiny dimensions for fast tests."""
    opts = {
        "epochs": 12,
        "batch_size": 16,
        "lr_head": 3e-3,
        "lr_encoder": 1e-4,
        "patience_epochs": 20,
        "warmup_ratio": 0.05,
        "device": "cpu",
        "seed": 7,
    } | optim
    lines = [
        "[training.data]",
        f'cache_dir = "{cache_dir}"',
        "audio_corpora = []",
        "[training.model]",
        "text_trainable_layers = 0",
        "hidden_dim = 32",
        "dropout = 0.1",
        "modality_dropout = 0.2",
        "max_text_tokens = 16",
        "[training.optim]",
    ]
    for k, v in opts.items():
        lines.append(f'{k} = "{v}"' if isinstance(v, str) else f"{k} = {v}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
needs_shared = pytest.mark.skipif(
    not (SHARED_DATA / "meld" / "train_sent_emo.csv").is_file(), reason=f"shared data not found at {SHARED_DATA}"
)
