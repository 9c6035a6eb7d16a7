"""``emostream run``: sources, models, the pipeline, the event sinks and the server, wired together.

Lifecycle: parse the sources, load Whisper and the classifier (in a worker thread), open the event
sinks (:mod:`stream.sinks`) and the server, then run the pipeline. With ``--no-server`` or
``--exit-when-done`` the service exits 0 once every *file* source has sent its ``end`` event (all its
events are written by then); otherwise it keeps serving the dashboard until SIGINT/SIGTERM, which also
exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stream import models as model_loading
from stream.config import Config
from stream.pipeline import Pipeline
from stream.protocol import SERVICE_STREAM, error_data, service_description
from stream.sinks import SinkError, Sinks, open_sinks
from stream.sources.spec import DEMO_PATH, SourceError, SourceSpec, build_sources, parse_sources
from stream.stages.classifier import Predictor
from stream.stages.segment import segmenter_params
from stream.stages.speakers import SpeakerStage
from stream.stages.transcriber import Transcriber
from stream.stages.vad import make_vad
from training.audio import load_audio

__all__ = ["DEMO_PATH", "RunOptions", "SourceError", "SourceSpec", "parse_sources", "run_from_cli", "run_service"]

if TYPE_CHECKING:
    from stream.server import Server

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RunOptions:
    sources: tuple[str, ...] = ()  # empty = the bundled demo
    jsonl: str | None = None
    srt: str | None = None  # subtitles written while running (stream.export.SubtitleWriter)
    exit_when_done: bool = False
    quiet: bool = False
    speakers: tuple[str, ...] = ()  # enrolment: "NAME=CLIP" (--speaker)


@dataclass(frozen=True, slots=True)
class _Control:
    """How a run is told to end: ``stop`` drains what is in flight, ``force`` quits now."""

    stop: asyncio.Event
    force: asyncio.Event
    on_ready: Callable[[Any], None] | None
    drain_s: float


def _install_signals(control: _Control) -> None:
    def on_signal() -> None:  # the first signal drains what is in flight, a second one quits now
        (control.force if control.stop.is_set() else control.stop).set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, on_signal)


async def run_service(
    config: Config,
    options: RunOptions,
    *,
    models: tuple[Transcriber, Predictor] | None = None,
    speakers: SpeakerStage | None = None,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[Any], None] | None = None,
    out: Any = None,
    drain_s: float = 30.0,
) -> int:
    """Run until done (see the module docstring); returns the process exit status.

    ``models`` skips loading (tests pass fakes); the speaker stage is then ``speakers`` (``None``: none),
    else it is loaded when ``[speakers] enabled``. ``stop`` ends the run like SIGINT; ``on_ready``
    gets the started server (or ``None``) once events start flowing. On stop, utterances whose speech
    had ended still get their events, for at most ``drain_s`` (a second SIGINT skips the wait).
    """
    # faster-whisper logs every utterance at INFO; our own events already say what happened.
    fw_logger = logging.getLogger("faster_whisper")
    if fw_logger.level == logging.NOTSET:
        fw_logger.setLevel(logging.WARNING)
    parsed = _parse_inputs(config, options)
    if parsed is None:
        return 2
    specs, enrolment = parsed
    control = _Control(stop or asyncio.Event(), asyncio.Event(), on_ready, drain_s)
    _install_signals(control)
    try:
        # `emostream run | head`: when the reader of stdout goes away, stop as on Ctrl-C.
        streams = [s.stream_id for s in specs]
        with open_sinks(config, options, streams, out=out, on_stdout_closed=control.stop.set) as sinks:
            if models is None:
                models = await _load_models(config, sinks)
                if models is None:
                    return 1
                if config.speakers.enabled:
                    try:
                        speakers = await model_loading.speaker_stage_or_none(config, enrolment)
                    except Exception as exc:  # enrolment without an encoder, or a clip that cannot be read
                        logger.error("cannot start: %s", exc)
                        await sinks.bus.emit("error", SERVICE_STREAM, error_data("internal", f"cannot start: {exc}"))
                        return 1
            elif enrolment and speakers is not None:
                for name, path in enrolment:
                    speakers.enrol(name, await asyncio.get_running_loop().run_in_executor(None, load_audio, path))
            exit_when_done = options.exit_when_done or not config.server.enabled
            # Kept open when serving: the page may add streams (uploads, its microphone) until stopped.
            pipeline = _build_pipeline(config, specs, models, sinks, keep_open=not exit_when_done, speakers=speakers)
            hello = _describe(pipeline, models)
            return await _serve(config, pipeline, sinks, control, hello=hello, exit_when_done=exit_when_done)
    except SinkError as exc:
        logger.error("%s", exc)
        return 1


def _parse_inputs(config: Config, options: RunOptions) -> tuple[list[SourceSpec], list[tuple[str, Path]]] | None:
    """The sources and enrolment clips the command line names, and the VAD settings checked; ``None``
    (after logging why) when one is wrong: the run exits with status 2 before loading anything."""
    try:
        specs = parse_sources(options.sources)
        enrolment = model_loading.parse_enrolment(options.speakers)
    except (SourceError, ValueError) as exc:
        logger.error("%s", exc)
        return None
    try:
        segmenter_params(config.vad, make_vad(config.vad).frame_samples)
    except ValueError as exc:
        logger.error("config error in [vad]: %s", exc)
        return None
    return list(specs), list(enrolment)


async def _load_models(config: Config, sinks: Sinks) -> tuple[Transcriber, Predictor] | None:
    """Both models, loaded in a worker thread; None (after an ``error`` event) when they cannot be."""
    logger.info("loading Whisper %s and the classifier %s", config.asr.model, config.classifier.checkpoint)
    try:
        return await asyncio.get_running_loop().run_in_executor(None, model_loading.load_models, config)
    except Exception as exc:  # model errors name the file/model and the fix
        logger.error("cannot start: %s", exc)
        await sinks.bus.emit("error", SERVICE_STREAM, error_data("internal", f"cannot start: {exc}"))
        return None


def _build_pipeline(
    config: Config,
    specs: list[SourceSpec],
    models: tuple[Transcriber, Predictor],
    sinks: Sinks,
    *,
    keep_open: bool,
    speakers: SpeakerStage | None,
) -> Pipeline:
    transcriber, predictor = models
    hub = sinks.hub
    return Pipeline(
        build_sources(specs, config, clock=time.monotonic),
        sinks.bus,
        transcriber=transcriber,
        predictor=predictor,
        config=config,
        extra_stats=lambda: {"hub": hub.stats().to_dict()},
        clock=time.monotonic,
        keep_open=keep_open,
        speakers=speakers,
    )


def _describe(pipeline: Pipeline, models: tuple[Transcriber, Predictor]) -> Callable[[], dict[str, Any]]:
    """The service's part of each connection's ``hello``."""
    transcriber, predictor = models

    speakers = pipeline.speakers
    speaker_ids = {"speaker_encoder": speakers.model_id} if speakers is not None else {}

    def hello() -> dict[str, Any]:
        return {
            **service_description(
                labels=predictor.labels,
                streams=[(s.stream_id, s.kind, s.name) for s in pipeline.sources],
                model_ids={"asr": transcriber.model_id, **dict(predictor.model_ids), **speaker_ids},
            ),
            # Names given so far (label -> name per stream); `speaker` events carry every later one.
            "speakers": {k: dict(v) for k, v in speakers.names().items()} if speakers is not None else {},
        }

    return hello


async def _serve(
    config: Config,
    pipeline: Pipeline,
    sinks: Sinks,
    control: _Control,
    *,
    hello: Callable[[], dict[str, Any]],
    exit_when_done: bool,
) -> int:
    """Run ``pipeline`` (and the server) until the sources end or a stop; returns the exit status."""
    sources = list(pipeline.sources)  # those of the command line (the page may add more)
    files = [s.stream_id for s in sources if s.kind == "file"]
    if exit_when_done and not files:
        logger.info("only live sources: running until Ctrl-C")
    async with contextlib.AsyncExitStack() as stack:
        server = None
        if config.server.enabled:
            server = await stack.enter_async_context(_server(config, pipeline, sinks, hello))
        run = asyncio.create_task(pipeline.run(), name="pipeline")
        if control.on_ready is not None:
            control.on_ready(server)
        waiters = {run, asyncio.create_task(control.stop.wait())}
        if exit_when_done and files:
            waiters.add(asyncio.create_task(pipeline.wait_ended(files)))
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if run.done() and run.exception() is None and not control.stop.is_set() and not exit_when_done:
            logger.info("all sources ended; still serving the dashboard (Ctrl-C to stop)")
            await control.stop.wait()
        await _drain(pipeline, run, control.force, control.drain_s)
        for task in waiters:
            task.cancel()
        for task in waiters - {run}:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        return _exit_status(run, files, len(sources), sinks.ended)


def _server(config: Config, pipeline: Pipeline, sinks: Sinks, hello: Callable[[], dict[str, Any]]) -> Server:
    """The websocket/HTTP server, with the page's API and microphone ingest wired to ``pipeline``."""
    from stream.control import LiveControl
    from stream.server import Server
    from stream.sources.ingest import IngestEndpoint

    control = LiveControl(config, pipeline, sinks.event_log.run_id, clock=time.monotonic)
    ingest = IngestEndpoint(config.server, control.add_ingest, clock=time.monotonic)
    return Server(
        config.server,
        sinks.hub,
        sinks.event_log,
        hello,
        backend=control,
        ingest=ingest.handle,
        name_speaker=pipeline.name_speaker,
    )


def _exit_status(run: asyncio.Task[None], files: list[str], n_sources: int, ended: dict[str, str]) -> int:
    if run.done() and not run.cancelled() and run.exception() is not None:
        err = run.exception()
        logger.error("the pipeline failed: %s", err, exc_info=err)
        return 1
    if files and len(files) == n_sources and all(ended.get(f) == "error" for f in files):
        logger.error("no source could be processed")
        return 1
    return 0


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
        srt=getattr(args, "srt", None),
        exit_when_done=bool(args.exit_when_done),
        quiet=bool(args.quiet),
        speakers=tuple(getattr(args, "speaker", None) or ()),
    )
    try:
        return asyncio.run(run_service(config, options))
    except KeyboardInterrupt:  # a second Ctrl-C before the handlers were installed
        print("emostream: interrupted", file=sys.stderr)
        return 0
