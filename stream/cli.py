"""``emostream``: the service's command line (``run``, ``devices``, ``export``, ``evaluate``; on Redis:
``worker``, ``gateway``, ``submit``)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from stream import __version__
from stream.config import Config, ConfigError, load_config
from training.closed_pipe import run_until_pipe_closes

__all__ = ["build_parser", "config_from_args", "main"]

logger = logging.getLogger("stream")

DEFAULT_CONFIG = "config.toml"


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help=f"config file (default: ./{DEFAULT_CONFIG} when present)")
    p.add_argument("--asr-model", default=None, help="tiny.en | base (packaged) | a local folder | a hub name")
    p.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N, for Whisper and the classifier")
    p.add_argument("--checkpoint", default=None, help="classifier checkpoint (default: classifier.checkpoint)")
    p.add_argument("--log-level", default=None, choices=("DEBUG", "INFO", "WARNING", "ERROR"))


def _add_bus(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bus", default=None, metavar="URL", help="redis://HOST:PORT/DB (default: bus.url)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emostream",
        description="Real-time speech emotion monitor: live audio -> VAD -> Whisper -> emotion -> websocket events.",
    )
    parser.add_argument("--version", action="version", version=f"emostream {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_run(sub.add_parser("run", help="run the service on the microphone and/or media files"))
    sub.add_parser("devices", help="list audio input devices")
    _add_worker(sub.add_parser("worker", help="run the pipeline and publish events to Redis (jobs or --source)"))
    gw = sub.add_parser("gateway", help="serve the dashboard and websocket from Redis")
    _add_common(gw)
    _add_bus(gw)
    _add_listen(gw)
    _add_submit(sub.add_parser("submit", help="queue a media file for replay by the workers"))
    _add_export(sub.add_parser("export", help="subtitles (SRT, WebVTT) or a spreadsheet (CSV) from an event log"))
    ev = sub.add_parser("evaluate", help="replay a recording and score it against ground-truth utterances")
    _add_common(ev)
    from stream.evaluation import cli as evaluate

    evaluate.add_arguments(ev)
    return parser


def _add_pace(p: argparse.ArgumentParser) -> None:
    pace = p.add_mutually_exclusive_group()
    pace.add_argument("--fast", action="store_true", help="replay files as fast as the pipeline can go")
    pace.add_argument("--speed", type=float, default=None, metavar="X", help="replay files at X times real time")


def _add_listen(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default=None, help="websocket/dashboard host (default: server.host)")
    p.add_argument("--port", type=int, default=None, help="websocket/dashboard port (default: server.port)")


def _add_run(run: argparse.ArgumentParser) -> None:
    _add_common(run)
    run.add_argument(
        "--source",
        action="append",
        default=None,
        metavar="mic|DEVICE|PATH",
        help="'mic' (default input), a device index or name, or a media file; repeat for several streams "
        "(default: the bundled demo recording)",
    )
    _add_pace(run)
    run.add_argument("--jsonl", default=None, metavar="PATH", help="also write every event to PATH, one per line")
    run.add_argument(
        "--srt",
        default=None,
        metavar="FILE",
        help="write subtitles (text, emotion, score) while running; "
        "with several sources one file per stream (FILE.STREAM.srt)",
    )
    _add_listen(run)
    run.add_argument("--no-server", action="store_true", help="no websocket server; exit when files are done")
    run.add_argument("--exit-when-done", action="store_true", help="exit 0 once every file source has ended")
    run.add_argument("--quiet", action="store_true", help="no per-event lines on stdout")
    run.add_argument(
        "--speaker",
        action="append",
        default=None,
        metavar="NAME=CLIP",
        help="enrol a known speaker from a clean clip of their voice (a few seconds); repeat for several",
    )
    run.add_argument("--no-speakers", action="store_true", help="no speaker labels (speakers.enabled = false)")


def _add_worker(wk: argparse.ArgumentParser) -> None:
    _add_common(wk)
    _add_bus(wk)
    wk.add_argument("--source", action="append", default=None, metavar="mic|DEVICE|PATH",
                    help="run these sources once instead of taking submitted jobs")  # fmt: skip
    _add_pace(wk)
    wk.add_argument("--jobs", type=int, default=None, metavar="N", help="streams at once (default: bus.worker_jobs)")
    wk.add_argument("--exit-when-idle", action="store_true", help="exit once no job is queued or running")


def _add_submit(sm: argparse.ArgumentParser) -> None:
    sm.add_argument("media", metavar="MEDIA", help="a media file every worker can read (absolute path is stored)")
    sm.add_argument("--config", default=None, help=f"config file (default: ./{DEFAULT_CONFIG} when present)")
    _add_bus(sm)
    sm.add_argument("--name", default=None, help="stream id (default: the file stem; made unique)")


def _add_export(exp: argparse.ArgumentParser) -> None:
    exp.add_argument("events", metavar="EVENTS.jsonl", help="an event log (runs/events/...) or a --jsonl file")
    exp.add_argument("--format", required=True, choices=("srt", "vtt", "csv"), help="output format")
    exp.add_argument("--out", required=True, metavar="FILE", help="where to write it")
    exp.add_argument("--stream", default=None, help="only this stream (needed for subtitles when there are several)")


def config_from_args(args: argparse.Namespace) -> Config:
    """Load the config file and apply the CLI overrides (checked like file values)."""
    from pathlib import Path

    path = args.config
    if path is None and Path(DEFAULT_CONFIG).is_file():
        path = DEFAULT_CONFIG
    overrides: dict[str, Any] = {}
    if getattr(args, "asr_model", None):
        overrides["asr.model"] = args.asr_model
    if getattr(args, "device", None):
        overrides["asr.device"] = args.device
        overrides["classifier.device"] = args.device
    if getattr(args, "checkpoint", None):
        overrides["classifier.checkpoint"] = args.checkpoint
    if getattr(args, "log_level", None):
        overrides["log.level"] = args.log_level
    if getattr(args, "host", None):
        overrides["server.host"] = args.host
    # The token from the environment rather than the command line, where `ps` would show it.
    if os.environ.get("EMOSTREAM_TOKEN"):
        overrides["server.token"] = os.environ["EMOSTREAM_TOKEN"]
    if getattr(args, "port", None) is not None:
        overrides["server.port"] = args.port
    if getattr(args, "speed", None) is not None:
        overrides["audio.replay_speed"] = args.speed
    if getattr(args, "fast", False):
        overrides["audio.replay_fast"] = True
    if getattr(args, "no_server", False):
        overrides["server.enabled"] = False
    if getattr(args, "no_speakers", False):
        overrides["speakers.enabled"] = False
    if getattr(args, "bus", None):
        overrides["bus.url"] = args.bus
    return load_config(path, **overrides)


def _cmd_devices() -> int:
    from stream.sources.devices import DeviceError, list_input_devices

    try:
        devices = list_input_devices()
    except DeviceError as exc:
        print(f"emostream: {exc}", file=sys.stderr)
        return 1
    if not devices:
        print("emostream: PortAudio works, but it lists no input device (no microphone connected?)", file=sys.stderr)
        return 1
    print(f"{'index':>5}  {'ch':>2}  {'rate':>6}  host API / name")
    for d in devices:
        star = "*" if d.is_default else " "
        rate = f"{d.default_sample_rate_hz:>6.0f}"
        print(f"{d.index:>4}{star}  {d.max_input_channels:>2}  {rate}  {d.hostapi} / {d.name}")
    print("(* = default input; use `emostream run --source INDEX` or a part of the name)")
    return 0


def _cmd_submit(config: Config, args: argparse.Namespace) -> int:
    import asyncio

    from redis.exceptions import RedisError

    from stream.events.redis_bus import connect
    from stream.events.redis_jobs import JobQueue

    if not config.bus.url:
        print("emostream: submit needs --bus redis://HOST:PORT/DB (or bus.url in the config)", file=sys.stderr)
        return 2

    async def submit() -> int:
        client = connect(config.bus.url)
        try:
            job = await JobQueue(client, config.bus).submit(args.media, args.name)
        finally:
            await client.aclose()
        print(f"queued {job.path} as stream {job.stream} (job {job.entry_id})")
        return 0

    try:
        return asyncio.run(submit())
    except FileNotFoundError as exc:
        print(f"emostream: {exc}", file=sys.stderr)
        return 2
    except (RedisError, OSError) as exc:
        print(f"emostream: cannot reach Redis at {config.bus.url}: {exc}", file=sys.stderr)
        return 1


def _cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from stream.export import ExportError, export_file

    try:
        count = export_file(Path(args.events), args.format, Path(args.out), stream=args.stream)
    except ExportError as exc:
        print(f"emostream: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {count} utterances to {args.out}")
    return 0


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``emostream``; returns the exit status. A closed stdout (``emostream evaluate ... | head``) ends it quietly."""
    return run_until_pipe_closes(lambda: _main(argv))


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "devices":
        return _cmd_devices()
    if args.command == "export":
        return _cmd_export(args)
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        print(f"emostream: config error: {exc}", file=sys.stderr)
        return 2
    _setup_logging(config.log.level)
    if args.command == "run":
        from stream.service import run_from_cli

        return run_from_cli(config, args)
    if args.command == "worker":
        from stream.worker import worker_from_cli

        return worker_from_cli(config, args)
    if args.command == "gateway":
        from stream.gateway import gateway_from_cli

        return gateway_from_cli(config, args)
    if args.command == "submit":
        return _cmd_submit(config, args)
    from stream.evaluation.cli import run_from_cli as evaluate_from_cli

    return evaluate_from_cli(config, args)
