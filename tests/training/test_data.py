"""MELD CSV loading (real files when present), mojibake repair, MELD.Raw clips, RAVDESS/EmoDB loaders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.training.meld_fakes import SHARED_DATA, make_fake_meld, needs_ffmpeg, needs_shared
from training.corpora import load_emodb, load_goemotions, load_ravdess, split_by_speaker
from training.data import LABELS, attach_meld_raw, load_meld, repair_text
from training.datasets import build_datasets
from training.settings import TrainingDataConfig


@pytest.mark.parametrize(
    ("raw", "fixed"),
    [
        ("You must\u00e2\u20ac\u2122ve had your hands full.", "You must've had your hands full."),
        ("Oh my God\u00e2\u20ac\u00a6", "Oh my God..."),
        ("Well\u00c2\u00a0 I don't know", "Well I don't know"),
        ("Wait \u00e2\u20ac\u201d no", "Wait - no"),
        ('Wait \u00e2\u20ac" no', "Wait - no"),
        ("It\x92s fine", "It's fine"),
        ("\u201cQuoted\u201d  text ", '"Quoted" text'),
        ("Caf\u00c3\u00a9 au lait", "Caf\u00e9 au lait"),
        ("Plain text stays.", "Plain text stays."),
    ],
)
def test_repair_text(raw: str, fixed: str) -> None:
    assert repair_text(raw) == fixed


@needs_shared
def test_real_meld_csvs_load_with_the_published_row_counts() -> None:
    sizes = {"train": 9989, "dev": 1109, "test": 2610}
    for split, n in sizes.items():
        rows = load_meld(SHARED_DATA / "meld", split)
        assert len(rows) == n
        assert {LABELS[r.label] for r in rows} == set(LABELS)
        texts = " ".join(r.text or "" for r in rows)
        for bad in ("\u00e2\u20ac", "\u00c2", "\x92", "\u2019", "\ufffd"):
            assert bad not in texts, f"{split}: {bad!r} left in the text"
    train = load_meld(SHARED_DATA / "meld", "train")
    assert train[1].text == "You must've had your hands full."
    assert train[0].uid == "meld/train/dia0_utt0"


def test_missing_meld_folder_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="train_sent_emo.csv"):
        load_meld(tmp_path, "train")
    with pytest.raises(ValueError, match="split"):
        load_meld(tmp_path, "validation")


@needs_ffmpeg
def test_meld_raw_clips_mp4_and_wav_missing_and_corrupt_go_text_only(tmp_path: Path) -> None:
    def row(i: int, rng: np.random.Generator) -> tuple[int, str, float]:
        return i % 3, f"utterance number {i}", 150.0 + 100 * (i % 3)

    fake = make_fake_meld(
        tmp_path, row, {"train": 8, "dev": 3, "test": 3}, mp4_every=3,
        missing=("train/dia0_utt1",), corrupt=("train/dia0_utt2",),
    )  # fmt: skip
    rows, report = attach_meld_raw(load_meld(fake.meld_dir, "train"), fake.raw_dir, "train")
    assert report.found == 7 and report.missing == 1
    assert report.missing_examples == ("meld/train/dia0_utt1",)
    assert rows[1].audio_path is None and rows[0].audio_path is not None and rows[0].audio_path.endswith(".mp4")

    from training.features import AudioFeatureExtractor, FeatureConfig

    extractor = AudioFeatureExtractor(FeatureConfig(encoder="logmel-cnn"))  # no weights needed
    cfg = TrainingDataConfig(
        meld_dir=str(fake.meld_dir), meld_raw_dir=str(fake.raw_dir), audio_corpora=(), cache_dir=str(tmp_path / "cache")
    )
    data = build_datasets(cfg, base_dir=tmp_path, uses_text=True, uses_audio=True, extractor=extractor, progress=False)
    assert data.report["meld_raw"]["train"]["missing"] == 1
    assert data.report["unreadable_clips"]["train"]["count"] == 1
    assert "dia0_utt2" in data.report["unreadable_clips"]["train"]["examples"][0]
    assert data.train.has_audio is not None
    assert data.train.has_audio.tolist() == [True, False, False, True, True, True, True, True]
    assert all(e.text for e in data.train.examples)  # every row keeps its text


def _touch(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_bytes(b"")


def test_ravdess_layout_labels_and_calm(tmp_path: Path) -> None:
    _touch(tmp_path / "Actor_01", ["03-01-01-01-01-01-01.wav", "03-01-02-01-01-01-01.wav", "03-01-05-02-01-01-01.wav",
                                   "02-01-05-02-01-01-01.wav", "README.txt"])  # fmt: skip
    _touch(tmp_path / "Actor_18", ["03-01-08-01-02-02-18.flac"])
    rows = load_ravdess(tmp_path)
    assert [(LABELS[r.label], r.speaker) for r in rows] == [
        ("neutral", "ravdess01"), ("neutral", "ravdess01"), ("anger", "ravdess01"), ("surprise", "ravdess18")
    ]  # fmt: skip
    assert len(load_ravdess(tmp_path, calm_as_neutral=False)) == 3
    train, test = split_by_speaker(rows, {"ravdess18"})
    assert {r.speaker for r in train} == {"ravdess01"} and {r.speaker for r in test} == {"ravdess18"}


def test_emodb_drops_boredom(tmp_path: Path) -> None:
    _touch(tmp_path, ["03a01Wa.wav", "03a01La.wav", "16b10Fb.flac", "08a02Ec.wav"])
    rows = load_emodb(tmp_path)
    assert [(LABELS[r.label], r.speaker) for r in rows] == [
        ("anger", "emodb03"), ("disgust", "emodb08"), ("joy", "emodb16")
    ]  # fmt: skip


@needs_shared
def test_real_audio_corpora_and_goemotions() -> None:
    ravdess = load_ravdess(SHARED_DATA / "ravdess")
    assert len(ravdess) == 1194
    assert len({r.speaker for r in ravdess}) == 20
    emodb = load_emodb(SHARED_DATA / "emodb")
    assert len(emodb) == 535 - 81  # boredom dropped
    go = load_goemotions(SHARED_DATA / "goemotions_ekman", "dev")
    assert 4000 < len(go) < 5426 and all(g.text for g in go)
