"""The ``hailo-ocr`` command: serve, extract, read, config, verify, models fetch.

Precedence of settings: defaults < YAML file (``--config`` or ``$HAILO_OCR_CONFIG``) <
``HAILO_OCR_*`` environment < command-line flags.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import attrs
import trio
import yaml

from npu.config import BACKEND_TYPES
from ocr.config import ConfigError

from .settings import Config, config_to_dict, load_config

if TYPE_CHECKING:  # imported where used: the CLI starts without loading the actor tree
    from actors.messages import Done, Failed, OcrRequest, OcrResult, PageResult
    from actors.service import OcrService
    from ocr.document import DocumentOptions

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

log = logging.getLogger("hailo_ocr.cli")


def _add_config_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        "-c",
        metavar="FILE",
        help="YAML configuration file (default: $HAILO_OCR_CONFIG, else built-in defaults)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hailo-ocr",
        description=(
            "OCR service for edge NPUs: text detection and recognition on a Hailo NPU or, "
            "without one, on the CPU (ONNX Runtime), served over REST and websockets."
        ),
        epilog="Run 'hailo-ocr COMMAND --help' for a command's options.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "serve",
        help="run the HTTP/websocket service",
        description=(
            "Run the service under Hypercorn (Trio worker). Stops gracefully on SIGINT or "
            "SIGTERM: for server.drain_delay_s /health/ready answers 503 (draining) while "
            "requests are still served, so a load balancer stops sending; then new "
            "requests get 503, requests in flight finish within server.shutdown_grace_s, "
            "and the process exits 0."
        ),
    )
    _add_config_flag(p)
    p.add_argument("--host", help="address to listen on (server.host, default 127.0.0.1)")
    p.add_argument(
        "--port", type=int, help="port to listen on (server.port, default 11436; 0 = any free port)"
    )
    p.add_argument(
        "--backend",
        choices=BACKEND_TYPES,
        help=(
            "inference backend (backend.type): onnx = CPU, hailo = NPU opened by this "
            "process, device-manager = NPU through hailo-device-manager, auto = the "
            "manager if its socket exists, else the NPU if present, else the CPU"
        ),
    )
    p.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        help="log verbosity (server.log_level); debug also logs every request",
    )
    p.add_argument(
        "--cpu-fallback",
        action="store_true",
        help=(
            "with an NPU backend (hailo, device-manager, or auto choosing one): when HailoRT's "
            "Python bindings or the device itself is missing, or no HEF file is found, serve "
            "on the CPU (onnx) instead of refusing to start, and log why (the installed unit "
            "uses this; `hailo-ocr verify` reports it). With some HEFs found, only the models "
            "without one run on the CPU"
        ),
    )

    p = sub.add_parser(
        "extract",
        help="read the text in image and PDF files (no server needed)",
        description=(
            "Run the OCR pipeline in this process on each IMAGE and print its text (a PDF "
            "or multi-page TIFF page by page, under '--- page N ---', each as soon as it "
            "is read), or with --json the same JSON body POST /v1/ocr/extract answers. "
            "Exit status 1 if any file or page failed."
        ),
    )
    _add_config_flag(p)
    p.add_argument(
        "images", nargs="+", metavar="IMAGE",
        help="image file (JPEG, PNG, BMP, WebP, TIFF) or PDF",
    )
    p.add_argument("--pages", help='pages of a PDF or TIFF to read, e.g. "1-3,7" (default: all)')
    p.add_argument("--dpi", type=int,
                   help="resolution to render PDF pages at (default: processing.pdf_dpi)")
    p.add_argument("--pdf-text", choices=("auto", "ocr", "text"), default="auto",
                   help="a PDF page's own text layer: auto = use it when the page has one, "
                   "ocr = always render and read, text = only the text layer")
    p.add_argument(
        "--lang", "-l", help="recognition language, e.g. en or zh (default: ocr.default_language)"
    )
    p.add_argument(
        "--json", action="store_true", help="print the JSON response for each image (one per line)"
    )
    p.add_argument("--backend", choices=BACKEND_TYPES, help="inference backend (backend.type)")

    from . import reader  # its own module: the client side of the service

    reader.add_parser(sub)

    p = sub.add_parser(
        "config",
        help="show the effective configuration",
        description="Print the configuration after the file, environment and defaults are merged.",
    )
    _add_config_flag(p)
    p.add_argument(
        "--print",
        action="store_true",
        dest="print_config",
        required=True,
        help="print the effective configuration as YAML",
    )
    _add_ops_commands(sub)
    return parser


def _add_unit_flags(p: argparse.ArgumentParser) -> None:
    _add_config_flag(p)
    p.add_argument(
        "--unit", default="hailo-ocr.service",
        help="systemd unit whose configuration and environment to use when --config is not "
        "given (default hailo-ocr.service)",
    )
    p.add_argument("--no-unit", action="store_true", help="do not ask systemd about the unit")
    p.add_argument(
        "--root", metavar="DIR",
        help="read the configuration's absolute paths below DIR (a mounted SD card image)",
    )


def _add_ops_commands(sub: Any) -> None:
    p = sub.add_parser(
        "verify",
        help="check the installed service: health, readiness, models, a sample, the device",
        description=(
            "Check the running service the way its systemd unit runs it (configuration, "
            "port and token from the unit), say what is wrong and how to fix it. Exit "
            "status 1 if a check failed (warnings do not fail)."
        ),
    )
    _add_unit_flags(p)
    p.add_argument("--url", help="the service's address (default: from its configuration)")
    p.add_argument("--token", help="bearer token (default: from its configuration)")
    p.add_argument(
        "--wait", type=float, default=0.0, metavar="SECONDS",
        help="first wait up to SECONDS for /health/ready (what the installer does)",
    )

    p = sub.add_parser("models", help="the compiled NPU models (HEF files)")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    p = msub.add_parser(
        "fetch",
        help="download the HEF files the configuration needs and does not find",
        description=(
            "Keep every HEF file the configuration finds; download the missing ones (the "
            "files hailo-apps' resource downloader fetches for paddle_ocr) into --dest, "
            "checked before they are put in place. Exit status 1 if any is still missing."
        ),
    )
    _add_unit_flags(p)
    p.add_argument(
        "--arch", choices=("hailo10h", "hailo8", "hailo8l"),
        help="the NPU the models are for (default: the device present, else hailo10h)",
    )
    p.add_argument(
        "--dest", help="directory for downloaded files (default /var/lib/hailo-ocr/models)"
    )
    p.add_argument("--manifest", help="JSON file of sources, sizes and SHA-256s (default: shipped)")
    p.add_argument("--base-url", help="a mirror of the manifest's base URL (http(s):// or file://)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per network operation")
    p.add_argument(
        "--check", action="store_true",
        help="download nothing: report what is present and what is missing (exit 1 if any)",
    )
    p.add_argument(
        "--restart", action="store_true",
        help="after fetching, restart the unit (systemctl try-restart) so it moves to the NPU",
    )


def _load(args: argparse.Namespace, **server: Any) -> Config:
    overrides: dict[str, dict[str, Any]] = {}
    server = {k: v for k, v in server.items() if v is not None}
    if server:
        overrides["server"] = server
    if getattr(args, "backend", None):
        overrides["backend"] = {"type": args.backend}
    return load_config(args.config, overrides=overrides)


def _setup_logging(level: str) -> None:
    """Log to stderr at ``level``; called again once the configuration names its level
    (the first call is before it is loaded, so what loading it logs is shown)."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger().setLevel(getattr(logging, level.upper(), logging.INFO))


def _npu_chosen(config: Config) -> bool:
    """The configuration runs the models on the NPU here (directly, or through
    hailo-device-manager; ``auto`` resolved)."""
    from npu.backend_choice import NPU_BACKENDS, choose_backend

    return choose_backend(config).kind in NPU_BACKENDS


def cmd_serve(args: argparse.Namespace) -> int:
    from .server import serve

    port = None if args.port == 0 else args.port
    config = _load(args, host=args.host, port=port, log_level=args.log_level)
    if args.port == 0:  # any free port (the log says which); the config itself needs 1-65535
        config = attrs.evolve(config, server=attrs.evolve(config.server, port=0))
    _setup_logging(config.server.log_level)
    if args.cpu_fallback and _npu_chosen(config):
        from npu.hailo_backend import missing_parts

        missing = missing_parts(config)
        if missing:
            log.warning(
                "serving on the CPU (onnx), not the NPU: %s. Fix: %s, then restart",
                "; ".join(missing), "sudo /opt/hailo-ocr/venv/bin/hailo-ocr models fetch"
                if all(".hef" in m for m in missing) else "see README, Deploying on a Pi",
            )
            config = attrs.evolve(config, backend=attrs.evolve(config.backend, type="onnx"))
    trio.run(serve, config)
    return EXIT_OK


async def _extract_all(
    config: Config, images: Sequence[str], lang: str | None, as_json: bool,
    options: DocumentOptions | None = None,
) -> int:
    from actors.messages import OcrRequest
    from actors.service import open_ocr_service
    from ocr.document import DocumentOptions

    from .errors import describe
    from .responses import extract_json

    status = EXIT_OK
    languages = (lang,) if lang else ()
    async with open_ocr_service(config) as service:
        for name in images:
            try:
                data = await trio.Path(name).read_bytes()
                request = OcrRequest(data, languages, options=options or DocumentOptions())
                result = await _extract_one(service, request, name, as_json, len(images) > 1)
            except OSError as exc:
                status = EXIT_FAILED
                _report_error(name, "file_unreadable", exc.strerror or str(exc), as_json)
                continue
            except Exception as exc:
                status = EXIT_FAILED
                info = describe(exc)
                _report_error(name, info.code, info.message, as_json)
                continue
            if as_json:
                print(
                    json.dumps(
                        {"file": name, **extract_json(result, service.info)}, ensure_ascii=False
                    )
                )
            for warning in result.warnings:
                print(f"hailo-ocr: {name}: {warning.message} ({warning.code})", file=sys.stderr)
            if any(p.error is not None for p in result.pages):
                status = EXIT_FAILED
    return status


async def _extract_one(service: OcrService, request: OcrRequest, name: str, as_json: bool,
                       headers: bool) -> OcrResult:
    """Read one file; in text mode print it as it is read: an image's lines at the end,
    a document's page by page, in page order, each as soon as it and the pages before
    it are done."""
    from actors.messages import Done, Failed, PageDone, PageStarted

    if headers and not as_json:
        print(f"==> {name} <==", flush=True)
    order: list[int] = []  # pages in the order they start: document order
    finished: dict[int, PageResult] = {}
    printed = 0
    outcome: Done | Failed | None = None
    async with service.open_events(request, 64) as events:
        async for event in events:
            if isinstance(event, PageStarted):
                order.append(event.page)
            elif isinstance(event, PageDone):
                finished[event.result.page] = event.result
                while not as_json and printed < len(order) and order[printed] in finished:
                    _print_page(finished[order[printed]])
                    printed += 1
            elif isinstance(event, Done | Failed):
                outcome = event
    if isinstance(outcome, Failed):
        raise outcome.error
    assert isinstance(outcome, Done), "a request ended without Done or Failed"
    if not as_json and not outcome.result.pages:
        print("\n".join(outcome.result.lines), flush=True)
    return outcome.result


def _print_page(page: PageResult) -> None:
    """A document's page under its header (a failed page's error is among the result's
    warnings, printed to stderr)."""
    print(f"--- page {page.page} ---")
    if page.lines:
        print("\n".join(page.lines))
    sys.stdout.flush()


def _report_error(name: str, code: str, message: str, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"file": name, "success": False, "error": message, "code": code}))
    print(f"hailo-ocr: {name}: {message} ({code})", file=sys.stderr)


def cmd_extract(args: argparse.Namespace) -> int:
    from ocr.document import DocumentOptions, PageSelection

    config = _load(args)
    _setup_logging("warning")
    try:
        options = DocumentOptions(PageSelection.parse(args.pages), args.dpi, args.pdf_text)
    except ValueError as exc:
        print(f"hailo-ocr extract: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return trio.run(partial(_extract_all, config, args.images, args.lang, args.json, options))


def cmd_config(args: argparse.Namespace) -> int:
    config = _load(args)
    data = config_to_dict(config, redact=True)  # the token is never printed
    sys.stdout.write(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    _setup_logging(getattr(args, "log_level", None) or (
        "info" if args.command == "serve" else "warning"))
    try:
        if args.command == "serve":
            return cmd_serve(args)
        if args.command == "extract":
            return cmd_extract(args)
        if args.command == "verify":
            from .verify import run as run_verify

            return run_verify(args)
        if args.command == "models":
            from .hef_fetch import run as run_fetch

            return run_fetch(args)
        if args.command == "read":
            from .reader import cmd_read

            return cmd_read(args)
        return cmd_config(args)
    except ConfigError as exc:
        print(f"hailo-ocr: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
