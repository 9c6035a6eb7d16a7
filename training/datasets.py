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
    run = _Assembly(cfg, base_dir, seed, progress)
    if extractor is not None:
        run.cache = FeatureCache(extractor, run.resolve(cfg.cache_dir) if cfg.cache_dir else None)
    if uses_text or cfg.meld_raw_dir:
        run.add_meld(uses_text=uses_text, uses_audio=uses_audio)
    if uses_audio:
        run.add_audio_corpora()
    train = run.with_features("train", run.train, audio=uses_audio)
    dev, test, report = run.dev, run.test, run.report
    report["counts"] = {"train": len(train), **{d.name: len(d) for d in dev}, **{t.name: len(t) for t in test}}
    return RunData(train, dev, test, report, run.trained_on)


@dataclass(slots=True)
class _Assembly:
    """What :func:`build_datasets` collects, corpus by corpus."""

    cfg: TrainingDataConfig
    base_dir: Path
    seed: int
    progress: bool
    cache: FeatureCache | None = None
    train: list[Example] = field(default_factory=list)
    dev: list[Dataset] = field(default_factory=list)
    test: list[Dataset] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)
    trained_on: dict[str, str] = field(default_factory=dict)

    def resolve(self, p: str) -> Path:
        path = Path(p).expanduser()
        return path if path.is_absolute() else self.base_dir / path

    def with_features(self, name: str, examples: list[Example], *, audio: bool) -> Dataset:
        return with_features(name, examples, self.cache if audio else None, self.report, self.progress)

    def add_meld(self, *, uses_text: bool, uses_audio: bool) -> None:
        """MELD's splits (with MELD.Raw clips when configured), plus GoEmotions train for the text branch."""
        cfg = self.cfg
        meld_dir = self.resolve(cfg.meld_dir)
        splits = {s: load_meld(meld_dir, s) for s in ("train", "dev", "test")}
        splits["train"] = _cap(splits["train"], cfg.max_train_samples, self.seed)
        if cfg.meld_raw_dir and uses_audio:
            for s in ("train", "dev", "test"):
                splits[s], rep = attach_meld_raw(splits[s], self.resolve(cfg.meld_raw_dir), s)
                self.report.setdefault("meld_raw", {})[s] = {
                    "found": rep.found,
                    "missing": rep.missing,
                    "missing_examples": list(rep.missing_examples),
                }
            self.trained_on["audio_meld"] = f"MELD.Raw train clips ({self.resolve(cfg.meld_raw_dir)})"
        self.train += splits["train"]
        self.dev.append(self.with_features("meld_dev", splits["dev"], audio=uses_audio))
        self.test.append(self.with_features("meld_test", splits["test"], audio=uses_audio))
        if uses_text:
            self.trained_on["text"] = (
                f"MELD train ({len(splits['train'])} utterances, {meld_dir.name}/train_sent_emo.csv)"
            )
        if uses_text and cfg.use_goemotions:
            extra = _cap(load_goemotions(self.resolve(cfg.goemotions_dir), "train"), cfg.max_train_samples, self.seed)
            self.train += extra
            self.trained_on["text"] += f" + GoEmotions-Ekman train ({len(extra)} single-label comments)"

    def add_audio_corpora(self) -> None:
        """Each acted-speech corpus in ``audio_corpora``, split by speaker (test speakers never trained on)."""
        cfg = self.cfg
        described = [self._add_audio_corpus(corpus) for corpus in cfg.audio_corpora]
        if described:
            self.trained_on["audio"] = " + ".join(described)
            if cfg.audio_corpora and "ravdess" in cfg.audio_corpora:
                self.trained_on["audio"] += "; RAVDESS calm " + ("-> neutral" if cfg.calm_as_neutral else "dropped")
            if "emodb" in cfg.audio_corpora:
                self.trained_on["audio"] += "; EmoDB boredom dropped"

    def _add_audio_corpus(self, corpus: str) -> str:
        cfg = self.cfg
        if corpus == "ravdess":
            items = load_ravdess(self.resolve(cfg.ravdess_dir), calm_as_neutral=cfg.calm_as_neutral)
            test_spk = _speakers("ravdess", cfg.ravdess_test_actors)
            dev_spk = _speakers("ravdess", cfg.ravdess_dev_actors)
        elif corpus == "emodb":
            items = load_emodb(self.resolve(cfg.emodb_dir))
            test_spk = _speakers("emodb", cfg.emodb_test_speakers)
            dev_spk = _speakers("emodb", cfg.emodb_dev_speakers)
        else:
            raise ValueError(f"unknown audio corpus {corpus!r}; use ravdess or emodb")
        rest, tst = split_by_speaker(items, test_spk)
        trn, dv = split_by_speaker(rest, dev_spk)
        trn = _cap(trn, cfg.max_train_samples, self.seed)
        self.train += trn
        if dv:
            self.dev.append(self.with_features(f"{corpus}_dev", dv, audio=True))
        if tst:
            self.test.append(self.with_features(f"{corpus}_test", tst, audio=True))
        held = sorted({e.speaker for e in tst})
        return f"{corpus} ({len(trn)} clips; dev speakers {sorted(dev_spk)}, test speakers {held} never trained on)"
