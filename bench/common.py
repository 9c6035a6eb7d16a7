"""Helpers shared by the benchmarks: summary statistics, markdown tables, result files, machine info."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_CHECKPOINT",
    "REPO",
    "RESULTS",
    "checkpoint_or_untrained",
    "machine_info",
    "markdown_table",
    "percentile",
    "setup_logging",
    "summarize",
    "write_result",
]

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation between order statistics (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be in [0, 100], got {q}")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summarize(values: Sequence[float], *, digits: int = 4) -> dict[str, float | int | None]:
    """``n``, mean, p50, p95, p99 and max of ``values`` (``None`` figures when there are none)."""
    if not values:
        return {"n": 0, "mean": None, "p50": None, "p95": None, "p99": None, "max": None}
    return {
        "n": len(values),
        "mean": round(sum(values) / len(values), digits),
        "p50": round(percentile(values, 50), digits),
        "p95": round(percentile(values, 95), digits),
        "p99": round(percentile(values, 99), digits),
        "max": round(max(values), digits),
    }


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Rows of dicts -> a markdown table (numbers right-aligned, floats to 3 decimals below 10)."""
    if not rows:
        return "(no rows)\n"
    cols = list(columns) if columns is not None else list(rows[0])
    numeric = [all(isinstance(r.get(c), int | float) or r.get(c) is None for r in rows) for c in cols]
    out = ["| " + " | ".join(cols) + " |", "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
    out += ["| " + " | ".join(_cell(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(out) + "\n"


def _git_commit() -> str:
    try:
        proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=False, timeout=10)  # fmt: skip
        return proc.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine_info() -> dict[str, Any]:
    """What the figures were measured on: CPU, core count, memory, GPU, versions, commit."""
    info: dict[str, Any] = {
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "commit": _git_commit(),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            names = [line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")]
        if names:
            info["cpu"] = names[0]
    except OSError:
        pass
    try:
        import psutil

        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
        info["load_avg_1m"] = round(os.getloadavg()[0], 2)
    except (ImportError, OSError):
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    return info


def write_result(name: str, payload: Mapping[str, Any], *, out_dir: Path = RESULTS) -> Path:
    """Write ``payload`` plus machine info to ``out_dir/NAME.json`` and return the path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    body = {"benchmark": name, "machine": machine_info(), **payload}
    path.write_text(json.dumps(body, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


DEFAULT_CHECKPOINT = REPO / "models" / "emostream-default.pt"


def checkpoint_or_untrained(path: Path = DEFAULT_CHECKPOINT) -> tuple[Path, str]:
    """``path`` when it exists; else an untrained checkpoint of the default architecture (same cost to run).

    Speed and memory do not depend on the trained weights, so the benchmarks still run before a model
    is shipped; the second value says which one was used and goes into every result.
    """
    if path.is_file():
        return path, str(path.relative_to(REPO) if path.is_relative_to(REPO) else path)
    from training import features as feats

    # Named by the feature version, so a stand-in never outlives the feature code it was built for.
    stand_in = RESULTS / f"untrained-default-architecture-features-v{getattr(feats, 'FEATURE_VERSION', 0)}.pt"
    if not stand_in.is_file():
        from stream.protocol import LABELS
        from training.features import AudioFeatureExtractor, FeatureConfig
        from training.model import FusionClassifier
        from training.model_config import ModelConfig

        logging.getLogger(__name__).warning("%s not found: building an untrained stand-in for timing", path)
        features = FeatureConfig()
        dim = AudioFeatureExtractor(features).dim
        model = FusionClassifier(ModelConfig(labels=tuple(LABELS), mode="fusion", audio_dim=dim), features)
        RESULTS.mkdir(parents=True, exist_ok=True)
        model.save(stand_in, extra={"note": "untrained stand-in for benchmarks"})
    return stand_in, "untrained stand-in (default architecture; no checkpoint shipped yet)"


def replay_parser(
    name: str, doc: str | None, *, default_n: int, n_help: str, full_n: int, full_help: str
) -> argparse.ArgumentParser:
    """The options every benchmark that replays the spoken test set through the service shares."""
    p = argparse.ArgumentParser(prog=f"python -m bench.{name}", description=(doc or "").split("\n\n")[0])
    p.add_argument("--models", default="tiny.en,base", help="ASR models (default tiny.en,base)")
    p.add_argument("--n", type=int, default=default_n, help=f"utterances (default {n_help})")
    p.add_argument("--checkpoint", type=Path, default=None, help="classifier (default: the shipped one)")
    p.add_argument("--full", action="store_true", help=full_help)
    p.add_argument("--out", default=name, help=f"result name under bench/results/ (default {name})")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="a service setting for this run, e.g. vad.end_silence_ms=300 (repeatable)",
    )
    p.set_defaults(full_n=full_n)
    return p


def models_of(spec: str) -> list[str]:
    """``"tiny.en, base"`` -> ``["tiny.en", "base"]``."""
    return [m.strip() for m in spec.split(",") if m.strip()]


def replay_setup(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None
) -> tuple[argparse.Namespace, Any, Path, str]:
    """Parse ``argv``, set up logging, build the spoken test set and find the checkpoint.

    Returns ``(args, testset, checkpoint, checkpoint_source)`` for the benchmarks built on
    :func:`replay_parser`.
    """
    args = parser.parse_args(argv)
    setup_logging()
    from bench.make_testset import build_testset

    n = args.full_n if args.full else args.n
    testset = build_testset(RESULTS / f"testset-{n}", n=n)
    checkpoint, source = checkpoint_or_untrained(args.checkpoint or DEFAULT_CHECKPOINT)
    return args, testset, checkpoint, source
