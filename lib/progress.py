"""Progress of a long stage: a tqdm bar on a terminal, periodic log lines elsewhere.

Every long loop of the pipeline (decoding, feature engineering, embedding) reports
through :func:`progress`. On a terminal the user sees a tqdm bar (count, rate, ETA);
when stderr is not a terminal (CI, a log file) the same facts are logged as one line
every ``interval`` seconds and once at the end, so logs stay readable.
"""
import contextlib
import logging
import sys
import time
from typing import Iterator, Optional

logger = logging.getLogger(__name__)

LOG_INTERVAL = 30.0  # seconds between log lines when stderr is not a terminal


def _duration(seconds: float) -> str:
    """``1h02m``, ``3m05s`` or ``42s``."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class LogProgress:
    """Logs ``desc: done/total unit (pct), rate unit/s, ETA`` every ``interval`` seconds.

    Args:
        total: Units of work in all.
        desc: What is being done, e.g. ``embedding``.
        unit: Name of one unit, e.g. ``images``.
        interval: Seconds between log lines.
    """

    def __init__(self, total: int, desc: str, unit: str, interval: float = LOG_INTERVAL):
        self.total, self.desc, self.unit, self.interval = int(total), desc, unit, interval
        self.done = 0
        self._started = time.monotonic()
        self._last = self._started

    def line(self) -> str:
        """The progress line for the work done so far."""
        elapsed = max(time.monotonic() - self._started, 1e-9)
        rate = self.done / elapsed
        pct = 100.0 * self.done / self.total if self.total else 100.0
        text = (f"{self.desc}: {self.done}/{self.total} {self.unit} ({pct:.0f}%), "
                f"{rate:.1f} {self.unit}/s")
        if self.done < self.total:
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            return text + (f", ETA {_duration(eta)}" if eta != float("inf") else ", ETA ?")
        return text + f", {_duration(elapsed)} in all"

    def update(self, count: int) -> None:
        """Records ``count`` more units; logs a line if ``interval`` has passed."""
        self.done += int(count)
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            logger.info("%s", self.line())

    def close(self) -> None:
        """Logs the final line."""
        logger.info("%s", self.line())


def _is_terminal(stream) -> bool:
    """Whether ``stream`` is an interactive terminal."""
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


@contextlib.contextmanager
def progress(total: int, desc: str, unit: str = "images",
             interval: Optional[float] = None) -> Iterator:
    """A progress reporter with ``update(count)``: tqdm on a terminal, else log lines.

    Args:
        total: Units of work in all.
        desc: What is being done, e.g. ``embedding``.
        unit: Name of one unit.
        interval: Seconds between log lines when stderr is not a terminal.

    Yields:
        An object with ``update(count)``.
    """
    if _is_terminal(sys.stderr):
        from tqdm import tqdm  # pylint: disable=import-outside-toplevel
        with tqdm(total=total, desc=desc, unit=f" {unit}", file=sys.stderr,
                  dynamic_ncols=True) as meter:
            yield meter
        return
    reporter = LogProgress(total, desc, unit, LOG_INTERVAL if interval is None else interval)
    yield reporter
    reporter.close()
