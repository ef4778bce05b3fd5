"""Progress reporting from long core work to whoever drives it (a progress bar, a job row)."""

from __future__ import annotations

from typing import Protocol


class Cancelled(Exception):
    """Raised by a reporter to stop the work it is watching (the campaign was paused or cancelled)."""


class Reporter(Protocol):
    """Called as work advances: ``reporter(phase, step, total)``; may raise :class:`Cancelled`."""

    def __call__(self, phase: str, step: int, total: int) -> None: ...


def null_reporter(phase: str, step: int, total: int) -> None:
    """A reporter that ignores everything."""
