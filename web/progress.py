"""The progress line and the closing summary of ``hailo-ocr read``.

On a terminal one status line is redrawn in place (carriage return, erase to the end of
the line): files done of the total, a bar, lines read per second (and pages per second
once a PDF or multi-page TIFF is among the files), the time left, errors so far, and
retries or reconnections when there were any. Anything else written to the same
terminal first clears the line (:meth:`Progress.clear`), so results printed to the
terminal never run into it. Where the output is not a terminal (a pipe, a file, a log)
nothing is drawn at all: a redrawn line is noise there. No progress-bar library: the
service's runtime dependencies stay lean, and one line of text is little to draw.

The rates are over the last ``RATE_WINDOW_S`` seconds, so the time left follows the
service's current pace rather than the average since the start (a restart or a stretch of
large scans changes it).
"""

from __future__ import annotations

import collections
import shutil
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Final, TextIO

from .client import ReadStatistics

#: Seconds of history the rates (and so the time left) are computed over.
RATE_WINDOW_S: Final = 20.0
#: Shortest interval between two redraws.
REDRAW_INTERVAL_S: Final = 0.2
#: The bar is left out below this many columns for it.
_MIN_BAR: Final = 10
_ERASE_LINE: Final = "\r\x1b[K"


def format_duration(seconds: float) -> str:
    """``7s``, ``3m05s``, ``2h04m``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def render(
    state: ReadStatistics, *, lines_per_s: float | None, eta_s: float | None, width: int,
    pages_per_s: float | None = None,
) -> str:
    """The status line, at most ``width`` characters (the bar shrinks, then goes)."""
    done = f"{state.finished}/{state.files} files"
    parts = [f"{lines_per_s:.1f} lines/s" if lines_per_s is not None else "-- lines/s"]
    if state.pages:
        parts.append(f"{pages_per_s:.2f} pages/s" if pages_per_s is not None else "-- pages/s")
    parts.append(f"ETA {format_duration(eta_s)}" if eta_s is not None else "ETA --")
    parts.append(f"{state.failed} error{'s' if state.failed != 1 else ''}")
    if state.retries:
        parts.append(f"{state.retries} retried")
    if state.reconnects:
        parts.append(f"{state.reconnects} reconnect{'s' if state.reconnects != 1 else ''}")
    if not state.connected and state.finished < state.files:
        parts.append("connecting...")
    tail = f" {done}  " + "  ".join(parts)
    room = width - len(tail) - 2
    if room >= _MIN_BAR:
        filled = room * state.finished // state.files if state.files else room
        line = "[" + "#" * filled + "-" * (room - filled) + "]" + tail
    else:
        line = tail.lstrip()
    return line[:width]


class Progress:
    """The redrawn status line on ``stream``, when ``enabled`` (a terminal, not --quiet)."""

    def __init__(
        self, stream: TextIO, *, enabled: bool, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._stream = stream
        self.enabled = enabled
        self._clock = clock
        self._started = clock()
        self._samples: collections.deque[tuple[float, int, int, int]] = collections.deque()
        self._state: ReadStatistics | None = None
        self._shown = False
        self._last_draw = -float("inf")

    def update(self, state: ReadStatistics) -> None:
        """Record ``state``; redraw if enough time has passed since the last redraw."""
        now = self._clock()
        self._state = state
        self._samples.append((now, state.lines, state.finished, state.pages))
        while len(self._samples) > 2 and now - self._samples[1][0] >= RATE_WINDOW_S:
            self._samples.popleft()
        if now - self._last_draw >= REDRAW_INTERVAL_S:
            self.draw()

    def rates(self) -> tuple[float | None, float | None]:
        """(lines per second, seconds left) over the recent window; None until known."""
        if len(self._samples) < 2 or self._state is None:
            return None, None
        (t0, lines0, files0, _), (t1, lines1, files1, _) = self._samples[0], self._samples[-1]
        span = t1 - t0
        if span <= 0:
            return None, None
        files_per_s = (files1 - files0) / span
        eta = (self._state.files - files1) / files_per_s if files_per_s > 0 else None
        return (lines1 - lines0) / span, eta

    def pages_per_s(self) -> float | None:
        """Document pages read per second over the recent window; None until known."""
        if len(self._samples) < 2:
            return None
        (t0, _, _, pages0), (t1, _, _, pages1) = self._samples[0], self._samples[-1]
        return (pages1 - pages0) / (t1 - t0) if t1 > t0 else None

    def draw(self) -> None:
        if not self.enabled or self._state is None:
            return
        self._last_draw = self._clock()
        lines_per_s, eta = self.rates()
        # Two columns spare: the terminal echoes ^C there, and it must not wrap the line.
        width = shutil.get_terminal_size((80, 24)).columns - 3
        text = render(self._state, lines_per_s=lines_per_s, eta_s=eta, width=width,
                      pages_per_s=self.pages_per_s())
        self._stream.write(_ERASE_LINE + text)
        self._stream.flush()
        self._shown = True

    def clear(self) -> None:
        """Erase the line, before something else is written to the same terminal."""
        if self._shown:
            self._stream.write(_ERASE_LINE)
            self._stream.flush()
            self._shown = False

    def elapsed(self) -> float:
        return self._clock() - self._started


def summary(
    *, total: int, succeeded: int, failures: Sequence[tuple[str, str, str]], lines: int,
    elapsed_s: float, skipped: int = 0, retries: int = 0, resent: int = 0, reconnects: int = 0,
    interrupted: bool = False, pages: int = 0,
) -> list[str]:
    """The closing report: counts, rates and time, then failures by error code
    (``failures`` is (file, code, message); :func:`failure_lines` lists them)."""
    finished = succeeded + len(failures)
    rate = f"{finished / elapsed_s:.2f} files/s, " if elapsed_s > 0 else ""
    lines_rate = f"{lines / elapsed_s:.1f} lines/s" if elapsed_s > 0 else f"{lines} lines"
    if pages:
        lines_rate += (f", {pages} document pages ({pages / elapsed_s:.2f} pages/s)"
                       if elapsed_s > 0 else f", {pages} document pages")
    took = f"{elapsed_s:.1f} s" + (f" ({format_duration(elapsed_s)})" if elapsed_s >= 60 else "")
    out = [f"{'interrupted: ' if interrupted else ''}{finished} of {total} files in "
           f"{took}: {succeeded} read, "
           f"{len(failures)} failed; {rate}{lines_rate}"]
    extras = []
    if skipped:
        extras.append(f"{skipped} skipped (already in the output)")
    if retries:
        extras.append(f"{retries} sent again after a temporary refusal")
    if resent:
        extras.append(f"{resent} sent again after a lost connection")
    if reconnects:
        extras.append(f"{reconnects} reconnection{'s' if reconnects != 1 else ''}")
    if extras:
        out.append("; ".join(extras))
    if failures:
        out.append("failures by error code: " + ", ".join(
            f"{code} {n}" for code, n in _count(code for _, code, _ in failures).items()))
    return out


def failure_lines(failures: Iterable[tuple[str, str, str]]) -> list[str]:
    """One line per failed file: ``FILE: message (code)``."""
    return [f"{name}: {message} ({code})" for name, code, message in failures]


def _count(codes: Iterable[str]) -> Mapping[str, int]:
    counts = collections.Counter(codes)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
