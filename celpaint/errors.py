"""Typed exceptions. The CLI turns each into one line on stderr and an exit code."""

from __future__ import annotations

# The exit code of a run stopped by Ctrl-C (or SIGTERM), as shells report SIGINT.
EXIT_INTERRUPTED = 130


class CelpaintError(Exception):
    """Base class for every error celpaint raises on purpose.

    The message is meant for the user: it says what was wrong and what to do.
    """

    exit_code: int = 1


class InputError(CelpaintError):
    """Bad usage or bad input (a missing file, an unreadable clip, a wrong option). Exit code 2."""

    exit_code = 2


class CheckpointError(InputError):
    """A model directory that is missing, corrupt or incompatible."""


class ProcessingError(CelpaintError):
    """A failure while running (ffmpeg died, the disk filled up). Exit code 1."""

    exit_code = 1
