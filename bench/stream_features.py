"""The audio branch's inputs as the live stream computes them, for a recording with a truth CSV.

The recording is cut into utterances by the service's own VAD and sans-I/O segmenter (``[vad]`` of
``config.toml``, the same frames and rules as ``SegmentStage``), each utterance goes through the ASR's
encoder pass and pooling (:class:`training.asr_features.AsrEncoder`, ``asr.pad_s``; the acoustic
statistics of :mod:`training.acoustic` in their own array, as in every bank), and each is
matched to the truth row it overlaps most (at least half of the shorter of the two). The result is a
feature bank (:mod:`training.featurebank` format, one shard) that the audio branch and the fusion head
are scored on offline, so "streamed accuracy" is measured without rerunning Whisper's decoder.

Usage: ``python -m bench.stream_features STREAM.wav --truth truth.csv --out runs/bank/stream-n45 [--per-stream]``.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from stream.config import Config, load_config
from stream.evaluation.truth import load_truth
from stream.stages.segment import segmenter_params
from stream.stages.segmenter import Framer, Segmenter, UtteranceEnd
from stream.stages.vad import make_vad
from training.asr_features import AsrEncoder, pool_utterance
from training.audio import load_audio
from training.data import LABELS
from training.featurebank import split_acoustic

__all__ = ["main", "match_truth", "segment"]

logger = logging.getLogger(__name__)

SAMPLE_RATE_HZ = 16000


def segment(audio: np.ndarray, config: Config) -> list[tuple[int, int, np.ndarray]]:
    """``(start_sample, end_sample, float32 audio)`` of each utterance the service would cut."""
    vad = make_vad(config.vad)
    framer = Framer(vad.frame_samples)
    seg = Segmenter(segmenter_params(config.vad, vad.frame_samples))
    pcm = (np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16)
    _, frames = framer.push(pcm, 0)
    outs = []
    for start, frame in frames:
        outs += seg.push(start, frame, vad.is_speech(frame))
    outs += seg.flush()
    return [
        (o.start_sample, o.end_sample, o.pcm.astype(np.float32) / 32768.0) for o in outs if isinstance(o, UtteranceEnd)
    ]


def match_truth(spans: Sequence[tuple[float, float]], truth: Sequence[tuple[float, float]]) -> list[int]:
    """For each span, the index of the truth row it overlaps most (>= half the shorter one), else -1."""
    out = []
    for s, e in spans:
        best, best_ov = -1, 0.0
        for j, (ts, te) in enumerate(truth):
            ov = min(e, te) - max(s, ts)
            if ov > best_ov and ov >= 0.5 * min(e - s, te - ts):
                best, best_ov = j, ov
        out.append(best)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stream_features", description=__doc__.split("\n\n")[0])
    parser.add_argument("media")
    parser.add_argument("--truth", required=True)
    parser.add_argument("--out", required=True, help="bank folder to write (shard-0000.npz)")
    parser.add_argument("--config", default=None)
    parser.add_argument("--per-stream", action="store_true",
                        help="every row is the stream's own speaker, whatever the truth says: the running audio "
                        "statistics of the service's default ([classifier] audio_norm = stream)")  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    config = load_config(args.config) if args.config else Config()
    audio = load_audio(args.media)
    truth = load_truth([args.truth])
    utts = segment(audio, config)
    matched = match_truth([(s / SAMPLE_RATE_HZ, e / SAMPLE_RATE_HZ) for s, e, _ in utts],
                          [(t.start_s, t.end_s) for t in truth])  # fmt: skip
    encoder = AsrEncoder(config.asr.model, pad_s=config.asr.pad_s, cpu_threads=2)
    feats, labels, uids, texts, speakers = [], [], [], [], []
    used: set[int] = set()
    for (_, _, pcm), j in zip(utts, matched, strict=True):
        if j < 0 or j in used or truth[j].emotion is None:
            continue  # an utterance of no truth row, or a second piece of one: not scored here
        used.add(j)
        feats.append(pool_utterance(pcm, encoder.encode(pcm), acoustic=True))
        labels.append(LABELS.index(str(truth[j].emotion)))
        uids.append(f"{Path(args.media).stem}/{j}")
        texts.append(truth[j].text)
        # The truth's speaker where it names one (the audio branch's per-speaker statistics), else the stream.
        speakers.append((not args.per_stream and truth[j].speaker) or Path(args.media).stem)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n = len(feats)
    features, acoustic = split_acoustic(feats)
    np.savez(out / "shard-0000.npz", features=features, acoustic=acoustic, label=np.asarray(labels),
             uid=np.asarray(uids), corpus=np.asarray(["stream"] * n), speaker=np.asarray(speakers),
             text=np.asarray(texts), variant=np.zeros(n, dtype=np.int64))  # fmt: skip
    logger.info("%s: %d utterances cut, %d of %d truth rows matched", args.media, len(utts), n, len(truth))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
