"""Run every benchmark in turn (``make bench``) and write ``bench/results/summary.md``.

Each benchmark runs as its own process (so one's memory and threads never skew the next) with its
small defaults; ``--full`` passes ``--full`` to each. Benchmarks are timed runs, not tests: on a shared
machine run them when nothing else heavy is running (the load average is recorded with each result).

Usage: ``python -m bench.run_all [--full] [--only latency,throughput]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence

from bench.common import REPO, RESULTS, setup_logging

logger = logging.getLogger(__name__)

BENCHMARKS = ("accuracy", "classifier", "throughput", "asr_padding", "latency", "fanout", "memory")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.run_all", description=__doc__.split("\n\n")[0])
    p.add_argument("--full", action="store_true", help="the full size of every benchmark")
    p.add_argument("--only", default=",".join(BENCHMARKS), help=f"comma-separated subset of {', '.join(BENCHMARKS)}")
    args = p.parse_args(argv)
    setup_logging()
    chosen = [b.strip() for b in args.only.split(",") if b.strip()]
    unknown = sorted(set(chosen) - set(BENCHMARKS))
    if unknown:
        p.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    load = os.getloadavg()[0]
    if load > (os.cpu_count() or 1) * 0.5:
        logger.warning("load average %.1f: other work is running, timings will be pessimistic", load)
    failed, sections = [], []
    for name in chosen:
        cmd = [sys.executable, "-m", f"bench.{name}", *(["--full"] if args.full else [])]
        logger.info("== %s: %s", name, " ".join(cmd[1:]))
        t0 = time.monotonic()
        proc = subprocess.run(cmd, cwd=REPO, check=False)
        if proc.returncode != 0:
            failed.append(name)
            logger.error("%s failed with exit status %d", name, proc.returncode)
            continue
        result = json.loads((RESULTS / f"{name}.json").read_text(encoding="utf-8"))
        sections.append(f"## {name} ({time.monotonic() - t0:.0f} s)\n\n{result.get('table', '')}")
    summary = RESULTS / "summary.md"
    RESULTS.mkdir(parents=True, exist_ok=True)
    summary.write_text("# emostream benchmarks\n\n" + "\n".join(sections), encoding="utf-8")
    print(f"summary written to {summary}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
