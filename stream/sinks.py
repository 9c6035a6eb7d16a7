"""Where a run's events go: the event log and the hub always; ``--jsonl``, ``--srt`` and stdout on request.

:func:`open_sinks` opens them all (or none: a sink that cannot open raises :class:`SinkError` naming
it, after closing those already open) and closes them when the run ends.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stream.config import Config
from stream.events.bus import EventBus, JsonlWriter, Sink
from stream.events.console import ConsolePrinter
from stream.events.eventlog import EventLog, EventLogError
from stream.events.hub import Hub
from stream.protocol import Event

__all__ = ["SinkError", "Sinks", "open_sinks"]


class SinkError(RuntimeError):
    """A sink could not be opened (the message names it and why)."""


@dataclass(slots=True)
class Sinks:
    """The bus that feeds every sink, and the sinks the server reads from."""

    bus: EventBus
    event_log: EventLog
    hub: Hub
    ended: dict[str, str] = field(default_factory=dict)  # stream -> its `end` reason

    def note_end(self, event: Event) -> None:
        if event.type == "end":
            self.ended[event.stream] = str(event.data.get("reason"))


@contextlib.contextmanager
def open_sinks(
    config: Config,
    options: Any,
    streams: Sequence[str],
    *,
    out: Any = None,
    on_stdout_closed: Callable[[], None] | None = None,
) -> Iterator[Sinks]:
    """Open the sinks ``options`` (``jsonl``, ``srt``, ``quiet``) ask for, for ``streams``.

    ``on_stdout_closed`` is called once if the reader of the event lines goes away (``emostream run | head``).
    """
    with contextlib.ExitStack() as stack:
        try:
            event_log = EventLog(config.resolve_path(config.log.event_log_dir))
        except EventLogError as exc:
            raise SinkError(str(exc)) from exc
        stack.callback(event_log.close)
        hub = Hub(queue_events=config.server.subscriber_queue_events)
        sinks: list[Sink] = [event_log.append, hub.publish]
        if options.jsonl:
            try:
                jsonl = JsonlWriter(options.jsonl)
            except OSError as exc:
                raise SinkError(f"cannot write --jsonl {options.jsonl}: {exc}") from exc
            stack.callback(jsonl.close)
            sinks.append(jsonl)
        if options.srt:
            from stream.export import SubtitleWriter

            try:
                subtitles = SubtitleWriter.for_streams(Path(options.srt), list(streams))
            except OSError as exc:
                raise SinkError(f"cannot write --srt {options.srt}: {exc}") from exc
            for writer in subtitles:
                stack.callback(writer.close)
            sinks.extend(subtitles)
        if config.log.stdout_events and not options.quiet:
            sinks.append(ConsolePrinter(out, on_closed=on_stdout_closed))
        result = Sinks(EventBus(sinks), event_log, hub)
        result.bus.add_sink(result.note_end)  # did anything work at all? (the exit status)
        yield result
