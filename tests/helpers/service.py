"""The whole service (``run_service``) in a task of the test's event loop, stopped when the test is done."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest

from stream.config import Config
from stream.service import RunOptions, run_service

__all__ = ["running_service"]


@asynccontextmanager
async def running_service(
    config: Config,
    sources: Sequence[str],
    models: Any = None,
    *,
    start_timeout_s: float = 150.0,
    stop_timeout_s: float = 60.0,
) -> AsyncIterator[Any]:
    """Yield the running service's server; on leaving, stop it and check that it exited with status 0.

    ``models``: ``(transcriber, predictor)`` stand-ins, or ``None`` for the packaged ones.
    """
    stop = asyncio.Event()
    ready: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        run_service(
            config,
            RunOptions(sources=tuple(sources), quiet=True),
            models=models,
            stop=stop,
            on_ready=lambda server: ready.done() or ready.set_result(server),
        )
    )
    try:
        await asyncio.wait({ready, task}, timeout=start_timeout_s, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            status = task.result() if task.done() else f"still loading after {start_timeout_s:g} s"
            pytest.fail(f"the service did not start serving (exit status {status}); see its log above")
        yield ready.result()
    finally:
        stop.set()
        assert await asyncio.wait_for(task, stop_timeout_s) == 0
