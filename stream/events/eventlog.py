"""The append-only event log: one JSONL file per service run, the source of websocket ``resume``.

Every event the :class:`stream.events.bus.EventBus` emits is written here as one line *before* it is
published to live subscribers, so any ``seq`` a subscriber has seen can be replayed from the file.
Each line is flushed to the operating system as it is written: a ``kill -9`` loses nothing up to the
last complete line (a power cut may lose what the OS had not yet written; we do not ``fsync`` per
event, which would cost a disk round trip per utterance). Readers ignore a torn last line.

A service run never reuses a file: the name holds a fresh run id, and the file is created with
``O_EXCL`` so an existing log is never overwritten or appended to.
"""

from __future__ import annotations

import bisect
import json
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Final

from stream.protocol import Event, ProtocolError

__all__ = ["EventLog", "EventLogError", "LogHistory", "new_run_id", "read_events"]

logger = logging.getLogger(__name__)

# Remember the byte offset of every Nth event so ``read_after`` can seek instead of scanning the run.
_INDEX_EVERY: Final = 256
_RUN_ID_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


class EventLogError(RuntimeError):
    """The event log cannot be created or used."""


def new_run_id(clock: float | None = None) -> str:
    """A run id that sorts by start time and is unique even for runs started in the same second."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if clock is None else clock))
    return f"{stamp}-{secrets.token_hex(3)}"


class EventLog:
    """One append-only JSONL file of events for this service run.

    ``EventLog(folder)`` creates ``folder/events-<run_id>.jsonl``. :meth:`append` is synchronous and
    is called on the event loop by the event bus; :meth:`read_after` may be iterated while appends go
    on (it yields what had been written when it reached each line, and stops at the end of the file).
    """

    def __init__(self, folder: Path, *, run_id: str | None = None) -> None:
        folder = Path(folder)
        if run_id is not None and (not run_id or not set(run_id) <= _RUN_ID_CHARS or run_id.startswith(".")):
            raise EventLogError(f"run_id {run_id!r} must be non-empty and use only letters, digits, '-', '_', '.'")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EventLogError(f"cannot create the event log folder {folder}: {exc}") from exc
        self._file: IO[bytes] | None = None
        for _attempt in range(8):
            rid = run_id or new_run_id()
            path = folder / f"events-{rid}.jsonl"
            try:
                # "xb": O_CREAT | O_EXCL -- an existing log is never overwritten.
                self._file = open(path, "xb")  # noqa: SIM115 - closed by close()
                break
            except FileExistsError:
                if run_id is not None:
                    raise EventLogError(
                        f"event log {path} already exists; a run id is used once (omit run_id for a fresh one)"
                    ) from None
            except OSError as exc:
                raise EventLogError(f"cannot create the event log {path}: {exc}") from exc
        if self._file is None:  # pragma: no cover - 8 random collisions in one second
            raise EventLogError(f"could not find a free event log name in {folder}")
        self.run_id: str = rid
        self.path: Path = path
        self._offset = 0
        self._last_seq: int | None = None
        self._index_seqs: list[int] = []  # seq of every _INDEX_EVERY-th event ...
        self._index_offsets: list[int] = []  # ... and the byte offset of its line
        self._count = 0
        self.write_errors = 0
        logger.info("event log: %s", path)

    # -- writing ---------------------------------------------------------------------------------

    @property
    def last_seq(self) -> int | None:
        """The seq of the last event appended in this run (``None`` before the first)."""
        return self._last_seq

    def append(self, event: Event) -> None:
        """Write ``event`` as one line and flush it to the OS.

        ``seq`` must be larger than the previous event's (the log is ordered by it). A failed write
        (disk full) is logged and counted in :attr:`write_errors` but does not raise: the live service
        goes on, and a later ``resume`` that needs the missing events is told they are unavailable.
        """
        if self._file is None:
            raise EventLogError(f"event log {self.path} is closed")
        if self._last_seq is not None and event.seq <= self._last_seq:
            raise ValueError(f"event seq {event.seq} is not after the last logged seq {self._last_seq}")
        line = (event.to_json() + "\n").encode("utf-8")
        try:
            self._file.write(line)
            self._file.flush()
        except OSError as exc:
            self.write_errors += 1
            if self.write_errors == 1 or self.write_errors % 1000 == 0:
                logger.error("event log %s: write failed (%d so far): %s", self.path, self.write_errors, exc)
            self._resync_offset()
            return
        if self._count % _INDEX_EVERY == 0:
            self._index_seqs.append(event.seq)
            self._index_offsets.append(self._offset)
        self._offset += len(line)
        self._count += 1
        self._last_seq = event.seq

    def _resync_offset(self) -> None:
        # After a partial write the file may end in a torn line; later lines still start after it.
        try:
            assert self._file is not None
            self._offset = os.fstat(self._file.fileno()).st_size
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        """Close the file; later appends raise :class:`EventLogError`. Idempotent."""
        if self._file is not None:
            try:
                self._file.close()
            except OSError as exc:  # a full disk: the events it could not take were counted in write_errors
                logger.error("event log %s: closing failed: %s", self.path, exc)
            finally:
                self._file = None

    def __enter__(self) -> EventLog:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- reading ---------------------------------------------------------------------------------

    def read_after(self, seq: int) -> Iterator[Event]:
        """Every logged event with ``seq`` greater than ``seq``, in order.

        Reads the file through its own handle, so it works while appends continue and after
        :meth:`close`. A last line without its newline (a write cut short) is not yielded; a complete
        line that does not parse is skipped with a warning.
        """
        start = 0
        pos = bisect.bisect_right(self._index_seqs, seq) - 1
        if pos >= 0:
            start = self._index_offsets[pos]
        return _read_events(self.path, seq, start)


def read_events(path: Path, after_seq: int = -1) -> Iterator[Event]:
    """The events of any event log file (e.g. a finished run's) with seq above ``after_seq``."""
    return _read_events(Path(path), after_seq, 0)


def _read_events(path: Path, after_seq: int, start: int) -> Iterator[Event]:
    with open(path, "rb") as fh:
        fh.seek(start)
        offset = start
        for raw in fh:
            line_offset, offset = offset, offset + len(raw)
            if not raw.endswith(b"\n"):
                return  # torn (or still being written by another process): not an event yet
            try:
                event = Event.from_dict(json.loads(raw))
            except (ValueError, ProtocolError, TypeError, AttributeError) as exc:
                logger.warning("event log %s: skipping a bad line at byte %d: %s", path, line_offset, exc)
                continue
            if event.seq > after_seq:
                yield event


class LogHistory:
    """The in-process :class:`stream.events.bus.EventHistory`: this run's event log.

    ``head_seq`` is the hub's watermark (``last_seq``): in one process every logged event is
    published to the hub as soon as it is written.
    """

    def __init__(self, log: EventLog, last_seq: Callable[[], int | None]) -> None:
        self.log = log
        self.run_id = log.run_id
        self._last_seq = last_seq

    async def head_seq(self) -> int | None:
        return self._last_seq()

    async def problem(self, after_seq: int) -> str | None:
        if self.log.write_errors:
            return f"{self.log.write_errors} events could not be logged; the replay may have gaps"
        return None

    async def replay(self, after_seq: int, upto_seq: int) -> AsyncIterator[Event]:
        # Events, not their JSON: a filtered-out replay then costs no encoding at all.
        for event in self.log.read_after(after_seq):
            if event.seq > upto_seq:
                return
            yield event
