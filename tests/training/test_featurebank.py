"""Feature banks: what a build stores, and acoustic statistics added later to a bank built without them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.training.meld_fakes import tone, write_wav
from training.acoustic import ACOUSTIC_DIM
from training.asr_features import ENCODER_FRAME_SAMPLES, EncoderIdentity
from training.featurebank import BankItem, add_acoustic, build, load_bank


class _FrameEnergy:
    """Stands in for the Whisper pass (the bank's bookkeeping is under test, not the encoder): one
    frame per 20 ms holding that frame's RMS and peak."""

    identity = EncoderIdentity("fake", "0" * 64, "int8", 8.0)

    def encode(self, audio: np.ndarray) -> np.ndarray:
        n = -(-audio.size // ENCODER_FRAME_SAMPLES)
        padded = np.zeros(n * ENCODER_FRAME_SAMPLES, np.float32)
        padded[: audio.size] = audio
        fr = padded.reshape(n, ENCODER_FRAME_SAMPLES)
        return np.stack([np.sqrt((fr**2).mean(1)), np.abs(fr).max(1)], axis=1)


@pytest.fixture
def items(tmp_path: Path) -> list[BankItem]:
    out = []
    for i, f0 in enumerate((120, 210, 160)):
        path = tmp_path / f"clip{i}.wav"
        audio = np.concatenate([np.zeros(8000, np.float32), tone(f0, 1.0, seed=i), np.zeros(8000, np.float32)])
        write_wav(path, audio)
        out.append(BankItem(f"ravdess/clip{i}", "ravdess", f"ravdess0{i}", i, "Kids are talking.", str(path)))
    return out


def test_a_bank_keeps_the_acoustic_statistics_apart_and_adds_them_to_one_built_without(
    items: list[BankItem], tmp_path: Path
) -> None:
    bank_dir = tmp_path / "bank"
    source = {"source": "ravdess", "split": "train", "limit": 0, "seed": 0}
    build(items, bank_dir, encoder=_FrameEnergy(), variants=2, source=source)  # type: ignore[arg-type]
    plain, full = load_bank(bank_dir), load_bank(bank_dir, acoustic=True)
    assert plain.features.shape == (6, 2 * 2 + 10) and full.features.shape == (6, 2 * 2 + 10 + ACOUSTIC_DIM)
    np.testing.assert_array_equal(full.features[:, :14], plain.features)
    assert list(plain.variant) == [0, 1] * 3
    assert not np.allclose(full.features[0, 14:], full.features[1, 14:])  # the stream-like copy differs

    # A bank from before the statistics existed: no "acoustic" array.
    shard = next(bank_dir.glob("shard-*.npz"))
    with np.load(shard) as z:
        arrays = {k: z[k] for k in z.files if k != "acoustic"}
    np.savez(shard, **arrays)
    with pytest.raises(ValueError, match="--add-acoustic"):
        load_bank(bank_dir, acoustic=True)
    # Other settings than the build's would make other audio (other espeak-ng voices): refused.
    with pytest.raises(SystemExit, match="other settings"):
        add_acoustic(items, bank_dir, {**source, "limit": 800})
    assert add_acoustic(items, bank_dir, source) == 1
    # The copies are made again from each clip's own seed: the same statistics as the build's.
    np.testing.assert_allclose(load_bank(bank_dir, acoustic=True).features, full.features, rtol=1e-5, atol=1e-5)
    assert add_acoustic(items, bank_dir, source) == 0  # nothing left to add
    assert json.loads((bank_dir / "meta.json").read_text())["variants"] == 2
