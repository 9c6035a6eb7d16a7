"""Train the audio branch and the learned fusion head on top of a checkpoint's text branch.

``python -m training.fuse --base models/emostream-default.pt --out models/emostream-default.pt``

Cheap to rerun on a new text branch: the audio features of every row come from feature banks built
once (:mod:`training.featurebank`); only the text branch's forward pass over ~2-3k lines and the small
networks are recomputed (minutes on 2 CPU cores).

Data (speaker-independent; the test speakers are never trained on, the dev speakers only calibrate):

* audio branch: RAVDESS (calm as neutral) and EmoDB clips of the train speakers, each as the clip
  itself and as stream-like copies (roll, noise, level), 7 MELD classes;
* fusion head, paired rows of two regimes, so that it learns when to trust which branch:
  **voice** -- those clips with neutral words (their own carrier sentence, or a neutral MELD line),
  label from the voice; audio log-probabilities out of fold (4 speaker folds; causal speaker offsets of
  a simulated stream; temperature-calibrated), as at test time;
  **words** -- MELD dev lines spoken by espeak-ng (random voice, rate, pitch: the voice carries
  nothing), label from the text; and **agree** -- a clip with a MELD line of its own label.
  With a ``meld-raw`` bank (real MELD clips from MELD.Raw) its rows join the words regime as real
  paired audio (label from the annotation).
* calibration: the audio branch's and the fusion head's temperatures on the dev speakers' clips and
  on a dialogue-disjoint 30 % of the spoken MELD lines.

Reported: RAVDESS held-out actors' clip accuracy (audio only, fused with the carrier sentence),
optional streams (``--eval-bank``: features as the live segmenter cut them), and spoken MELD test
lines (text-only vs fused weighted-F1).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shlex
import sys
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.asr_features import EncoderIdentity
from training.audio_branch import (
    AudioBranch,
    AudioBranchConfig,
    evaluate_rows,
    fit_audio_branch,
    out_of_fold_logp,
    simulated_logp,
)
from training.audio_fusion import AudioFusion
from training.data import LABELS, load_meld
from training.featurebank import Bank, load_bank
from training.late_fusion import (
    FusionHead,
    FusionHeadConfig,
    expected_calibration_error,
    fit_fusion_head,
    fit_temperature,
)
from training.metrics import classification_metrics
from training.model import FusionClassifier

__all__ = ["main", "text_logprobs", "text_only_model"]

logger = logging.getLogger(__name__)

RAVDESS_TEST = tuple(f"ravdess{a:02d}" for a in (17, 18, 19, 20))
RAVDESS_DEV = ("ravdess15", "ravdess16")
EMODB_TEST = ("emodb15", "emodb16")
EMODB_DEV = ("emodb14",)


# ----------------------------------------------------------------------------- text branch


def text_only_model(model: FusionClassifier) -> FusionClassifier:
    """``model`` without its (old) audio branch: the text branch and head, as a text-mode model."""
    if not model.config.uses_text:
        raise ValueError("the base checkpoint has no text branch")
    if not model.config.uses_audio:
        return model
    cfg = dataclasses.replace(model.config, mode="text", audio_dim=0, fusion="learned")
    text = FusionClassifier(cfg, None, text_model=model.text_model)
    state = {k: v for k, v in model.trained_state_dict().items() if k in set(text.trained_state_dict())}
    text.load_state_dict(state, strict=False)
    text.checkpoint_meta = dict(model.checkpoint_meta)
    return text.eval()


@torch.no_grad()
def text_logprobs(model: FusionClassifier, texts: Sequence[str], batch: int = 64) -> np.ndarray:
    """Text-only log-probabilities of ``texts`` (the checkpoint's text branch and head)."""
    out = np.zeros((len(texts), len(model.config.labels)), dtype=np.float32)
    for s in range(0, len(texts), batch):
        chunk = [t.strip() or "." for t in texts[s : s + batch]]
        kw = model.tokenize(chunk, "cpu")
        logits = model(batch_size=len(chunk), text_rows=torch.arange(len(chunk)), **kw)
        out[s : s + len(chunk)] = logits.float().log_softmax(-1).numpy()
    return out


class TextCache:
    """Text log-probabilities computed once per distinct text."""

    def __init__(self, model: FusionClassifier) -> None:
        self.model = model
        self._memo: dict[str, np.ndarray] = {}

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        todo = sorted({t for t in texts if t not in self._memo})
        if todo:
            logger.info("text branch: %d new lines", len(todo))
            for t, row in zip(todo, text_logprobs(self.model, todo), strict=True):
                self._memo[t] = row
        return np.stack([self._memo[t] for t in texts]) if texts else np.zeros((0, 7), dtype=np.float32)


# ----------------------------------------------------------------------------- helpers


def _in(values: np.ndarray, allowed: Sequence[str]) -> np.ndarray:
    return np.isin(values.astype(str), np.asarray(allowed))


def _dialogue(uid: str) -> str:
    return uid.rsplit("_utt", 1)[0]


def _metrics(logp: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    m = classification_metrics(y, logp.argmax(1), LABELS)
    return {"accuracy": round(float(m["accuracy"]), 4), "weighted_f1": round(float(m["weighted_f1"]), 4),
            "macro_f1": round(float(m["macro_f1"]), 4), "n": int(len(y)),
            "ece": round(expected_calibration_error(logp, y), 4)}  # fmt: skip


def _shuffled(bank: Bank, seed: int = 0) -> Bank:
    """Clips in a random order (corpus files sort by emotion: a running statistic would see them so)."""
    return bank.select(np.random.default_rng(seed).permutation(len(bank)))


def _audio_only(branch: AudioBranch, bank: Bank, *, running: bool | None) -> tuple[np.ndarray, np.ndarray]:
    """(log-probabilities, novelty) of a bank's rows; offsets: the whole session (``False``), causal in
    the bank's order (``True``), or (``None``) each speaker's clips as a stream in a random order."""
    if running is None:
        logp = simulated_logp(branch, bank.features, bank.speaker, bank.uid, np.random.default_rng(0))
    else:
        logp = evaluate_rows(branch, bank.features, bank.speaker, running=running)
    z = torch.from_numpy((bank.features - branch.feat_mean.numpy()) / branch.feat_std.numpy()).float()
    return logp, branch.novelty.distance(z).numpy()


# ----------------------------------------------------------------------------- main


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.fuse", description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="models/emostream-default.pt", help="checkpoint whose text branch is used")
    parser.add_argument("--out", required=True, help="checkpoint to write (text branch + audio branch + fusion)")
    parser.add_argument("--audio-bank", nargs="+", default=["runs/bank/ravdess", "runs/bank/emodb"])
    parser.add_argument("--tts-bank", nargs="+", default=["runs/bank/meld-tts-dev"])
    parser.add_argument("--meld-raw-bank", nargs="*", default=[], help="banks of real MELD clips (MELD.Raw)")
    parser.add_argument("--eval-bank", nargs="*", default=[], help="extra banks to report on (streams, TTS test)")
    parser.add_argument("--meld-dir", default="../shared/data/meld")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--no-speaker-norm", action="store_true")
    parser.add_argument(
        "--norm-exclude-current",
        action="store_true",
        help="speaker offsets from the earlier utterances only (before: the current one counts)",
    )
    parser.add_argument("--norm-prior", type=float, default=4.0, help="pseudo-count of the global mean in offsets")
    parser.add_argument("--no-acoustic", dest="acoustic", action="store_false",
                        help="the encoder's pooled frames and prosody only, without the spectral and voice-quality "
                        "statistics (training.acoustic; checkpoints before 2026-12-03)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report", default="", help="also write the metrics here (JSON)")
    return parser


def _train_audio(
    args: argparse.Namespace, train: Bank, dev: Bank, test: Bank, metrics: dict[str, Any]
) -> tuple[AudioBranch, AudioBranchConfig]:
    """The audio branch on the train speakers, its temperature on the dev speakers, test metrics."""
    cfg = AudioBranchConfig(dim=train.features.shape[1], n_labels=len(LABELS), hidden=args.hidden,
                            members=args.members, epochs=args.epochs, speaker_norm=not args.no_speaker_norm,
                            norm_prior=args.norm_prior, norm_includes_current=not args.norm_exclude_current,
                            seed=args.seed)  # fmt: skip
    logger.info("audio branch: %d train rows, %d dev, %d test", len(train), len(dev), len(test))
    branch = fit_audio_branch(train.features, train.label, train.speaker, cfg, groups=train.uid)
    dev_logp, _ = _audio_only(branch, dev, running=None)
    branch.temperature.fill_(fit_temperature(dev_logp, dev.label))
    metrics["audio_temperature"] = round(float(branch.temperature), 3)
    for name, bank in (("ravdess_test", test.select(_in(test.speaker, RAVDESS_TEST))),
                       ("emodb_test", test.select(_in(test.speaker, EMODB_TEST)))):  # fmt: skip
        clips = bank.select(bank.variant == 0)
        logp, _ = _audio_only(branch, clips, running=False)
        metrics[f"audio_only/{name}/clips/speaker"] = _metrics(logp, clips.label)
        # Causal: each clip normalised by its speaker's clips before it. The order matters (+-0.02 here),
        # so five random orders; the first is the order of the fused figures below.
        orders = [_metrics(_audio_only(branch, _shuffled(clips, seed), running=True)[0], _shuffled(clips, seed).label)
                  for seed in range(5)]  # fmt: skip
        metrics[f"audio_only/{name}/clips/running"] = orders[0]
        metrics[f"audio_only/{name}/clips/running_5_orders_accuracy"] = {
            "mean": round(float(np.mean([m["accuracy"] for m in orders])), 4),
            "each": [m["accuracy"] for m in orders],
        }
        aug = bank.select(bank.variant > 0)
        if len(aug):
            logp, _ = _audio_only(branch, aug, running=False)
            metrics[f"audio_only/{name}/stream_like/speaker"] = _metrics(logp, aug.label)
    logger.info("audio branch: %s", json.dumps({k: v for k, v in metrics.items() if k.startswith("audio_only")}))
    return branch, cfg


@dataclasses.dataclass(slots=True)
class _Rows:
    """Paired rows for the fusion head: text and audio log-probabilities, novelty, label, weight."""

    lt: list[np.ndarray] = dataclasses.field(default_factory=list)
    la: list[np.ndarray] = dataclasses.field(default_factory=list)
    d: list[np.ndarray] = dataclasses.field(default_factory=list)
    y: list[np.ndarray] = dataclasses.field(default_factory=list)
    w: list[np.ndarray] = dataclasses.field(default_factory=list)

    def add(self, lt: np.ndarray, la: np.ndarray, d: np.ndarray, y: np.ndarray, w: np.ndarray) -> None:
        for part, value in ((self.lt, lt), (self.la, la), (self.d, d), (self.y, y), (self.w, w)):
            part.append(value)


def _voice_rows(
    args: argparse.Namespace, branch: AudioBranch, cfg: AudioBranchConfig, train: Bank, texts: TextCache, rows: _Rows,
    weight: float,
) -> None:  # fmt: skip
    """Clips with neutral words (label from the voice) and with words of their own label (agree)."""
    meld_dev = [e for e in load_meld(Path(args.meld_dir), "dev") if e.text and e.text.strip()]
    neutral_lines = [str(e.text) for e in meld_dev if LABELS[e.label] == "neutral"]
    by_label: dict[int, list[str]] = {}
    for e in meld_dev:
        by_label.setdefault(e.label, []).append(str(e.text))
    rng = np.random.default_rng(args.seed)
    la_train = out_of_fold_logp(train.features, train.label, train.speaker, train.uid, cfg,
                                epochs=min(args.epochs, 20), fit_temperature=fit_temperature)  # fmt: skip
    z = (train.features - branch.feat_mean.numpy()) / branch.feat_std.numpy()
    d_train = branch.novelty.distance(torch.from_numpy(z).float()).numpy()
    voice_txt = [t if (c == "ravdess" and rng.random() < 0.5) else str(rng.choice(neutral_lines))
                 for t, c in zip(train.text.astype(str), train.corpus.astype(str), strict=True)]  # fmt: skip
    agree_txt = [str(rng.choice(by_label.get(int(y), neutral_lines))) for y in train.label]
    n = len(train)
    rows.add(texts(voice_txt), la_train, d_train, train.label, np.full(n, 0.7 * weight / n))
    rows.add(texts(agree_txt), la_train, d_train, train.label, np.full(n, 0.3 * weight / n))


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # One thread: these networks are tiny, and on a shared, oversubscribed CPU a second OpenMP thread
    # spin-waits at every op's barrier (minutes instead of seconds, measured here).
    torch.set_num_threads(1)
    given = list(argv) if argv is not None else sys.argv[1:]
    command = "python -m training.fuse " + " ".join(shlex.quote(a) for a in given)

    audio = Bank.concat([load_bank(p, acoustic=args.acoustic) for p in args.audio_bank])
    test_m = _in(audio.speaker, RAVDESS_TEST + EMODB_TEST)
    dev_m = _in(audio.speaker, RAVDESS_DEV + EMODB_DEV)
    train, dev, test = audio.select(~test_m & ~dev_m), audio.select(dev_m), audio.select(test_m)
    metrics: dict[str, Any] = {}
    branch, cfg = _train_audio(args, train, dev, test, metrics)

    text_model = text_only_model(FusionClassifier.from_checkpoint(args.base, device="cpu"))
    texts = TextCache(text_model)
    tts = Bank.concat([load_bank(p, acoustic=args.acoustic) for p in args.tts_bank])
    tts_cal = np.array([zlib.crc32(_dialogue(u).encode()) % 10 < 3 for u in tts.uid.astype(str)])
    tts_la, tts_d = _audio_only(branch, tts, running=False)
    n_words = int((~tts_cal).sum())
    rows = _Rows()
    _voice_rows(args, branch, cfg, train, texts, rows, float(n_words))
    rows.add(texts(list(tts.text.astype(str)))[~tts_cal], tts_la[~tts_cal], tts_d[~tts_cal], tts.label[~tts_cal],
             np.ones(n_words))  # fmt: skip
    for p in args.meld_raw_bank:
        raw = load_bank(p, acoustic=args.acoustic)
        raw_la, raw_d = _audio_only(branch, raw, running=False)
        rows.add(texts(list(raw.text.astype(str))), raw_la, raw_d, raw.label, np.ones(len(raw)))
    head = fit_fusion_head(np.concatenate(rows.lt), np.concatenate(rows.la), np.concatenate(rows.d),
                           np.concatenate(rows.y), FusionHeadConfig(n_labels=len(LABELS), seed=args.seed),
                           sample_weight=np.concatenate(rows.w))  # fmt: skip

    _calibrate(head, branch, texts, dev, tts.select(tts_cal), (tts_la[tts_cal], tts_d[tts_cal]))
    metrics["fusion_temperature"] = round(float(head.temperature), 3)

    identity = EncoderIdentity(**json.loads((Path(args.audio_bank[0]) / "meta.json").read_text())["encoder"])
    fusion = AudioFusion(branch, head, identity, whisper_model="base", acoustic=args.acoustic, info={})
    evals = [(Path(p).name, load_bank(p, acoustic=args.acoustic)) for p in args.eval_bank]
    _evaluate(fusion, texts, test, evals, metrics)
    fusion.info = {
        "command": command,
        "audio_branch": cfg.to_dict(),
        "trained_on": {
            "audio": f"RAVDESS + EmoDB train speakers ({len(train)} rows incl. stream-like copies); dev speakers "
                     f"{RAVDESS_DEV + EMODB_DEV} calibrate; test speakers {RAVDESS_TEST + EMODB_TEST} never seen",
            "fusion": f"paired rows: {len(train)} voice (neutral words), {len(train)} agree, {n_words} spoken MELD "
                      f"dev lines (espeak-ng, label from the text); MELD.Raw banks: {args.meld_raw_bank or 'none'}",
        },
        "metrics": metrics,
    }  # fmt: skip
    _save(text_model, fusion, args.base, Path(args.out))
    if args.report:
        Path(args.report).write_text(json.dumps(metrics, indent=1), encoding="utf-8")
    print(json.dumps(metrics, indent=1))
    return 0


def _calibrate(head: FusionHead, branch: AudioBranch, texts: TextCache, dev: Bank, held_out: Bank,
               held_out_audio: tuple[np.ndarray, np.ndarray]) -> None:  # fmt: skip
    """Fit the fusion head's temperature on dev speakers (carrier text) + the held-out spoken lines."""
    dev_la, dev_d = _audio_only(branch, dev, running=None)
    cal_lt = np.concatenate([texts(list(dev.text.astype(str))), texts(list(held_out.text.astype(str)))])
    cal_la, cal_d = np.concatenate([dev_la, held_out_audio[0]]), np.concatenate([dev_d, held_out_audio[1]])
    with torch.no_grad():
        raw_logits = head.raw_logits(torch.from_numpy(cal_lt), torch.from_numpy(cal_la), torch.from_numpy(cal_d))
    head.temperature.fill_(fit_temperature(raw_logits.numpy(), np.concatenate([dev.label, held_out.label])))


def _evaluate(
    fusion: AudioFusion, texts: TextCache, test: Bank, extra: Sequence[tuple[str, Bank]], metrics: dict[str, Any]
) -> None:
    rav = _shuffled(test.select(_in(test.speaker, RAVDESS_TEST) & (test.variant == 0)))
    sets = [("ravdess_test_clips", rav), *extra]
    for name, bank in sets:
        # One stream per set, in its order; rows of a named speaker (a clip's actor, a stream bank's truth
        # speaker) are normalised by that speaker's rows so far, as with the service's speaker labels.
        stream: list[str | None] = [name] * len(bank)
        speakers: list[str | None] = [str(s) if str(s) != name else None for s in bank.speaker]
        fusion.reset()
        la, d = fusion.audio_logp(bank.features, stream, speakers)
        lt = texts(list(bank.text.astype(str)))
        fused = fusion.fuse(lt, la, d)
        metrics[f"{name}/text_only"] = _metrics(lt, bank.label)
        metrics[f"{name}/audio_only"] = _metrics(la, bank.label)
        metrics[f"{name}/fused"] = _metrics(fused, bank.label)
        if any(speakers):
            fusion.reset()
            la_s, d_s = fusion.audio_logp(bank.features, stream)
            metrics[f"{name}/audio_only_stream_norm"] = _metrics(la_s, bank.label)
            metrics[f"{name}/fused_stream_norm"] = _metrics(fusion.fuse(lt, la_s, d_s), bank.label)
        la0, d0 = fusion.audio_logp(bank.features, [None] * len(bank))
        metrics[f"{name}/audio_only_no_running_norm"] = _metrics(la0, bank.label)
        metrics[f"{name}/fused_no_running_norm"] = _metrics(fusion.fuse(lt, la0, d0), bank.label)
        abstained = fusion.branch.novelty.abstain(torch.from_numpy(d)) > 0.5
        metrics[f"{name}/audio_abstained"] = round(float(abstained.float().mean()), 4)
    fusion.reset()


def _save(text_model: FusionClassifier, fusion: AudioFusion, base: str, out: Path) -> None:
    """``base`` with ``audio_fusion`` added. A text-mode base is kept as it is (whatever else its text side
    stores, e.g. a context module); an old fusion-mode base is first re-saved without its audio branch,
    its text layers in the dtype the base stored them in (a fully fine-tuned encoder stays float16)."""
    meta = text_model.checkpoint_meta
    if meta.get("model_config", {}).get("mode") == "text":
        blob = torch.load(base, map_location="cpu", weights_only=True)
    else:
        trained_on = dict(meta.get("trained_on", {}))
        trained_on.pop("audio", None)
        extra = dict(meta.get("extra", {}))
        extra["fusion_base_checkpoint"] = str(base)
        tmp = out.with_name(out.name + ".text.tmp")
        text_model.save(tmp, metrics=dict(meta.get("metrics", {})), trained_on=trained_on, extra=extra,
                        text_encoder_dtype=meta.get("text_encoder_dtype", "float32"),
                        text_delta_rank=int(meta.get("text_delta_rank") or 0))  # fmt: skip
        blob = torch.load(tmp, map_location="cpu", weights_only=True)
        tmp.unlink()
    blob.setdefault("trained_on", {}).update(fusion.info["trained_on"])
    blob["audio_fusion"] = fusion.to_blob()
    blob["modalities"] = ["text", "audio"]
    part = out.with_name(out.name + ".tmp")
    torch.save(blob, part)
    part.replace(out)
    logger.info("wrote %s (%.1f MB)", out, out.stat().st_size / 1e6)


if __name__ == "__main__":
    raise SystemExit(main())
