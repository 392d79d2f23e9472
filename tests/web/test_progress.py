"""The progress line and summary of ``hailo-ocr read`` (``web/progress.py``), with a fake
clock and an in-memory stream. The real terminal is tested in tests/system/test_reader.py."""

from __future__ import annotations

import io

from web.client import ReadStatistics
from web.progress import Progress, failure_lines, format_duration, render, summary


def state(files: int, finished: int, failed: int, lines: int, **more) -> ReadStatistics:
    """Client statistics as the progress line reads them."""
    fields = dict(files=files, succeeded=finished - failed, failed=failed, in_flight=0,
                  lines=lines, retries=0, resent=0, reconnects=0, connected=True, window=8,
                  max_window=8)
    return ReadStatistics(**{**fields, **more})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_durations_read_like_a_person_writes_them():
    assert [format_duration(s) for s in (0, 7.4, 59.6, 185, 3599, 7440)] == [
        "0s", "7s", "1m00s", "3m05s", "59m59s", "2h04m"]


def test_the_line_fits_the_width_and_the_bar_shows_the_share_done():
    stats = state(200, 50, 3, 900, retries=2)
    line = render(stats, lines_per_s=12.34, eta_s=95, width=80)
    assert len(line) == 80
    assert line.startswith("[") and "50/200 files" in line
    assert "12.3 lines/s" in line and "ETA 1m35s" in line and "3 errors" in line
    assert "2 retried" in line
    bar = line[1:line.index("]")]
    assert bar.count("#") == len(bar) // 4
    narrow = render(stats, lines_per_s=None, eta_s=None, width=50)
    assert len(narrow) <= 50 and not narrow.startswith("[")  # no room for a bar
    assert narrow.startswith("50/200 files") and "ETA --" in narrow
    waiting = render(state(10, 3, 0, 5, reconnects=1, connected=False),
                     lines_per_s=1.0, eta_s=None, width=120)
    assert "1 reconnect " in waiting + " " and "connecting..." in waiting


def test_rates_and_time_left_follow_the_recent_pace():
    clock = Clock()
    out = io.StringIO()
    progress = Progress(out, enabled=True, clock=clock)
    assert progress.rates() == (None, None)
    for second in range(11):  # 2 files and 30 lines a second
        progress.update(state(100, 2 * second, 0, 30 * second))
        clock.now += 1
    lines_per_s, eta = progress.rates()
    assert lines_per_s == 30 and eta == (100 - 20) / 2
    for second in range(40):  # then 1 file a second, long enough to forget the start
        progress.update(state(100, 20 + second, 0, 300 + 15 * second))
        clock.now += 1
    lines_per_s, eta = progress.rates()
    assert lines_per_s == 15 and eta == 100 - 59


def test_redraws_in_place_are_throttled_and_cleared():
    clock = Clock()
    out = io.StringIO()
    progress = Progress(out, enabled=True, clock=clock)
    progress.update(state(10, 1, 0, 4))
    progress.update(state(10, 2, 0, 8))  # too soon: not drawn
    assert out.getvalue().count("\r\x1b[K") == 1 and "1/10 files" in out.getvalue()
    clock.now += 0.5
    progress.update(state(10, 3, 1, 12))
    assert out.getvalue().count("\r\x1b[K") == 2 and "3/10 files" in out.getvalue()
    assert "\n" not in out.getvalue(), "one line, redrawn"
    progress.clear()
    assert out.getvalue().endswith("\r\x1b[K")
    quiet = io.StringIO()
    off = Progress(quiet, enabled=False, clock=clock)
    off.update(state(10, 1, 0, 4))
    off.draw()
    off.clear()
    assert quiet.getvalue() == ""


def test_summary_counts_failures_by_code():
    failures = [("a.png", "invalid_image", "not an image"),
                ("b.png", "overloaded", "busy"),
                ("c.png", "invalid_image", "not an image")]
    lines = summary(total=10, succeeded=7, failures=failures, lines=70, elapsed_s=125.0,
                    skipped=4, retries=2, resent=1, reconnects=1)
    assert lines[0] == ("10 of 10 files in 125.0 s (2m05s): 7 read, 3 failed; "
                        "0.08 files/s, 0.6 lines/s")
    assert lines[1] == ("4 skipped (already in the output); 2 sent again after a temporary "
                        "refusal; 1 sent again after a lost connection; 1 reconnection")
    assert lines[2] == "failures by error code: invalid_image 2, overloaded 1"
    assert failure_lines(failures)[1] == "b.png: busy (overloaded)"
    short = summary(total=5, succeeded=2, failures=[], lines=9, elapsed_s=3.0,
                    interrupted=True)
    assert short == ["interrupted: 2 of 5 files in 3.0 s: 2 read, 0 failed; "
                     "0.67 files/s, 3.0 lines/s"]
