"""Memory: the service's peak resident set size (RSS) per configuration.

Each configuration runs ``emostream run`` as its own process on the spoken test set (``--fast``) while
this process polls the kernel's high-water mark (``VmHWM`` in ``/proc/PID/status``, psutil's RSS as a
fallback) every 50 ms, so the figure is the true peak up to the last poll, model loading included.
Configurations: each ASR model with the websocket server off, and ``base`` with the server on. The
anonymous part of the RSS (``RssAnon``: the heap, without file-backed pages such as the ~300 MiB of
torch's mapped CUDA libraries, which the kernel can share and evict) is reported beside it.

Usage: ``python -m bench.memory [--n 6]``; ``--full`` uses 30 utterances.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
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
from bench.latency import free_port

logger = logging.getLogger(__name__)

CONFIGS: tuple[tuple[str, str, bool], ...] = (
    # (name, ASR model, websocket server on)
    ("tiny.en, no server", "tiny.en", False),
    ("base, no server", "base", False),
    ("base + server", "base", True),
)
TARGET_MB = 1430  # the 1.5 GB read strictly: 1.5e9 bytes = 1430 MiB (figures here are MiB)

# Where the memory goes: RSS after each step of loading what the service loads, in one fresh process.
COMPONENTS_SCRIPT = """
import json, sys, psutil
from pathlib import Path
rss = lambda: psutil.Process().memory_info().rss / 2**20
out = {"python + numpy": rss()}
import torch, transformers, faster_whisper, ctranslate2
out["+ torch, transformers, faster-whisper imported"] = rss()
from stream.config import ASRConfig
from stream.stages.transcriber import WhisperTranscriber
WhisperTranscriber.load(ASRConfig(model=sys.argv[2], device="cpu"))
out["+ Whisper " + sys.argv[2] + " (ASR, int8)"] = rss()
from training.inference import EmotionPredictor
import numpy as np
p = EmotionPredictor.from_checkpoint(Path(sys.argv[1]), device="cpu")
out["+ classifier (text encoder + heads)"] = rss()
p.predict(["warm up"], [np.zeros(16000, dtype=np.float32)] if p.uses_audio else [None])
out["+ audio features (Whisper encoder, float32) after first use"] = rss()
print(json.dumps(out))
"""


def _status_kb(pid: int) -> dict[str, int]:
    """``VmHWM`` (peak RSS so far) and ``RssAnon`` (RSS less file-backed pages such as mapped libraries)."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                key = line.split(":", 1)[0]
                if key in ("VmHWM", "RssAnon"):
                    out[key] = int(line.split()[1])
    except OSError:
        pass
    return out


def peak_rss(cmd: list[str], *, timeout_s: float, log: Path) -> dict[str, Any]:
    """Run ``cmd`` and return its peak RSS (MB), wall time and exit status."""
    import psutil

    peak_kb, anon_kb, samples = 0, 0, 0
    t0 = time.monotonic()
    with log.open("w") as log_fh:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log_fh, stderr=subprocess.STDOUT)
        ps = psutil.Process(proc.pid)
        try:
            while proc.poll() is None:
                if time.monotonic() - t0 > timeout_s:
                    raise TimeoutError(f"{' '.join(cmd)} ran over {timeout_s:.0f} s")
                status = _status_kb(proc.pid)
                if "VmHWM" not in status:  # not Linux: psutil's current RSS, polled
                    with contextlib.suppress(psutil.Error):
                        status["VmHWM"] = ps.memory_info().rss // 1024
                peak_kb = max(peak_kb, status.get("VmHWM", 0))
                anon_kb = max(anon_kb, status.get("RssAnon", 0))
                samples += 1
                time.sleep(0.05)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"exit status {proc.returncode}: {log.read_text(errors='replace')[-2000:]}")
    return {
        "peak_rss_mib": round(peak_kb / 1024, 1),
        "peak_anon_mib": round(anon_kb / 1024, 1) or None,
        "wall_s": round(time.monotonic() - t0, 2),
        "polls": samples,
    }


def _components(checkpoint: Path, model: str) -> dict[str, float]:
    proc = subprocess.run([sys.executable, "-c", COMPONENTS_SCRIPT, str(checkpoint), model], cwd=REPO,
                          capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    if proc.returncode != 0:
        logger.warning("component breakdown failed: %s", proc.stderr.strip()[-1000:])
        return {}
    return {k: float(v) for k, v in json.loads(proc.stdout.strip().splitlines()[-1]).items()}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=6, help="utterances in the test set (default 6)")
    p.add_argument("--checkpoint", type=Path, default=None, help="classifier (default: the shipped one)")
    p.add_argument("--full", action="store_true", help="30 utterances")
    args = p.parse_args(argv)
    setup_logging()
    from bench.make_testset import build_testset

    n = 30 if args.full else args.n
    ts = build_testset(RESULTS / f"testset-{n}", n=n)
    checkpoint, source = checkpoint_or_untrained(args.checkpoint or DEFAULT_CHECKPOINT)
    results = []
    for name, model, server in CONFIGS:
        with tempfile.TemporaryDirectory(prefix="emostream-memory-") as tmp:
            conf = Path(tmp) / "bench.toml"
            conf.write_text(f'[server]\nport = {free_port()}\nhost = "127.0.0.1"\n[log]\nevent_log_dir = "{tmp}"\n')
            cmd = [sys.executable, "-m", "stream", "run", "--config", str(conf), "--source", str(ts.wav), "--fast",
                   "--asr-model", model, "--device", "cpu", "--checkpoint", str(checkpoint), "--quiet",
                   "--exit-when-done" if server else "--no-server"]  # fmt: skip
            logger.info("memory: %s", name)
            r = peak_rss(cmd, timeout_s=600, log=Path(tmp) / "service.log")
        results.append({"configuration": name, "asr_model": model, "server": server, **r,
                        "within_target": r["peak_rss_mib"] <= TARGET_MB})  # fmt: skip
    table = markdown_table(results, ["configuration", "peak_rss_mib", "peak_anon_mib", "wall_s", "within_target"])
    print(table)
    components = _components(checkpoint, "base")
    steps = [{"step": k, "rss_mb": round(v, 1)} for k, v in components.items()]
    print(markdown_table(steps))
    path = write_result("memory", {
        "settings": {"utterances": ts.n_utterances, "audio_s": ts.duration_s, "checkpoint": source,
                     "target_mib": TARGET_MB, "measure": "VmHWM polled every 50 ms, MiB"},
        "results": results,
        "components_mb": components,
        "table": table,
    })  # fmt: skip
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
