"""The progress bar of a run on stderr (never on stdout, where the summary goes).

On a terminal it is click's progress bar: position over the total, percentage and ETA when the
number of inputs is known before the run (files and folders), a running count when it is not
(a list on stdin); images/s and the error count follow. When stderr is not a terminal (piped,
redirected to a log, CI) nothing is drawn: the summary line says what happened.
"""

from __future__ import annotations

import contextlib
import itertools
import sys
import time
from typing import TextIO

import click

REFRESH_S = 0.25
BAR_WIDTH = 20


class Progress:
    """Counts results and, on a terminal, redraws the bar at most every :data:`REFRESH_S`."""

    def __init__(self, total: int | None, enabled: bool = True, stream: TextIO | None = None):
        self.total = total
        self.started = time.perf_counter()
        self.count = 0
        self.errors = 0
        self._pending = 0
        self._drawn = 0.0
        self._exit = contextlib.ExitStack()
        stream = stream or sys.stderr
        self._bar = self._exit.enter_context(self._open_bar(stream)) if enabled and stream.isatty() else None

    def _open_bar(self, stream: TextIO):
        # click needs an iterable when the length is unknown; it is never iterated, only updated.
        return click.progressbar(
            itertools.count() if self.total is None else None,
            length=self.total,
            file=stream,
            show_pos=True,
            show_percent=self.total is not None,
            show_eta=True,
            item_show_func=lambda _: self._describe(),
            width=BAR_WIDTH,
        )

    @property
    def rate(self) -> float:
        elapsed = time.perf_counter() - self.started
        return self.count / elapsed if elapsed > 0 else 0.0

    def _describe(self) -> str:
        return f"{self.rate:.1f} img/s, {self.errors} error{'' if self.errors == 1 else 's'}"

    def update(self, failed: bool) -> None:
        self.count += 1
        self.errors += failed
        self._pending += 1
        now = time.perf_counter()
        if self._bar is not None and now - self._drawn >= REFRESH_S:
            self._drawn = now
            self._bar.update(self._pending)
            self._pending = 0

    def close(self) -> None:
        """Draw the final state and end the bar's line (the summary follows on its own line)."""
        if self._bar is not None and self._pending:
            self._bar.update(self._pending)
            self._pending = 0
        self._exit.close()
