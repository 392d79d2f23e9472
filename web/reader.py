"""``hailo-ocr read``: files and folders read by the running service, with progress and
output that an interruption does not spoil.

``extract`` loads the models in its own process; beside a running service that competes
for the NPU (or cannot open it), and it shows nothing until the end. ``read`` sends the
files to the service instead (or to the load balancer in front of several) over the
streaming websocket (:mod:`web.client`), shows progress on a terminal
(:mod:`web.progress`), and writes one JSON line per file as it finishes: the body
``POST /v1/ocr/extract`` answers for that file, with ``"file"`` in front.

The output file is always valid JSONL: every line is written whole (a write is never
interrupted half-way; Ctrl-C stops after the line being written), and ``--resume`` first
drops a torn last line (a killed process, a full disk) and the lines of files that failed,
then skips every file already read.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final, TextIO

import attrs
import trio

from .cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from .client import (
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT_S,
    ClientSettings,
    FileOutcome,
    InputFile,
    ReadStatistics,
    StreamClient,
    fetch_limits,
)
from .progress import REDRAW_INTERVAL_S, Progress, failure_lines, summary

#: File name endings a folder is searched for (any case): the formats the service reads.
READ_SUFFIXES: Final = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pdf"}
)
#: Where ``serve`` listens by default.
DEFAULT_URL: Final = "http://127.0.0.1:11436"
#: The environment variable holding the bearer token (the one ``serve`` reads too).
TOKEN_ENV: Final = "HAILO_OCR_TOKEN"
EXIT_INTERRUPTED: Final = 130


class UsageError(Exception):
    """A command line that cannot be run as given."""


@attrs.frozen
class ReadOptions:
    inputs: tuple[str, ...]
    url: str = DEFAULT_URL
    token: str | None = None
    out: Path | None = None
    text: bool = False
    resume: bool = False
    languages: tuple[str, ...] = ()
    in_flight: int | None = None
    retries: int = DEFAULT_RETRIES
    timeout_s: float = DEFAULT_TIMEOUT_S
    quiet: bool = False


def add_parser(sub: Any) -> None:
    """The ``read`` subcommand, on the ``hailo-ocr`` parser's subparsers."""
    p = sub.add_parser(
        "read",
        help="read files and folders through a running service (progress, resumable)",
        description=(
            "Send image and PDF files, and those in folders (searched recursively: "
            + ", ".join(sorted(READ_SUFFIXES)) + "), to a running hailo-ocr service over "
            "its websocket, several at a time, and write one JSON line per file as it "
            "finishes: the body POST /v1/ocr/extract answers, with \"file\" in front. A "
            "progress line is shown when stdout is a terminal. Temporary refusals "
            "(overloaded, shutting_down: status 429/503) are retried after the server's "
            "Retry-After, a lost connection is reopened and its files sent again. Exit "
            "status 1 if any file failed (each is listed), 130 if interrupted."
        ),
    )
    p.add_argument("inputs", nargs="+", metavar="FILE|DIR", help="image and PDF files, and folders")
    p.add_argument("--url", default=DEFAULT_URL,
                   help=f"the service (or its load balancer), default {DEFAULT_URL}")
    p.add_argument("--out", "-o", type=Path, metavar="FILE",
                   help="write the results here instead of stdout")
    p.add_argument("--text", action="store_true",
                   help="write each file's text (under '==> FILE <==') instead of JSON lines")
    p.add_argument("--resume", action="store_true",
                   help="with --out: skip the files already read in FILE and append the rest "
                   "(lines of failed files are dropped and those files read again)")
    p.add_argument("--lang", "-l", help="recognition language, e.g. en or zh "
                   "(default: the server's)")
    p.add_argument("--in-flight", type=int, metavar="N",
                   help="files in flight at once (default: the server's ws_max_in_flight from "
                   "/health, else 8)")
    p.add_argument("--retries", type=int, default=DEFAULT_RETRIES, metavar="N",
                   help=f"sends after the first per file, after a temporary refusal or a lost "
                   f"connection (default {DEFAULT_RETRIES})")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S",
                   help="silence from the server, with files in flight, after which the "
                   f"connection is taken as lost and reopened (default {DEFAULT_TIMEOUT_S:g})")
    p.add_argument("--token", help=f"bearer token, when the server has one (default: ${TOKEN_ENV};"
                   " prefer the variable: a flag is visible to other users in ps)")
    p.add_argument("--quiet", "-q", action="store_true",
                   help="no progress line and no summary; failures are still listed")


def options_from_args(args: argparse.Namespace) -> ReadOptions:
    if args.resume and (args.out is None or args.text):
        raise UsageError("--resume needs --out FILE with JSON lines (not --text)")
    if args.in_flight is not None and args.in_flight < 1:
        raise UsageError("--in-flight must be at least 1")
    if args.retries < 0 or args.timeout <= 0:
        raise UsageError("--retries must be 0 or more and --timeout positive")
    return ReadOptions(
        inputs=tuple(args.inputs), url=args.url, token=args.token or os.environ.get(TOKEN_ENV),
        out=args.out, text=args.text, resume=args.resume,
        languages=(args.lang,) if args.lang else (), in_flight=args.in_flight,
        retries=args.retries, timeout_s=args.timeout, quiet=args.quiet,
    )


# -- inputs -------------------------------------------------------------------------------


def walk_inputs(inputs: Iterable[str]) -> list[InputFile]:
    """Every file to read, each once, in order: a file argument as given (whatever its
    name: the service says if it cannot read it), and in a folder, recursively and sorted,
    the files whose names end in one of :data:`READ_SUFFIXES` (hidden ones are skipped;
    symbolic links to files are followed, to folders not). A name that does not exist is
    kept: it fails as ``file_unreadable`` like any file that cannot be opened."""
    seen: set[str] = set()
    files: list[InputFile] = []

    def add(name: str) -> None:
        if name not in seen:
            seen.add(name)
            files.append(InputFile(name, Path(name)))

    for arg in inputs:
        if not os.path.isdir(arg):
            add(arg)
            continue
        found = []
        for top, dirs, names in os.walk(arg):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            found.extend(os.path.join(top, name) for name in names
                         if not name.startswith(".")
                         and Path(name).suffix.lower() in READ_SUFFIXES)
        for name in sorted(found):
            add(name)
    return files


def prepare_resume(out: Path) -> set[str]:
    """The files already read in ``out``, which is left holding exactly their lines: a
    torn last line and the lines of failed files are dropped (rewritten through a
    temporary file, so an interruption here loses nothing either)."""
    try:
        raw = out.read_bytes()
    except FileNotFoundError:
        return set()
    lines = raw.split(b"\n")
    complete = lines[:-1]  # whatever follows the last newline is a torn line
    done: set[str] = set()
    kept: list[bytes] = []
    for line in complete:
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if (isinstance(doc, dict) and doc.get("success") is True
                and isinstance(doc.get("file"), str) and doc["file"] not in done):
            done.add(doc["file"])
            kept.append(line)
    if len(kept) != len(complete) or lines[-1]:
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(b"".join(line + b"\n" for line in kept))
        os.replace(tmp, out)
    return done


# -- outputs ------------------------------------------------------------------------------


class ResultSink:
    """Writes each outcome as it comes: a JSON line, or in ``--text`` mode the file's text.

    Each write is one whole line (or block) and is flushed at once. To a file or a pipe
    it runs in a worker thread, which Trio lets finish even when the run is cancelled, so
    Ctrl-C never leaves half a line; to the terminal it is written directly, between
    clearing and redrawing the progress line."""

    def __init__(
        self, stream: TextIO, progress: Progress, *, text: bool, headers: bool,
        to_terminal: bool,
    ) -> None:
        self._stream = stream
        self._progress = progress
        self._text = text
        self._headers = headers
        self._to_terminal = to_terminal

    def format(self, outcome: FileOutcome) -> str:
        if not self._text:
            return json.dumps(outcome.json_line(), ensure_ascii=False) + "\n"
        if not outcome.ok:
            return ""  # listed on stderr at the end
        pages = outcome.body.get("pages")
        if isinstance(pages, list):  # a document: every page under its own header
            text = "\n".join(
                f"--- page {p.get('page')} ---\n" + str(p.get("text", ""))
                if p.get("success") else f"--- page {p.get('page')}: {p.get('code')} ---"
                for p in pages if isinstance(p, dict)
            )
        else:
            text = str(outcome.body.get("text", ""))
        return (f"==> {outcome.file} <==\n" if self._headers else "") + text + "\n"

    async def write(self, outcome: FileOutcome) -> None:
        data = self.format(outcome)
        if not data:
            return
        if self._to_terminal:
            self._progress.clear()
            self._write(data)
            self._progress.draw()
        else:
            await trio.to_thread.run_sync(self._write, data)

    def _write(self, data: str) -> None:
        self._stream.write(data)
        self._stream.flush()


# -- the run ------------------------------------------------------------------------------


@attrs.frozen
class ReadReport:
    files: int
    failures: tuple[tuple[str, str, str], ...]  # (file, code, message)
    statistics: ReadStatistics
    elapsed_s: float
    interrupted: bool


async def read_files(
    opts: ReadOptions, files: Sequence[InputFile], sink: ResultSink, progress: Progress,
    note: TextIO,
) -> ReadReport:
    """Send ``files`` and write their outcomes until all are in, or a signal stops it."""
    settings = ClientSettings(
        url=opts.url, token=opts.token, languages=opts.languages, in_flight=opts.in_flight,
        retries=opts.retries, timeout_s=opts.timeout_s,
    )
    limits = await fetch_limits(settings)
    if limits.assumed_because and opts.in_flight is None and not opts.quiet:
        print(f"hailo-ocr read: {limits.assumed_because}; sending up to "
              f"{limits.ws_max_in_flight} files at a time", file=note)
    client = StreamClient(settings, files, limits)
    failures: list[tuple[str, str, str]] = []
    interrupted = False

    async def stop_on_signal(scope: trio.CancelScope) -> None:
        nonlocal interrupted
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                interrupted = True
                scope.cancel()
                return

    async def redraw() -> None:
        while True:
            progress.update(client.statistics())
            await trio.sleep(REDRAW_INTERVAL_S)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(stop_on_signal, nursery.cancel_scope)
        nursery.start_soon(client.run)
        if progress.enabled:
            nursery.start_soon(redraw)
        async with client.outcomes:
            async for outcome in client.outcomes:
                await sink.write(outcome)
                if not outcome.ok:
                    failures.append((outcome.file, outcome.code or "error", outcome.error))
                progress.update(client.statistics())
        nursery.cancel_scope.cancel()
    progress.clear()
    return ReadReport(len(files), tuple(failures), client.statistics(), progress.elapsed(),
                      interrupted)


def cmd_read(args: argparse.Namespace) -> int:
    """Run ``hailo-ocr read``; the exit status."""
    try:
        opts = options_from_args(args)
        files = walk_inputs(opts.inputs)
        if not files:
            raise UsageError(
                "no files to read in " + " ".join(opts.inputs) + " (looked for "
                + ", ".join(sorted(READ_SUFFIXES)) + ")")
        skipped = 0
        if opts.resume:
            assert opts.out is not None
            done = prepare_resume(opts.out)
            skipped = sum(1 for f in files if f.name in done)
            files = [f for f in files if f.name not in done]
    except UsageError as exc:
        print(f"hailo-ocr read: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"hailo-ocr read: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if not files:
        if not opts.quiet:
            print(f"hailo-ocr read: nothing left to read ({skipped} files already in "
                  f"{opts.out})", file=sys.stderr)
        return EXIT_OK

    stdout_tty = sys.stdout.isatty()
    progress = Progress(sys.stdout, enabled=stdout_tty and not opts.quiet)
    try:
        out = (opts.out.open("a" if opts.resume else "w", encoding="utf-8", newline="\n")
               if opts.out else sys.stdout)
    except OSError as exc:
        print(f"hailo-ocr read: cannot write {opts.out}: {exc.strerror}", file=sys.stderr)
        return EXIT_FAILED
    try:
        sink = ResultSink(out, progress, text=opts.text, headers=skipped + len(files) > 1,
                          to_terminal=out is sys.stdout and stdout_tty)
        report = trio.run(read_files, opts, files, sink, progress, sys.stderr)
    finally:
        if out is not sys.stdout:
            out.close()
    _print_report(report, opts, skipped)
    if report.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FAILED if report.failures else EXIT_OK


def _print_report(report: ReadReport, opts: ReadOptions, skipped: int) -> None:
    stats = report.statistics
    lines = [] if opts.quiet else summary(
        total=report.files, succeeded=stats.succeeded, failures=report.failures,
        lines=stats.lines, elapsed_s=report.elapsed_s, skipped=skipped, retries=stats.retries,
        resent=stats.resent, reconnects=stats.reconnects, interrupted=report.interrupted,
        pages=stats.pages,
    )
    for line in lines + failure_lines(report.failures):
        print(f"hailo-ocr read: {line}", file=sys.stderr)
