"""The ``hailo-ocr`` command: serve, extract, config.

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
from typing import Any

import attrs
import trio
import yaml

from ocr.config import Config, ConfigError, config_to_dict, load_config

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
        choices=("onnx", "hailo"),
        help="inference backend (backend.type): onnx = CPU, hailo = NPU",
    )
    p.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        help="log verbosity (server.log_level); debug also logs every request",
    )

    p = sub.add_parser(
        "extract",
        help="read the text in image files (no server needed)",
        description=(
            "Run the OCR pipeline in this process on each IMAGE and print its text, or with "
            "--json the same JSON body POST /v1/ocr/extract answers. Exit status 1 if any "
            "image failed."
        ),
    )
    _add_config_flag(p)
    p.add_argument(
        "images", nargs="+", metavar="IMAGE", help="image file (JPEG, PNG, BMP, WebP, TIFF)"
    )
    p.add_argument(
        "--lang", "-l", help="recognition language, e.g. en or zh (default: ocr.default_language)"
    )
    p.add_argument(
        "--json", action="store_true", help="print the JSON response for each image (one per line)"
    )
    p.add_argument("--backend", choices=("onnx", "hailo"), help="inference backend (backend.type)")

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
    return parser


def _load(args: argparse.Namespace, **server: Any) -> Config:
    overrides: dict[str, dict[str, Any]] = {}
    server = {k: v for k, v in server.items() if v is not None}
    if server:
        overrides["server"] = server
    if getattr(args, "backend", None):
        overrides["backend"] = {"type": args.backend}
    return load_config(args.config, overrides=overrides)


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def cmd_serve(args: argparse.Namespace) -> int:
    from .server import serve

    port = None if args.port == 0 else args.port
    config = _load(args, host=args.host, port=port, log_level=args.log_level)
    if args.port == 0:  # any free port (the log says which); the config itself needs 1-65535
        config = attrs.evolve(config, server=attrs.evolve(config.server, port=0))
    _setup_logging(config.server.log_level)
    trio.run(serve, config)
    return EXIT_OK


async def _extract_all(
    config: Config, images: Sequence[str], lang: str | None, as_json: bool
) -> int:
    from actors.messages import OcrRequest
    from actors.service import open_ocr_service

    from .errors import describe
    from .responses import extract_json

    status = EXIT_OK
    languages = (lang,) if lang else ()
    async with open_ocr_service(config) as service:
        for name in images:
            try:
                data = await trio.Path(name).read_bytes()
                result = await service.extract(OcrRequest(data, languages))
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
            else:
                if len(images) > 1:
                    print(f"==> {name} <==")
                print(result.text)
    return status


def _report_error(name: str, code: str, message: str, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"file": name, "success": False, "error": message, "code": code}))
    print(f"hailo-ocr: {name}: {message} ({code})", file=sys.stderr)


def cmd_extract(args: argparse.Namespace) -> int:
    config = _load(args)
    _setup_logging("warning")
    return trio.run(partial(_extract_all, config, args.images, args.lang, args.json))


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
    try:
        if args.command == "serve":
            return cmd_serve(args)
        if args.command == "extract":
            return cmd_extract(args)
        return cmd_config(args)
    except ConfigError as exc:
        print(f"hailo-ocr: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
