"""``emostream run``: sources, models, the pipeline, the event sinks and the server, wired together.

Lifecycle: parse the sources, load Whisper and the classifier (in a worker thread), open the event
log and the server, then run the pipeline. With ``--no-server`` or ``--exit-when-done`` the service
exits 0 once every *file* source has sent its ``end`` event (all its events are written by then);
otherwise it keeps serving the dashboard until SIGINT/SIGTERM, which also exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import re
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stream.config import Config
from stream.events.bus import EventBus, JsonlWriter, Sink
from stream.events.console import ConsolePrinter
from stream.pipeline import Pipeline, segmenter_params
from stream.protocol import LABEL_COLORS, SERVICE_STREAM, Event
from stream.sources import MicSource, ReplaySource, Source
from stream.stages.classifier import Predictor, load_predictor
from stream.stages.transcriber import Transcriber, WhisperTranscriber
from stream.stages.vad import make_vad

__all__ = ["DEMO_PATH", "RunOptions", "SourceSpec", "parse_sources", "run_from_cli", "run_service"]

logger = logging.getLogger(__name__)

DEMO_PATH = Path(__file__).resolve().parent / "assets" / "demo.flac"
_MEDIA_SUFFIXES = {".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".mp4", ".mkv", ".webm", ".mov", ".avi"}


class SourceError(ValueError):
    """A ``--source`` value that cannot be used."""


@dataclass(frozen=True, slots=True)
class SourceSpec:
    stream_id: str
    kind: str  # "mic" | "file"
    target: str  # device spec ("" = default) or file path


@dataclass(frozen=True, slots=True)
class RunOptions:
    sources: tuple[str, ...] = ()  # empty = the bundled demo
    jsonl: str | None = None
    exit_when_done: bool = False
    quiet: bool = False


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.")[:64] or "stream"


def parse_sources(specs: Sequence[str]) -> list[SourceSpec]:
    """``mic`` / a device index or name / a media path -> unique stream ids (``mic``, file stems)."""
    found: list[SourceSpec] = []
    used: set[str] = set()
    for raw in specs or (str(DEMO_PATH),):
        spec = raw.strip()
        if not spec:
            raise SourceError("--source must not be empty; use 'mic', a device index or name, or a media file")
        path = Path(spec).expanduser()
        if spec in ("mic", "default"):
            kind, target, base = "mic", "", "mic"
        elif spec.isdigit():
            kind, target, base = "mic", spec, f"mic{spec}"
        elif path.exists() or path.suffix.lower() in _MEDIA_SUFFIXES or "/" in spec:
            if not path.is_file():
                raise SourceError(f"--source {spec}: no such file")
            kind, target, base = "file", str(path), _slug(path.stem)
        else:
            kind, target, base = "mic", spec, f"mic-{_slug(spec)}"
        stream_id, n = base, 2
        while stream_id in used or stream_id == SERVICE_STREAM:
            stream_id, n = f"{base}-{n}", n + 1
        used.add(stream_id)
        found.append(SourceSpec(stream_id, kind, target))
    return found


def build_sources(specs: Sequence[SourceSpec], config: Config, *, clock: Callable[[], float]) -> list[Source]:
    audio = config.audio
    sources: list[Source] = []
    for spec in specs:
        if spec.kind == "mic":
            sources.append(MicSource(spec.stream_id, spec.target or audio.mic_device, config=audio, clock=clock))
        else:
            sources.append(
                ReplaySource(
                    spec.stream_id,
                    spec.target,
                    chunk_ms=audio.replay_chunk_ms,
                    speed=audio.replay_speed,
                    fast=audio.replay_fast,
                    clock=clock,
                )
            )
    return sources


def _load_models(config: Config) -> tuple[Transcriber, Predictor]:
    """Load and warm up both models (blocking), so the first utterance does not pay for lazy loading."""
    checkpoint = str(config.resolve_path(config.classifier.checkpoint))
    predictor = load_predictor(checkpoint, device=config.classifier.device)
    transcriber = WhisperTranscriber.load(config.asr)
    attach_audio_features(predictor, transcriber)
    warm = np.zeros(16000, dtype=np.float32)
    predictor.predict(["warm up"] if predictor.uses_text else [None], [warm] if predictor.uses_audio else [None])
    transcriber.transcribe(warm)
    return transcriber, predictor


def attach_audio_features(predictor: Predictor, transcriber: WhisperTranscriber) -> bool:
    """One Whisper in memory: the classifier's audio features use the transcriber's loaded model, and
    when it is the encoder pass they were trained on, its very output (``Transcript.features``)."""
    attach = getattr(predictor, "attach_asr", None)
    if attach is None:
        return False
    same = bool(
        attach(
            transcriber.whisper_model,
            model_sha256=transcriber.model_sha256,
            pad_s=transcriber.pad_s,
            compute_type=transcriber.compute_type,
        )
    )
    if same:
        transcriber.feature_hook = predictor.features_from_encoder  # type: ignore[attr-defined]
    logger.info(
        "audio features: %s",
        "from the ASR's own encoder pass" if same else "one more pass of the shared Whisper (it differs from training)",
    )
    return same


async def run_service(
    config: Config,
    options: RunOptions,
    *,
    models: tuple[Transcriber, Predictor] | None = None,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[Any], None] | None = None,
    out: Any = None,
    drain_s: float = 30.0,
) -> int:
    """Run until done (see the module docstring); returns the process exit status.

    ``models`` skips loading (tests pass fakes); ``stop`` ends the run like SIGINT; ``on_ready``
    gets the started server (or ``None``) once events start flowing. On stop, utterances whose speech
    had ended still get their events, for at most ``drain_s`` (a second SIGINT skips the wait).
    """
    from stream.events.eventlog import EventLog, EventLogError
    from stream.events.hub import Hub

    # faster-whisper logs every utterance at INFO; our own events already say what happened.
    fw_logger = logging.getLogger("faster_whisper")
    if fw_logger.level == logging.NOTSET:
        fw_logger.setLevel(logging.WARNING)

    try:
        specs = parse_sources(options.sources)
    except SourceError as exc:
        logger.error("%s", exc)
        return 2
    clock = time.monotonic
    sources = build_sources(specs, config, clock=clock)
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    force = asyncio.Event()

    def on_signal() -> None:  # the first signal drains what is in flight, a second one quits now
        if stop.is_set():
            force.set()
        else:
            stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, on_signal)
    try:
        segmenter_params(config.vad, make_vad(config.vad).frame_samples)
    except ValueError as exc:
        logger.error("config error in [vad]: %s", exc)
        return 2

    try:
        event_log = EventLog(config.resolve_path(config.log.event_log_dir))
    except EventLogError as exc:
        logger.error("%s", exc)
        return 1
    hub = Hub(queue_events=config.server.subscriber_queue_events)
    sinks: list[Sink] = [event_log.append, hub.publish]
    jsonl = None
    try:
        if options.jsonl:
            try:
                jsonl = JsonlWriter(options.jsonl)
            except OSError as exc:
                logger.error("cannot write --jsonl %s: %s", options.jsonl, exc)
                return 1
            sinks.append(jsonl)
        if config.log.stdout_events and not options.quiet:
            sinks.append(ConsolePrinter(out))
        bus = EventBus(sinks)
        ended: dict[str, str] = {}  # stream -> its `end` reason: did anything work at all?

        def note_end(event: Event) -> None:
            if event.type == "end":
                ended[event.stream] = str(event.data.get("reason"))

        bus.add_sink(note_end)
        if models is None:
            logger.info("loading Whisper %s and the classifier %s", config.asr.model, config.classifier.checkpoint)
            try:
                models = await loop.run_in_executor(None, _load_models, config)
            except Exception as exc:  # model errors name the file/model and the fix
                logger.error("cannot start: %s", exc)
                await bus.emit("error", SERVICE_STREAM, {"code": "internal", "message": f"cannot start: {exc}"})
                return 1
        transcriber, predictor = models
        pipeline = Pipeline(
            sources,
            vad_factory=lambda: make_vad(config.vad),
            vad_config=config.vad,
            transcriber=transcriber,
            predictor=predictor,
            bus=bus,
            max_batch=config.classifier.max_batch,
            batch_wait_ms=config.classifier.batch_wait_ms,
            stats_interval_s=config.server.stats_interval_s,
            extra_stats=lambda: {"hub": hub.stats().to_dict()},
            clock=clock,
        )

        def hello() -> dict[str, Any]:
            return {
                "labels": list(predictor.labels),
                "colors": dict(LABEL_COLORS),
                "streams": [{"id": s.stream_id, "kind": s.kind, "name": s.name} for s in sources],
                "model_ids": {"asr": transcriber.model_id, **dict(predictor.model_ids)},
            }

        exit_when_done = options.exit_when_done or not config.server.enabled
        files = [s.stream_id for s in sources if s.kind == "file"]
        if exit_when_done and not files:
            logger.info("only live sources: running until Ctrl-C")
        async with contextlib.AsyncExitStack() as stack:
            server = None
            if config.server.enabled:
                from stream.server import Server

                server = await stack.enter_async_context(Server(config.server, hub, event_log, hello))
            run = asyncio.create_task(pipeline.run(), name="pipeline")
            if on_ready is not None:
                on_ready(server)
            waiters = {run, asyncio.create_task(stop.wait())}
            if exit_when_done and files:
                waiters.add(asyncio.create_task(pipeline.wait_ended(files)))
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            if run.done() and run.exception() is None and not stop.is_set() and not exit_when_done:
                logger.info("all sources ended; still serving the dashboard (Ctrl-C to stop)")
                await stop.wait()
            await _drain(pipeline, run, force, drain_s)
            status = 0
            if run.done() and not run.cancelled() and run.exception() is not None:
                err = run.exception()
                logger.error("the pipeline failed: %s", err, exc_info=err)
                status = 1
            if status == 0 and files and len(files) == len(sources) and all(ended.get(f) == "error" for f in files):
                logger.error("no source could be processed")
                status = 1
            for task in waiters:
                task.cancel()
            for task in waiters:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            return status
    finally:
        if jsonl is not None:
            jsonl.close()
        event_log.close()


async def _drain(pipeline: Pipeline, run: asyncio.Task[None], force: asyncio.Event, drain_s: float) -> None:
    """Stop the sources and let utterances in flight finish (up to ``drain_s``, or until ``force``)."""
    if run.done():
        return
    pipeline.stop()
    if pipeline.in_flight:
        logger.info("stopping: finishing %d utterance(s) in flight (Ctrl-C again to quit now)", pipeline.in_flight)
    forced = asyncio.create_task(force.wait())
    await asyncio.wait({run, forced}, timeout=drain_s, return_when=asyncio.FIRST_COMPLETED)
    forced.cancel()
    if not run.done():
        logger.warning("stopping without the events of %d utterance(s) in flight", pipeline.in_flight)
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run


def run_from_cli(config: Config, args: argparse.Namespace) -> int:
    """``emostream run``: see :mod:`stream.cli` for the flags."""
    options = RunOptions(
        sources=tuple(args.source or ()),
        jsonl=args.jsonl,
        exit_when_done=bool(args.exit_when_done),
        quiet=bool(args.quiet),
    )
    try:
        return asyncio.run(run_service(config, options))
    except KeyboardInterrupt:  # a second Ctrl-C before the handlers were installed
        print("emostream: interrupted", file=sys.stderr)
        return 0
