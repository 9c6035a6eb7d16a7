"""Feature banks: encoder features of many utterances, computed once, reused by every cheap retrain.

A bank is a folder of ``.npz`` shards, each holding for a few hundred utterances the pooled feature
vector (:func:`training.asr_features.pool_utterance`: encoder mean+std and prosody), the span's
spectral and voice-quality statistics (``acoustic``, :mod:`training.acoustic`; appended to the features
by ``load_bank(..., acoustic=True)``) and the metadata that the audio branch and the fusion head train on
(uid, corpus, speaker, label, text, variant). Shards that exist are skipped, so an interrupted build
resumes. ``--add-acoustic`` gives the statistics to a bank built before they existed, from the same
audio (the copies are seeded per clip), without a Whisper pass. Sources:

* ``ravdess`` / ``emodb``: every clip as it is (``variant`` 0: the training path for a clip file) and
  ``--variants - 1`` stream-like copies (:func:`training.augment.stream_like`: VAD roll, noise, level);
* ``meld-tts``: MELD lines of one split spoken by espeak-ng with a random voice, rate and pitch per line
  (independent of the label: the voice carries nothing), paired with their text; label from the text;
* ``meld-raw``: real MELD clips (``dia{D}_utt{U}.mp4`` in MELD.Raw) paired with their text.

Usage: ``python -m training.featurebank --source ravdess --out runs/bank/ravdess [--variants 3] [--add-acoustic]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import subprocess
import tempfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.acoustic import ACOUSTIC_DIM, acoustic_features
from training.asr_features import AsrEncoder, pool_utterance, speech_clip
from training.audio import AudioDecodeError, load_audio
from training.augment import stream_like
from training.corpora import load_emodb, load_ravdess
from training.data import LABELS, attach_meld_raw, load_meld

__all__ = [
    "BankItem",
    "Bank",
    "add_acoustic",
    "load_bank",
    "main",
    "espeak_voice",
    "split_acoustic",
    "synthesize_espeak",
]

logger = logging.getLogger(__name__)

SAMPLE_RATE_HZ = 16000
SHARD = 200
ESPEAK_VOICES = ("en-us", "en", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-us-nyc", "en-gb-x-gbclan")
ESPEAK_VARIANTS = (
    "",
    "m1",
    "m2",
    "m3",
    "m4",
    "m5",
    "m7",
    "f1",
    "f2",
    "f3",
    "f4",
    "f5",
    "klatt",
    "klatt2",
    "klatt3",
    "Alex",
    "Andrea",
    "belinda",
    "benjamin",
    "john",
    "linda",
    "max",
    "paul",
    "steph",
)


@dataclass(frozen=True, slots=True)
class BankItem:
    uid: str
    corpus: str
    speaker: str
    label: int
    text: str
    audio_path: str  # a file to decode, or "" when ``synth`` makes the audio
    synth: str = ""  # espeak-ng voice spec "voice+variant|rate|pitch"


@dataclass(frozen=True, slots=True)
class Bank:
    """Arrays of one bank (all shards concatenated, in build order)."""

    uid: np.ndarray
    corpus: np.ndarray
    speaker: np.ndarray
    label: np.ndarray
    text: np.ndarray
    variant: np.ndarray
    features: np.ndarray  # (N, D) float32

    def __len__(self) -> int:
        return int(self.label.size)

    def select(self, mask: np.ndarray) -> Bank:
        return Bank(*(getattr(self, f)[mask] for f in Bank.__dataclass_fields__))

    @staticmethod
    def concat(banks: Sequence[Bank]) -> Bank:
        return Bank(*(np.concatenate([getattr(b, f) for b in banks]) for f in Bank.__dataclass_fields__))


def espeak_voice(rng: random.Random) -> str:
    """A random espeak-ng voice, rate (words/min) and pitch (0-99): ``"voice+variant|rate|pitch"``."""
    voice = rng.choice(ESPEAK_VOICES)
    variant = rng.choice(ESPEAK_VARIANTS)
    return f"{voice}{'+' + variant if variant else ''}|{rng.randint(120, 200)}|{rng.randint(20, 85)}"


def synthesize_espeak(text: str, spec: str) -> np.ndarray:
    """Speak ``text`` with espeak-ng (``spec`` from :func:`espeak_voice`); float32 mono 16 kHz."""
    voice, rate, pitch = spec.split("|")
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "s.wav"
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", rate, "-p", pitch, "-w", str(wav), "--", text],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        return load_audio(wav)


def _items(source: str, args: argparse.Namespace) -> list[BankItem]:
    if source in ("ravdess", "emodb"):
        examples = load_ravdess(args.ravdess_dir) if source == "ravdess" else load_emodb(args.emodb_dir)
        text = "" if source == "emodb" else None
        out = []
        for e in examples:
            # RAVDESS statement 01 / 02 (the 5th field of the name): the neutral carrier sentence.
            said = (
                text
                if text is not None
                else (
                    "Kids are talking by the door." if e.uid.split("-")[4] == "01" else "Dogs are sitting by the door."
                )
            )
            out.append(BankItem(e.uid, source, e.speaker or "", e.label, said, str(e.audio_path)))
        return out
    meld = load_meld(Path(args.meld_dir), args.split)
    if source == "meld-raw":
        if not args.meld_raw_dir:
            raise SystemExit("--source meld-raw needs --meld-raw-dir (the MELD.Raw folder)")
        meld, _ = attach_meld_raw(meld, args.meld_raw_dir, args.split)
    rng = random.Random(zlib.crc32(f"{args.seed}/{args.split}".encode()))
    examples = [e for e in meld if e.text and e.text.strip()]
    if args.limit and len(examples) > args.limit:
        # Keep rare classes: at most limit/7 per class first, the rest filled at random.
        by_class: dict[int, list[int]] = {}
        for i, e in enumerate(examples):
            by_class.setdefault(e.label, []).append(i)
        chosen: list[int] = []
        for idx in by_class.values():
            rng.shuffle(idx)
            chosen += idx[: args.limit // len(LABELS)]
        rest = [i for i in range(len(examples)) if i not in set(chosen)]
        rng.shuffle(rest)
        chosen += rest[: args.limit - len(chosen)]
        examples = [examples[i] for i in sorted(chosen)]
    out = []
    for e in examples:
        if source == "meld-tts":
            out.append(BankItem(e.uid, "meld-tts", "tts", e.label, str(e.text), "", espeak_voice(rng)))
        elif e.audio_path:
            out.append(BankItem(e.uid, "meld-raw", e.speaker or "", e.label, str(e.text), str(e.audio_path)))
    return out


def _audio_variants(item: BankItem, variants: int) -> Iterator[tuple[int, np.ndarray]]:
    audio = synthesize_espeak(item.text, item.synth) if item.synth else load_audio(item.audio_path)
    yield 0, audio
    rng = np.random.default_rng(zlib.crc32(item.uid.encode()))
    for v in range(1, variants):
        yield v, stream_like(audio, rng)


def build(
    items: Sequence[BankItem],
    out: Path,
    *,
    encoder: AsrEncoder,
    variants: int,
    reverse: bool = False,
    source: dict[str, object] | None = None,
) -> None:
    """Compute the missing shards (in reverse order with ``reverse``, so that a second worker can
    share the job: a shard another worker has started is skipped)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "meta.json").write_text(json.dumps({
        "encoder": {"model_id": encoder.identity.model_id, "sha256": encoder.identity.sha256,
                    "compute_type": encoder.identity.compute_type, "pad_s": encoder.identity.pad_s},
        "variants": variants, "items": len(items), "source": source or {}}, indent=1))  # fmt: skip
    starts = list(range(0, len(items), SHARD))
    for s in reversed(starts) if reverse else starts:
        path = out / f"shard-{s // SHARD:04d}.npz"
        claim = path.with_name(path.name + ".started")
        if path.exists() or claim.exists():
            continue
        claim.touch()
        rows: dict[str, list[object]] = {k: [] for k in ("uid", "corpus", "speaker", "label", "text", "variant")}
        feats = []
        for item in items[s : s + SHARD]:
            try:
                for v, audio in _audio_variants(item, variants):
                    feats.append(pool_utterance(audio, encoder.encode(audio), acoustic=True))
                    for k, val in (
                        ("uid", item.uid),
                        ("corpus", item.corpus),
                        ("speaker", item.speaker),
                        ("label", item.label),
                        ("text", item.text),
                        ("variant", v),
                    ):
                        rows[k].append(val)
            except (AudioDecodeError, subprocess.SubprocessError, ValueError) as exc:
                logger.warning("skipping %s: %s", item.uid, exc)
        tmp = path.with_name(path.name + ".tmp.npz")
        arrays: dict[str, np.ndarray] = {k: np.asarray(v) for k, v in rows.items()}
        arrays["features"], arrays["acoustic"] = split_acoustic(feats)
        np.savez(tmp, **arrays)  # type: ignore[arg-type]
        tmp.replace(path)
        claim.unlink(missing_ok=True)
        logger.info("%s: %d of %d items", out, min(s + SHARD, len(items)), len(items))


def split_acoustic(rows: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``pool_utterance(..., acoustic=True)`` rows as a bank stores them: (features, acoustic)."""
    both = np.asarray(rows, dtype=np.float32).reshape(len(rows), -1)
    return both[:, :-ACOUSTIC_DIM], both[:, -ACOUSTIC_DIM:]


def add_acoustic(items: Sequence[BankItem], folder: Path, source: dict[str, object] | None = None) -> int:
    """Give every shard of a bank built without them its rows' acoustic statistics (no Whisper pass:
    each row's audio is made again, the stream-like copies from the clip's own seed). Returns the
    number of shards changed."""
    by_uid = {item.uid: item for item in items}
    meta = json.loads((folder / "meta.json").read_text())
    built = meta.get("source") or {}
    differ = {k: (built[k], v) for k, v in (source or {}).items() if k in built and built[k] != v}
    if differ:  # e.g. another --limit draws other espeak-ng voices for the same lines
        raise SystemExit(f"{folder} was built with other settings (built, now): {differ}")
    changed = 0
    for path in sorted(folder.glob("shard-*.npz")):
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        if "acoustic" in arrays:
            continue
        rows = np.zeros((arrays["uid"].size, ACOUSTIC_DIM), dtype=np.float32)
        audio_of: dict[int, np.ndarray] = {}
        last = ""
        for i, (uid, v) in enumerate(zip(arrays["uid"].astype(str), arrays["variant"], strict=True)):
            if uid not in by_uid:
                raise SystemExit(f"{path}: row {uid!r} is not an item of this source; was the bank built from it?")
            if uid != last:
                audio_of = dict(_audio_variants(by_uid[uid], int(meta["variants"])))
                last = uid
            rows[i] = acoustic_features(speech_clip(audio_of[int(v)]))
        arrays["acoustic"] = rows
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(path)
        changed += 1
        logger.info("%s: acoustic statistics added", path)
    return changed


def load_bank(folder: str | Path, *, acoustic: bool = False) -> Bank:
    """All shards of a bank folder, concatenated (``acoustic``: the statistics appended to the features)."""
    shards = sorted(Path(folder).glob("shard-*.npz"))
    if not shards:
        raise FileNotFoundError(f"no feature bank shards in {folder}; build it with python -m training.featurebank")
    parts = []
    for p in shards:
        with np.load(p, allow_pickle=False) as z:
            features = z["features"]
            if acoustic:
                if "acoustic" not in z.files:
                    raise ValueError(
                        f"{p} has no acoustic statistics (built before they existed); add them with "
                        f"python -m training.featurebank --source ... --out {folder} --add-acoustic"
                    )
                features = np.concatenate([features, z["acoustic"]], axis=1)
            parts.append(
                Bank(
                    z["uid"],
                    z["corpus"],
                    z["speaker"],
                    z["label"].astype(np.int64),
                    z["text"],
                    z["variant"].astype(np.int64),
                    features,
                )
            )
    return Bank.concat(parts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.featurebank", description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", required=True, choices=("ravdess", "emodb", "meld-tts", "meld-raw"))
    parser.add_argument("--out", required=True, help="bank folder (shards are added; existing ones kept)")
    parser.add_argument("--variants", type=int, default=1, help="copies per clip: 1 = as is, more = stream-like")
    parser.add_argument("--split", default="train", choices=("train", "dev", "test"), help="MELD split")
    parser.add_argument("--limit", type=int, default=0, help="MELD lines at most (0 = all), rare classes first")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reverse", action="store_true", help="shards in reverse order (a second worker)")
    parser.add_argument("--add-acoustic", action="store_true",
                        help="only add the acoustic statistics to the shards of a bank that lack them")  # fmt: skip
    parser.add_argument("--whisper-model", default="base")
    parser.add_argument("--pad-s", type=float, default=8.0, help="the service's asr.pad_s")
    parser.add_argument("--cpu-threads", type=int, default=2)
    parser.add_argument("--ravdess-dir", default="../shared/data/ravdess")
    parser.add_argument("--emodb-dir", default="../shared/data/emodb")
    parser.add_argument("--meld-dir", default="../shared/data/meld")
    parser.add_argument("--meld-raw-dir", default="", help="MELD.Raw folder (for --source meld-raw)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.variants < 1:
        parser.error("--variants must be >= 1")
    items = _items(args.source, args)
    source = {"source": args.source, "split": args.split, "limit": args.limit, "seed": args.seed}
    if args.add_acoustic:
        logger.info("%d shards given acoustic statistics", add_acoustic(items, Path(args.out), source))
        return 0
    encoder = AsrEncoder(args.whisper_model, pad_s=args.pad_s, cpu_threads=args.cpu_threads)
    build(items, Path(args.out), encoder=encoder, variants=args.variants, reverse=args.reverse, source=source)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
