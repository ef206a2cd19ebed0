"""Quiet by default: what the user asked for on the terminal, library noise in a log file.

TensorFlow, XLA/CUDA and absl write start-up notes from C++ straight to file descriptor 2, and
TFX, Beam and Google client libraries log and warn through Python onto the same stream, before
and during every command. `send_noise_to(path)` points descriptor 2 at a log file (so all of
that lands there, complete, for when something goes wrong) and keeps the terminal for the
`sicot` command's own messages and progress bars: write those to `stream()`. Child processes
inherit the log file through SICOT_LOG_FILE. `sicot --verbose` leaves everything on the
terminal.
"""
from __future__ import annotations

import os
import sys
from typing import TextIO

LOG_ENV = "SICOT_LOG_FILE"
# Under a command's run folder (`sicot.cli.log_path`): commands that want their --out folder
# new or empty accept one that holds only this folder, which the log file was written to first.
LOG_FOLDER = "logs"

_terminal: TextIO | None = None


def stream() -> TextIO:
    """Where the command's own messages and progress bars go: the terminal."""
    return _terminal if _terminal is not None else sys.stderr


def quieted() -> bool:
    return _terminal is not None


def send_noise_to(log_path: str) -> str:
    """Descriptor 2 (and so sys.stderr, warnings, logging) -> `log_path`, appended; returns it.

    Does nothing when already done, or when sys.stderr is not the process's own (a test
    capturing it, an embedding program): redirecting the descriptor under them would hide
    their output.
    """
    global _terminal
    if _terminal is not None or sys.stderr is not sys.__stderr__:
        return log_path
    log_path = os.path.abspath(log_path)
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    _terminal = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="replace")
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 2)
    os.close(fd)
    os.environ[LOG_ENV] = log_path
    return log_path


def progress(iterable=None, **kwargs):
    """A tqdm progress bar on the terminal (`stream()`)."""
    from tqdm.auto import tqdm

    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("file", stream())
    return tqdm(iterable, **kwargs)
