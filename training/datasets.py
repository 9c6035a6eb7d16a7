"""Assemble the train/dev/test :class:`~training.train.Dataset` s a run needs from the config.

Text: MELD ``{train,dev,test}_sent_emo.csv`` (+ GoEmotions train when ``use_goemotions``).
Audio: MELD.Raw clips when ``meld_raw_dir`` is set (rows whose clip is missing or unreadable go
text-only and are counted), and the audio-only corpora in ``audio_corpora`` (RAVDESS, EmoDB),
split by speaker into train / dev (early stopping) / test (never trained on).
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from training.corpora import load_emodb, load_goemotions, load_ravdess, split_by_speaker
from training.data import Example, attach_meld_raw, load_meld
from training.features import AudioFeatureExtractor, FeatureCache
from training.settings import TrainingDataConfig
from training.train import Dataset

__all__ = ["RunData", "build_datasets", "with_features"]

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class RunData:
    train: Dataset
    dev: list[Dataset]
    test: list[Dataset]
    report: dict[str, Any] = field(default_factory=dict)  # counts, missing clips, sources
    trained_on: dict[str, str] = field(default_factory=dict)


def with_features(
    name: str, examples: list[Example], cache: FeatureCache | None, report: dict[str, Any], progress: bool = True
) -> Dataset:
    """A Dataset with cached audio features for rows that have an ``audio_path``."""
    if cache is None or not any(e.audio_path for e in examples):
        return Dataset(name, tuple(examples))
    rows = [i for i, e in enumerate(examples) if e.audio_path]
    feats = np.zeros((len(examples), cache.extractor.dim), dtype=np.float32)
    ok = np.zeros(len(examples), dtype=bool)
    with tqdm(total=len(rows), desc=f"audio features {name}", disable=not progress, leave=False) as bar:
        got, errors = cache.get_files([str(examples[i].audio_path) for i in rows], progress=bar.update)
    failed = []
    for j, i in enumerate(rows):
        if errors[j]:
            failed.append(errors[j])
        else:
            feats[i] = got[j]
            ok[i] = True
    if failed:
        logger.warning(
            "%s: %d of %d clips could not be decoded (text-only for those rows), e.g. %s",
            name,
            len(failed),
            len(rows),
            failed[0],
        )
    report.setdefault("unreadable_clips", {})[name] = {"count": len(failed), "examples": failed[:3]}
    return Dataset(name, tuple(examples), feats, ok)


def _speakers(prefix: str, ids: tuple[int, ...]) -> set[str]:
    return {f"{prefix}{i:02d}" for i in ids}


def _cap(examples: list[Example], limit: int, seed: int) -> list[Example]:
    if not limit or len(examples) <= limit:
        return examples
    rng = random.Random(seed)
    return sorted(rng.sample(examples, limit), key=lambda e: e.uid)


def build_datasets(
    cfg: TrainingDataConfig,
    *,
    base_dir: Path,
    uses_text: bool,
    uses_audio: bool,
    extractor: AudioFeatureExtractor | None,
    seed: int = 0,
    progress: bool = True,
) -> RunData:
    """Everything one run trains and is evaluated on (see the module docstring)."""

    def resolve(p: str) -> Path:
        path = Path(p).expanduser()
        return path if path.is_absolute() else base_dir / path

    report: dict[str, Any] = {}
    trained_on: dict[str, str] = {}
    cache = FeatureCache(extractor, resolve(cfg.cache_dir) if cfg.cache_dir else None) if extractor else None
    meld_dir = resolve(cfg.meld_dir)
    need_meld = uses_text or bool(cfg.meld_raw_dir)
    train_ex: list[Example] = []
    dev: list[Dataset] = []
    test: list[Dataset] = []
    if need_meld:
        splits = {s: load_meld(meld_dir, s) for s in ("train", "dev", "test")}
        splits["train"] = _cap(splits["train"], cfg.max_train_samples, seed)
        if cfg.meld_raw_dir and uses_audio:
            for s in ("train", "dev", "test"):
                splits[s], rep = attach_meld_raw(splits[s], resolve(cfg.meld_raw_dir), s)
                report.setdefault("meld_raw", {})[s] = {
                    "found": rep.found,
                    "missing": rep.missing,
                    "missing_examples": list(rep.missing_examples),
                }
            trained_on["audio_meld"] = f"MELD.Raw train clips ({resolve(cfg.meld_raw_dir)})"
        train_ex += splits["train"]
        dev.append(with_features("meld_dev", splits["dev"], cache if uses_audio else None, report, progress))
        test.append(with_features("meld_test", splits["test"], cache if uses_audio else None, report, progress))
        if uses_text:
            trained_on["text"] = f"MELD train ({len(splits['train'])} utterances, {meld_dir.name}/train_sent_emo.csv)"
        if uses_text and cfg.use_goemotions:
            extra = _cap(load_goemotions(resolve(cfg.goemotions_dir), "train"), cfg.max_train_samples, seed)
            train_ex += extra
            trained_on["text"] += f" + GoEmotions-Ekman train ({len(extra)} single-label comments)"
    audio_train_desc = []
    if uses_audio:
        for corpus in cfg.audio_corpora:
            if corpus == "ravdess":
                items = load_ravdess(resolve(cfg.ravdess_dir), calm_as_neutral=cfg.calm_as_neutral)
                test_spk, dev_spk = (
                    _speakers("ravdess", cfg.ravdess_test_actors),
                    _speakers("ravdess", cfg.ravdess_dev_actors),
                )
            elif corpus == "emodb":
                items = load_emodb(resolve(cfg.emodb_dir))
                test_spk, dev_spk = (
                    _speakers("emodb", cfg.emodb_test_speakers),
                    _speakers("emodb", cfg.emodb_dev_speakers),
                )
            else:
                raise ValueError(f"unknown audio corpus {corpus!r}; use ravdess or emodb")
            rest, tst = split_by_speaker(items, test_spk)
            trn, dv = split_by_speaker(rest, dev_spk)
            trn = _cap(trn, cfg.max_train_samples, seed)
            train_ex += trn
            if dv:
                dev.append(with_features(f"{corpus}_dev", dv, cache, report, progress))
            if tst:
                test.append(with_features(f"{corpus}_test", tst, cache, report, progress))
            held = sorted({e.speaker for e in tst})
            audio_train_desc.append(
                f"{corpus} ({len(trn)} clips; dev speakers {sorted(dev_spk)}, test speakers {held} never trained on)"
            )
        if audio_train_desc:
            trained_on["audio"] = " + ".join(audio_train_desc)
            if cfg.audio_corpora and "ravdess" in cfg.audio_corpora:
                trained_on["audio"] += "; RAVDESS calm " + ("-> neutral" if cfg.calm_as_neutral else "dropped")
            if "emodb" in cfg.audio_corpora:
                trained_on["audio"] += "; EmoDB boredom dropped"
    train = with_features("train", train_ex, cache if uses_audio else None, report, progress)
    report["counts"] = {"train": len(train), **{d.name: len(d) for d in dev}, **{t.name: len(t) for t in test}}
    return RunData(train, dev, test, report, trained_on)
