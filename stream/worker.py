"""``emostream worker``: runs the pipeline and publishes every event to Redis Streams.

Two modes. With ``--source`` the worker runs those sources once, like ``emostream run`` without a
server. Without, it takes submitted replay jobs (``emostream submit``) from the consumer group, up to
``bus.worker_jobs`` at a time, each as its own pipeline sharing the loaded models; a job is
acknowledged once its stream's ``end`` is published. A job whose worker died is reclaimed by another
after ``bus.claim_timeout_s`` and restarted from the end of the last finished utterance (see
:mod:`stream.events.redis_jobs`). SIGINT/SIGTERM hand running jobs back to the queue at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import secrets
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import redis.asyncio as aioredis

from stream.config import Config
from stream.events.redis_bus import TRANSIENT as _TRANSIENT
from stream.events.redis_bus import Fenced, Keys, RedisEventBus, connect, ensure_run_id, retrying
from stream.events.redis_jobs import Job, JobQueue
from stream.pipeline import Pipeline
from stream.protocol import SERVICE_STREAM, end_data, error_data
from stream.sources import Source
from stream.sources.resume import ResumedReplay
from stream.sources.spec import build_sources, parse_sources
from stream.stages.classifier import Predictor
from stream.stages.transcriber import Transcriber

__all__ = ["Worker", "run_worker", "worker_from_cli"]

logger = logging.getLogger(__name__)

Models = tuple[Transcriber, Predictor]
_JOB_STATS_S: Final = 3600.0  # a job pipeline's own periodic stats (the worker's come every stats_interval_s)


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    sources: tuple[str, ...] = ()  # empty: take jobs
    max_jobs: int | None = None  # None: bus.worker_jobs
    exit_when_idle: bool = False  # jobs mode: exit 0 once the queue is empty and nothing runs (tests, batch)


def _fenced(exc: BaseException) -> bool:
    if isinstance(exc, Fenced):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return any(_fenced(e) for e in exc.exceptions)
    return False


class Worker:
    """One worker process: its id, its Redis client, the shared models, the jobs it runs."""

    def __init__(self, config: Config, client: aioredis.Redis, models: Models, *, worker_id: str | None = None) -> None:
        self.config = config
        self.client = client
        self.models = models
        self.id = worker_id or f"{socket.gethostname()}-{secrets.token_hex(3)}"
        self.keys = Keys(config.bus.key_prefix)
        self.queue = JobQueue(client, config.bus, consumer=self.id)
        self.running: dict[str, asyncio.Task[None]] = {}  # job entry id -> its task
        self.pipelines: dict[str, Pipeline] = {}  # stream id -> the pipeline running it
        self.finished = 0

    def _pipeline(self, sources: list[Source], bus: RedisEventBus, *, periodic_stats: bool = True) -> Pipeline:
        cfg = self.config
        if not periodic_stats:
            # A job's pipeline sends only its final summary (hourly at most); the worker sends one `stats`
            # for all its jobs (see _stats_loop): `_service` events reach every subscriber, so they must
            # not grow with the number of streams.
            cfg = dataclasses.replace(cfg, server=dataclasses.replace(cfg.server, stats_interval_s=_JOB_STATS_S))
        transcriber, predictor = self.models
        return Pipeline(
            sources,
            bus,
            transcriber=transcriber,
            predictor=predictor,
            config=cfg,
            extra_stats=lambda: {"worker": self.id},
        )

    async def register(self) -> None:
        """Say in ``P:workers`` who we are and which models we run (gateways put them in ``hello``)."""
        transcriber, predictor = self.models
        info = {"model_ids": {"asr": transcriber.model_id, **dict(predictor.model_ids)},
                "labels": list(predictor.labels), "started": time.time()}  # fmt: skip
        await self.client.hset(self.keys.workers, self.id, json.dumps(info))

    # -- direct sources -----------------------------------------------------------------------------

    async def run_sources(self, specs: tuple[str, ...]) -> int:
        """Run ``--source`` streams once; new streams, so any old state under their ids is cleared."""
        parsed = parse_sources(specs)
        sources = build_sources(parsed, self.config, clock=time.monotonic)
        k = self.keys
        for s in parsed:
            await self.client.delete(k.state(s.stream_id), k.open(s.stream_id))
            info = {"kind": s.kind, "name": s.target or s.stream_id, "state": "live", "worker": self.id}
            await self.client.hset(k.streams, s.stream_id, json.dumps(info))
            await self.client.sadd(k.live, s.stream_id)
        bus = RedisEventBus(self.client, self.config.bus, producer_id=self.id)
        try:
            await self._pipeline(sources, bus).run()
        finally:
            with contextlib.suppress(*_TRANSIENT):
                await self.client.srem(k.live, *[s.stream_id for s in parsed])
        return 0

    # -- jobs -----------------------------------------------------------------------------------------

    async def run_jobs(self, stop: asyncio.Event, *, max_jobs: int, exit_when_idle: bool = False) -> int:
        """Take jobs until ``stop``; then hand the running ones back to the queue."""
        bus_cfg = self.config.bus
        await retrying("creating the job group", self.queue.ensure_group, max_delay_s=bus_cfg.reconnect_max_s)
        slots = asyncio.Semaphore(max_jobs)
        stats = asyncio.create_task(self._stats_loop(), name="worker-stats")
        try:
            while not stop.is_set():
                await slots.acquire()
                if stop.is_set():
                    slots.release()
                    break
                job = await retrying("waiting for a job", lambda: self.queue.next_job(500),
                                     max_delay_s=bus_cfg.reconnect_max_s)  # fmt: skip
                if job is None:
                    slots.release()
                    if exit_when_idle and not self.running and not await self.queue.pending():
                        return 0
                    continue
                task = asyncio.create_task(self._run_job(job), name=f"job-{job.stream}")
                self.running[job.entry_id] = task
                task.add_done_callback(functools.partial(self._job_done, job.entry_id, slots))
        finally:
            stats.cancel()
            await self._hand_back()
        return 0

    def stats(self) -> dict[str, Any]:
        """One summary for the worker: its jobs' queue depths, real-time factors and drops."""
        jobs = {stream: p.stats() for stream, p in self.pipelines.items()}
        return {"worker": self.id, "jobs_running": len(jobs), "jobs_finished": self.finished, "jobs": jobs}

    async def _stats_loop(self) -> None:
        bus = RedisEventBus(self.client, self.config.bus, producer_id=f"{self.id}:stats")
        while True:
            await asyncio.sleep(self.config.server.stats_interval_s)
            if self.pipelines:
                try:
                    await bus.emit("stats", SERVICE_STREAM, self.stats())
                except Exception:  # a summary must never take the worker down
                    logger.exception("worker stats failed")

    def _job_done(self, entry_id: str, slots: asyncio.Semaphore, task: asyncio.Task[None]) -> None:
        self.running.pop(entry_id, None)
        slots.release()
        if not task.cancelled() and task.exception() is not None:
            logger.error("job %s failed", entry_id, exc_info=task.exception())

    async def _hand_back(self) -> None:
        tasks = dict(self.running)
        for task in tasks.values():
            task.cancel()
        for task in tasks.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _run_job(self, job: Job) -> None:
        cfg = self.config
        owner = self.id
        taken = await retrying(f"taking job {job.entry_id}", lambda: self.queue.take(job, owner),
                               max_delay_s=cfg.bus.reconnect_max_s)  # fmt: skip
        bus = RedisEventBus(self.client, cfg.bus, owner=owner, producer_id=f"{owner}:{job.stream}")
        logger.info("job %s: stream %s from %s (%s, attempt %d, resuming at %.2f s after %d utterances)",
                    job.entry_id, job.stream, job.path, "reclaimed" if job.reclaimed else "new", taken.attempts,
                    taken.resume_sample / 16000, taken.done_utterances)  # fmt: skip
        if taken.ended:
            await self._finish(job, "eof")
            return
        if taken.attempts > cfg.bus.max_attempts:
            message = f"given up after {taken.attempts - 1} attempts (bus.max_attempts); see the workers' logs"
            await bus.emit("error", job.stream, error_data("source_failed", message))
            await bus.emit("end", job.stream, end_data("error", audio_s=0.0))
            await self._finish(job, "error")
            return
        source = ResumedReplay(
            job.stream,
            job.path,
            cfg.audio,
            start_sample=taken.resume_sample,
            first_utterance=taken.done_utterances,
        )
        pipeline = self._pipeline([source], bus, periodic_stats=False)
        self.pipelines[job.stream] = pipeline
        beat = asyncio.create_task(self._heartbeat(job, owner), name=f"heartbeat-{job.stream}")
        run = asyncio.create_task(pipeline.run(), name=f"pipeline-{job.stream}")
        try:
            done, _ = await asyncio.wait({beat, run}, return_when=asyncio.FIRST_COMPLETED)
            if beat in done:  # another worker owns the stream now
                run.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await run
                logger.warning("job %s (%s): taken over by another worker; stopped", job.entry_id, job.stream)
                return
            exc = run.exception()
            if exc is not None:
                if _fenced(exc):
                    logger.warning(
                        "job %s (%s): fenced off (another worker owns it); stopped", job.entry_id, job.stream
                    )
                    return
                raise exc
            await self._finish(job, "eof")
        except asyncio.CancelledError:
            # Shutting down: hand the job back so another worker continues it now, not after the timeout.
            run.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await run
            with contextlib.suppress(*_TRANSIENT):
                if await self.queue.release(job, owner):
                    logger.info("job %s (%s): handed back to the queue", job.entry_id, job.stream)
            raise
        finally:
            beat.cancel()
            self.pipelines.pop(job.stream, None)

    async def _finish(self, job: Job, reason: str) -> None:
        ok = await retrying(f"acknowledging job {job.entry_id}", lambda: self.queue.finish(job, self.id, reason),
                            max_delay_s=self.config.bus.reconnect_max_s)  # fmt: skip
        if ok:
            self.finished += 1
            logger.info("job %s (%s): done", job.entry_id, job.stream)

    async def _heartbeat(self, job: Job, owner: str) -> None:
        """Return once the stream has another owner; refresh the claim meanwhile."""
        every = self.config.bus.claim_timeout_s / 3
        while True:
            await asyncio.sleep(every)
            try:
                if not await self.queue.heartbeat(job, owner):
                    return
            except _TRANSIENT as exc:  # Redis down: the publishes wait too; keep trying
                logger.debug("heartbeat for %s failed: %s", job.stream, exc)


async def run_worker(
    config: Config,
    options: WorkerOptions,
    *,
    models: Models | None = None,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[Worker], None] | None = None,
) -> int:
    """Run a worker until its sources end (``--source``) or until stopped (jobs)."""
    from stream import models as model_loading

    url = config.bus.url
    if not url:
        logger.error("emostream worker needs --bus redis://HOST:PORT/DB (or bus.url in the config)")
        return 2
    for name in ("faster_whisper",):
        lg = logging.getLogger(name)
        if lg.level == logging.NOTSET:
            lg.setLevel(logging.WARNING)
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    client = connect(url)
    worker: Worker | None = None
    try:
        await retrying("connecting", lambda: ensure_run_id(client, Keys(config.bus.key_prefix)),
                       max_delay_s=config.bus.reconnect_max_s)  # fmt: skip
        if models is None:
            logger.info("loading Whisper %s and the classifier %s", config.asr.model, config.classifier.checkpoint)
            try:
                models = await loop.run_in_executor(None, model_loading.load_models, config)
            except Exception as exc:
                logger.error("cannot start: %s", exc)
                return 1
        worker = Worker(config, client, models)
        await worker.register()
        logger.info("worker %s on %s", worker.id, url)
        if on_ready is not None:
            on_ready(worker)
        if options.sources:
            run = asyncio.create_task(worker.run_sources(options.sources))
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait({run, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if not run.done():
                run.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await run
                return 0
            return run.result()
        max_jobs = options.max_jobs or config.bus.worker_jobs
        return await worker.run_jobs(stop, max_jobs=max_jobs, exit_when_idle=options.exit_when_idle)
    finally:
        if worker is not None:
            with contextlib.suppress(*_TRANSIENT):
                await client.hdel(worker.keys.workers, worker.id)
        await client.aclose()


def worker_from_cli(config: Config, args: argparse.Namespace) -> int:
    options = WorkerOptions(sources=tuple(args.source or ()), max_jobs=args.jobs, exit_when_idle=args.exit_when_idle)
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(run_worker(config, options))
    return 0
