"""Memory: the peak resident set size (RSS) of the whole service, as the operating system accounts it.

Each configuration runs ``emostream run`` as a child process. Its peak is the kernel's ``ru_maxrss``
(read by a small launcher process, see ``_LAUNCHER``) -- the figure ``/usr/bin/time -v`` prints as
"Maximum resident set size": the largest RSS
the service (or any process it waited for) reached, model loading included, with no sampling gap.
While it runs, the process tree is also polled every 50 ms: the sum of the RSS of every process in it
(a cross-check, and the figure that matters if the service ever starts helpers) and the peak of its
anonymous (heap) and file-backed (mapped libraries and weights) parts.

Configurations:

* ``demo``: what ``make run`` does -- the bundled demo at real time, the websocket server on
  (``emostream run --exit-when-done``, port 0), Whisper ``base``;
* ``fast``: a ``--fast --no-server`` replay of the spoken test set (MELD dev lines by espeak-ng) with
  ``base``, the shape of batch work;
* with ``--full`` also ``tiny.en`` on the fast replay, and 30 utterances instead of ``--n``.

A second table loads what the service loads, step by step in one fresh process, and says where the
memory goes. Usage: ``python -m bench.memory [--n 12] [--only demo|fast] [--full]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    DEFAULT_CHECKPOINT,
    REPO,
    RESULTS,
    checkpoint_or_untrained,
    markdown_table,
    setup_logging,
    write_result,
)
from training.settings import TEXT_DTYPES

logger = logging.getLogger(__name__)

DEMO = REPO / "stream" / "assets" / "demo.flac"
TARGET_BYTES = 1.3e9  # the 1.3 GB with `base`
TARGET_MIB = round(TARGET_BYTES / 2**20)  # 1240: figures here are MiB, as the kernel counts (KiB / 1024)


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    asr_model: str
    source: str  # "demo" | "testset"
    fast: bool
    server: bool


CASES = (
    Case("demo, real time, server on (make run)", "base", "demo", fast=False, server=True),
    Case("test set, --fast, no server", "base", "testset", fast=True, server=False),
)
FULL_CASES = (Case("test set, --fast, no server", "tiny.en", "testset", fast=True, server=False),)

# Where the memory goes: RSS after each step of loading what the service loads, in one fresh process.
COMPONENTS_SCRIPT = """
import json, sys, psutil
from pathlib import Path
rss = lambda: psutil.Process().memory_info().rss / 2**20
out = {"python + numpy + psutil": rss()}
import torch, transformers, faster_whisper, ctranslate2
out["+ import torch, transformers, faster-whisper"] = rss()
import stream.service, stream.server
out["+ import the service and the websocket server"] = rss()
from stream.config import ASRConfig
from stream.records import SAMPLE_RATE_HZ
from stream.stages.whisper import WhisperTranscriber
import numpy as np
asr = WhisperTranscriber.load(ASRConfig(model=sys.argv[2], device="cpu"))
asr.transcribe(np.zeros(SAMPLE_RATE_HZ, dtype=np.float32))
out["+ Whisper " + sys.argv[2] + " for ASR (int8), after one decode"] = rss()
from training.inference import EmotionPredictor
p = EmotionPredictor.from_checkpoint(Path(sys.argv[1]), device="cpu", text_dtype=sys.argv[3])
p.predict(["warm up"], [None])
out["+ classifier: text encoder + heads, after one text prediction"] = rss()
p.predict(["warm up"], [np.zeros(SAMPLE_RATE_HZ, dtype=np.float32)] if p.uses_audio else [None])
out["+ audio features: Whisper base encoder (float32), after first use"] = rss()
print(json.dumps(out))
"""


def _status_kb(pid: int) -> dict[str, int]:
    """``VmRSS``, ``RssAnon`` and ``RssFile`` of one process (KiB); empty once it has gone."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                key = line.split(":", 1)[0]
                if key in ("VmRSS", "RssAnon", "RssFile"):
                    out[key] = int(line.split()[1])
    except OSError:
        pass
    return out


def _tree(pid: int) -> list[int]:
    import psutil

    try:
        root = psutil.Process(pid)
        return [pid, *(c.pid for c in root.children(recursive=True))]
    except psutil.Error:
        return [pid]


# Runs the measured command as its child and writes that child's ru_maxrss (KiB) to argv[1].
# Why a launcher: Linux carries the high-water mark of the memory a process replaces at exec into its
# ru_maxrss, and a child of this process (fork or vfork) replaces a copy of, or this very, address
# space. A test run that has loaded models would inflate the figure; the small launcher does not.
_LAUNCHER = """
import resource, subprocess, sys
code = subprocess.call(sys.argv[2:])
with open(sys.argv[1], "w") as fh:
    fh.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(code if code >= 0 else 128 - code)
"""


def _spawn(cmd: list[str], out_fd: int, report: Path) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in REPO under the launcher, stdout and stderr on ``out_fd``."""
    argv = [sys.executable, "-c", _LAUNCHER, str(report), *cmd]
    return subprocess.Popen(argv, cwd=REPO, stdout=out_fd, stderr=subprocess.STDOUT, start_new_session=True)


def peak_rss(cmd: list[str], *, timeout_s: float, log: Path) -> dict[str, Any]:
    """Run ``cmd``; its ``ru_maxrss`` (MiB) from ``wait4``, the polled tree figures, wall time.

    Raises ``RuntimeError`` on a non-zero exit status and ``TimeoutError`` past ``timeout_s``.
    """
    tree_kb = anon_kb = file_kb = polls = 0
    t0 = time.monotonic()
    report = log.with_suffix(".maxrss")
    report.unlink(missing_ok=True)
    with log.open("w") as log_fh:
        proc = _spawn(cmd, log_fh.fileno(), report)
        try:
            while proc.poll() is None:
                if time.monotonic() - t0 > timeout_s:
                    raise TimeoutError(f"{' '.join(cmd)} ran over {timeout_s:.0f} s")
                figures = [_status_kb(p) for p in _tree(proc.pid)[1:]]  # the launcher itself not counted
                tree_kb = max(tree_kb, sum(f.get("VmRSS", 0) for f in figures))
                anon_kb = max(anon_kb, sum(f.get("RssAnon", 0) for f in figures))
                file_kb = max(file_kb, sum(f.get("RssFile", 0) for f in figures))
                polls += 1
                time.sleep(0.05)
        finally:
            if proc.returncode is None:
                os.killpg(proc.pid, signal.SIGKILL)  # the launcher and the measured tree
                proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"exit status {proc.returncode}: {log.read_text(errors='replace')[-2000:]}")
    maxrss_kib = int(report.read_text())
    maxrss_mib = maxrss_kib / 1024  # KiB on Linux
    return {
        "peak_rss_mib": round(maxrss_mib, 1),
        "peak_rss_gb": round(maxrss_kib * 1024 / 1e9, 3),
        "tree_rss_polled_mib": round(tree_kb / 1024, 1),
        "anon_polled_mib": round(anon_kb / 1024, 1),
        "file_polled_mib": round(file_kb / 1024, 1),
        "wall_s": round(time.monotonic() - t0, 2),
        "polls": polls,
        "within_target": maxrss_mib <= TARGET_MIB,
    }


def _components(checkpoint: Path, model: str, text_dtype: str) -> dict[str, float]:
    proc = subprocess.run([sys.executable, "-c", COMPONENTS_SCRIPT, str(checkpoint), model, text_dtype], cwd=REPO,
                          capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    if proc.returncode != 0:
        logger.warning("component breakdown failed: %s", proc.stderr.strip()[-1000:])
        return {}
    return {k: float(v) for k, v in json.loads(proc.stdout.strip().splitlines()[-1]).items()}


def _command(case: Case, conf: Path, source: Path, checkpoint: Path) -> list[str]:
    cmd = [sys.executable, "-m", "stream", "run", "--config", str(conf), "--source", str(source),
           "--asr-model", case.asr_model, "--device", "cpu", "--checkpoint", str(checkpoint), "--quiet"]  # fmt: skip
    cmd += ["--fast"] if case.fast else []
    cmd += ["--exit-when-done"] if case.server else ["--no-server"]
    return cmd


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=12, help="utterances in the fast-replay test set (default 12)")
    p.add_argument("--checkpoint", type=Path, default=None, help="classifier (default: the shipped one)")
    p.add_argument("--only", choices=("demo", "fast"), default=None, help="run one configuration")
    p.add_argument("--no-components", action="store_true", help="skip the step-by-step breakdown")
    p.add_argument("--full", action="store_true", help="30 utterances, and tiny.en too")
    p.add_argument("--text-dtype", default="auto", choices=TEXT_DTYPES,
                   help="[classifier] text_dtype of the service (default auto, as config.toml)")  # fmt: skip
    args = p.parse_args(argv)
    setup_logging()
    checkpoint, source_name = checkpoint_or_untrained(args.checkpoint or DEFAULT_CHECKPOINT)
    checkpoint = checkpoint.resolve()  # the service reads relative paths from its config file's folder
    cases = [*CASES, *(FULL_CASES if args.full else ())]
    if args.only:
        cases = [c for c in cases if (c.source == "demo") == (args.only == "demo")]
    testset = None
    if any(c.source == "testset" for c in cases):
        from bench.make_testset import build_testset

        n = 30 if args.full else args.n
        testset = build_testset(RESULTS / f"testset-{n}", n=n)
    results = []
    for case in cases:
        source = DEMO if case.source == "demo" else testset.wav  # type: ignore[union-attr]
        with tempfile.TemporaryDirectory(prefix="emostream-memory-") as tmp:
            conf = Path(tmp) / "bench.toml"
            conf.write_text(f'[server]\nport = 0\nhost = "127.0.0.1"\n[log]\nevent_log_dir = "{tmp}"\n'
                            f'[classifier]\ntext_dtype = "{args.text_dtype}"\n')  # fmt: skip
            logger.info("memory: %s, %s", case.name, case.asr_model)
            r = peak_rss(_command(case, conf, source, checkpoint), timeout_s=900, log=Path(tmp) / "service.log")
        results.append({"configuration": case.name, "asr_model": case.asr_model, **r})
    table = markdown_table(
        results,
        ["configuration", "asr_model", "peak_rss_mib", "peak_rss_gb", "tree_rss_polled_mib", "anon_polled_mib",
         "file_polled_mib", "wall_s", "within_target"],
    )  # fmt: skip
    print(table)
    components = {} if args.no_components else _components(checkpoint, "base", args.text_dtype)
    if components:
        steps, last = [], 0.0
        for k, v in components.items():
            steps.append({"step": k, "rss_mib": round(v, 1), "added_mib": round(v - last, 1)})
            last = v
        print(markdown_table(steps))
    path = write_result("memory", {
        "settings": {"utterances": testset.n_utterances if testset else None,
                     "audio_s": testset.duration_s if testset else None, "checkpoint": source_name,
                     "text_dtype": args.text_dtype,
                     "target_mib": TARGET_MIB, "target_bytes": TARGET_BYTES,
                     "measure": "ru_maxrss from wait4 (as /usr/bin/time -v); tree RSS polled every 50 ms"},
        "results": results,
        "components_mib": components,
        "table": table,
    })  # fmt: skip
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
