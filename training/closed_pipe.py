"""A command whose stdout reader goes away (``emostream evaluate ... | head``) ends quietly.

Shared by both command lines (``emostream``, ``emostream-train``) and the service's console printer.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TextIO

__all__ = ["CLOSED_PIPE_STATUS", "run_until_pipe_closes", "silence_closed_stdout"]

# Exit status of a command whose reader closed the pipe: what a shell reports for a tool killed by SIGPIPE.
CLOSED_PIPE_STATUS = 128 + 13


def run_until_pipe_closes(command: Callable[[], int]) -> int:
    """``command()``'s exit status, or :data:`CLOSED_PIPE_STATUS` (quietly) when stdout's reader went away."""
    try:
        status = command()
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's last flush
        return status
    except BrokenPipeError:
        silence_closed_stdout()
        return CLOSED_PIPE_STATUS


def silence_closed_stdout(out: TextIO | None = None) -> None:
    """Point stdout's descriptor at /dev/null after its reader went away.

    Python flushes stdout once more at exit; on a closed pipe that flush raises again and prints
    "Exception ignored ... BrokenPipeError". Only the real stdout is redirected.
    """
    if out is not None and out is not sys.stdout:
        return
    try:
        fd = sys.stdout.fileno()
        devnull = os.open(os.devnull, os.O_WRONLY)
    except (OSError, ValueError):  # no real descriptor (captured by a test, already closed)
        return
    os.dup2(devnull, fd)
    os.close(devnull)
