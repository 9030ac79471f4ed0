"""A progress line on stderr (images, images/s, errors) that never touches the results on stdout."""

from __future__ import annotations

import sys
import time
from typing import TextIO

REFRESH_S = 0.25


class Progress:
    """Redrawn in place on a terminal at most every :data:`REFRESH_S`; silent when disabled or piped."""

    def __init__(self, enabled: bool = True, stream: TextIO | None = None):
        self._stream = stream or sys.stderr
        self._live = enabled and self._stream.isatty()
        self.started = time.perf_counter()
        self.count = 0
        self.errors = 0
        self._drawn = 0.0

    @property
    def rate(self) -> float:
        elapsed = time.perf_counter() - self.started
        return self.count / elapsed if elapsed > 0 else 0.0

    def update(self, failed: bool) -> None:
        self.count += 1
        self.errors += failed
        now = time.perf_counter()
        if self._live and now - self._drawn >= REFRESH_S:
            self._drawn = now
            self._stream.write(f"\r{self.count} images  {self.rate:.1f} img/s  {self.errors} errors ")
            self._stream.flush()

    def close(self) -> None:
        if self._live and self.count:
            self._stream.write("\r" + " " * 60 + "\r")
            self._stream.flush()
