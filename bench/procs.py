"""Child processes of a multi-process benchmark: free ports, start and stop, CPU and memory, readiness."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import REPO

__all__ = ["Procs", "free_port", "start_redis", "wait_port"]


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_port(port: int, check_alive: Callable[[], None], timeout_s: float = 90.0) -> None:
    """Return once something accepts connections on loopback ``port``.

    ``check_alive`` is called before each try and raises when the process that should listen has died.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        check_alive()
        try:
            _r, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.2)
    raise TimeoutError(f"nothing listens on port {port} after {timeout_s} s")


class Procs:
    """The child processes, their CPU time, and their clean-up."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, cmd: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.folder / f"{name}.log", "wb")  # noqa: SIM115 - closed when the process ends
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
        proc = subprocess.Popen(cmd, cwd=self.folder, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.procs[name] = proc
        return proc

    def cpu_s(self) -> dict[str, float]:
        import psutil

        out = {}
        for name, proc in self.procs.items():
            with contextlib.suppress(psutil.Error):
                t = psutil.Process(proc.pid).cpu_times()
                out[name] = t.user + t.system
        return out

    def rss_mb(self) -> dict[str, float]:
        import psutil

        out = {}
        for name, proc in self.procs.items():
            with contextlib.suppress(psutil.Error):
                out[name] = round(psutil.Process(proc.pid).memory_info().rss / 2**20, 1)
        return out

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                tail = (self.folder / f"{name}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")


def start_redis(procs: Procs, folder: Path, appendfsync: str) -> tuple[int, subprocess.Popen[bytes]]:
    """A ``redis-server`` on a free loopback port, keeping its files in ``folder``; ``appendfsync``:
    ``none`` (no append-only file), ``everysec`` or ``always``."""
    redis_bin = shutil.which("redis-server")
    if redis_bin is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    persistence = (
        ["--appendonly", "yes", "--appendfsync", appendfsync] if appendfsync != "none" else ["--appendonly", "no"]
    )
    cmd = [redis_bin, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder), "--save", "", *persistence]
    return port, procs.start("redis", cmd)
