"""Is Whisper's 30 s padding worth its cost on short utterances? Speed and WER, padded vs trimmed.

faster-whisper pads every input to a 30 s window before the encoder, so a 2 s utterance costs a full
30 s encoder pass. CTranslate2's Whisper accepts shorter inputs. This benchmark transcribes each
utterance of the spoken test set (truth span plus the segmenter's pre/post roll) three ways with the
same model and greedy decoding, and reports mean ms per utterance and WER against the truth text:

* ``30 s (faster-whisper)``: the service's transcriber with ``asr.pad_s = 30`` (faster-whisper's
  ``transcribe`` on the whole window, the *padded* path);
* ``trimmed + N s``: the service's transcriber with ``asr.pad_s = N`` (the *trimmed* path: the utterance
  plus N s of silence, encoded and decoded directly; a decode it doubts is redone on the padded path).

Both are ``stream.stages.whisper.WhisperTranscriber`` as the service runs it, on one loaded model.

Usage: ``python -m bench.asr_padding [--models tiny.en,base] [--n 12] [--pads 0,1,5]``; ``--full``: 40.
"""

from __future__ import annotations

import argparse
import csv
import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from bench.common import RESULTS, markdown_table, setup_logging, write_result
from stream.config import ASRConfig
from stream.records import SAMPLE_RATE_HZ
from stream.stages.whisper import WhisperTranscriber

logger = logging.getLogger(__name__)

PRE_ROLL_S, POST_ROLL_S = 0.3, 0.21  # what the default segmenter adds around speech


def transcribers(name: str, pads: Sequence[float], compute_type: str = "auto") -> list[tuple[str, WhisperTranscriber]]:
    """The service's transcriber for Whisper ``name`` (loaded once) with ``asr.pad_s`` 30 and each of ``pads``."""
    base = WhisperTranscriber.load(ASRConfig(model=name, device="cpu", language="en", compute_type=compute_type))
    out = [("30 s (faster-whisper)", base.with_options(ASRConfig(model=name, language="en", pad_s=30.0)))]
    out += [(f"trimmed + {p:g} s", base.with_options(ASRConfig(model=name, language="en", pad_s=p))) for p in pads]
    return out


def run_model(name: str, clips: list[np.ndarray], texts: list[str], pads: Sequence[float]) -> list[dict[str, Any]]:
    from stream.evaluation import WordErrors, word_errors

    rows = []
    for label, asr in transcribers(name, pads):
        asr.transcribe(clips[0])  # warm-up
        errors, clean, loops, spent = WordErrors(), WordErrors(), 0, 0.0
        for clip, text in zip(clips, texts, strict=True):
            t0 = time.perf_counter()
            hyp = asr.transcribe(clip).raw_text  # before the hallucination filter: what Whisper decoded
            spent += time.perf_counter() - t0
            w = word_errors(text, hyp)
            errors = errors + w
            # A decoding loop ("no no no ..." to the length limit) swamps the corpus WER: count it apart.
            if w.insertions > w.ref_words + 5:
                loops += 1
            else:
                clean = clean + w
        rows.append({"model": name, "input": label, "ms/utt": round(1000 * spent / len(clips), 1),
                     "WER": round(errors.wer, 4), "loops": loops, "WER without loops": round(clean.wer, 4),
                     "utterances": len(clips)})  # fmt: skip
        logger.info("%s %s: %.0f ms/utt, WER %.3f", name, label, 1000 * spent / len(clips), errors.wer)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.asr_padding", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="tiny.en,base")
    p.add_argument("--n", type=int, default=12, help="utterances (default 12)")
    p.add_argument("--pads", default="0,1,5", help="seconds of silence after the utterance (default 0,1,5)")
    p.add_argument("--full", action="store_true", help="40 utterances")
    args = p.parse_args(argv)
    setup_logging()
    from bench.make_testset import build_testset
    from training.audio import load_audio

    n = 40 if args.full else args.n
    ts = build_testset(RESULTS / f"testset-{n}", n=n)
    audio = load_audio(ts.wav)
    clips, texts = [], []
    with ts.truth_csv.open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            a = max(0, round((float(row["start_s"]) - PRE_ROLL_S) * SAMPLE_RATE_HZ))
            b = round((float(row["end_s"]) + POST_ROLL_S) * SAMPLE_RATE_HZ)
            clips.append(audio[a:b].copy())
            texts.append(row["text"])
    pads = [float(x) for x in args.pads.split(",") if x.strip()]
    rows = []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        rows += run_model(name, clips, texts, pads)
    table = markdown_table(rows)
    print(table)
    mean_s = sum(c.size for c in clips) / len(clips) / SAMPLE_RATE_HZ
    path = write_result("asr_padding", {
        "settings": {"utterances": len(clips), "mean_utterance_s": round(mean_s, 2),
                     "decoding": "greedy, English, no timestamps, no temperature fallback"},
        "results": rows,
        "table": table,
    })  # fmt: skip
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
