"""A baseline server: a peer OCR engine behind Python's own threaded HTTP server.

This is deliberately the wrapper a user would write in ten minutes: one shared engine
with its defaults (``benchmarks/peers.py``: RapidOCR or faster-paddle),
:class:`http.server.ThreadingHTTPServer` (one thread per connection, no admission limit,
no batching), and the same JSON request and response shape as hailo-ocr's
``POST /v1/ocr/extract``, so ``benchmarks/load.py`` can drive every system with the same
client and compare them at the same concurrency.

    python benchmarks/peer_server.py --engine rapidocr --port 18080
    python benchmarks/peer_server.py --engine faster-paddle --port 18081

Routes: ``POST /v1/ocr/extract`` ({"image": base64 or data URI}), ``GET /health/ready``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import sys
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.peers import PEERS, PeerResult, open_peer  # noqa: E402


def _image_bytes(value: str) -> bytes:
    if value.startswith("data:"):
        value = value.split(",", 1)[1]
    return base64.b64decode(value, validate=True)


class Handler(BaseHTTPRequestHandler):
    """One request per call; keep-alive so the client's connections are reused (as
    Hypercorn reuses them), which keeps connection set-up out of both measurements."""

    protocol_version = "HTTP/1.1"
    engine: Callable[[bytes], PeerResult] | None = None  # the shared engine, set in main()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        pass  # one line per request would cost more than it tells

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path in ("/health/ready", "/health"):
            self._send(200, {"ready": True, "status": "ok"})
        else:
            self._send(404, {"success": False, "error": "not found", "code": "not_found"})

    def do_POST(self) -> None:  # noqa: N802
        if self.path != "/v1/ocr/extract":
            self._send(404, {"success": False, "error": "not found", "code": "not_found"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        try:
            payload = json.loads(self.rfile.read(length))
            image = _image_bytes(payload["image"])
        except (ValueError, KeyError, TypeError, binascii.Error):
            self._send(400, {"success": False, "error": "bad request", "code": "bad_request"})
            return
        assert self.engine is not None
        try:
            result = self.engine(image)
        except Exception as exc:  # the wrapper a user writes: any failure is a 500
            self._send(500, {"success": False, "error": str(exc), "code": "internal"})
            return
        regions = [{"text": it["text"], "confidence": it["confidence"], "bbox": it["poly"],
                    "type": "text"} for it in result.items]
        self._send(
            200,
            {"success": True, "text": "\n".join(r["text"] for r in regions), "regions": regions,
             "performance": {"total_time_ms": round(result.latency_s * 1000, 2)}},
        )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--engine", choices=PEERS, default=PEERS[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=18080)
    args = ap.parse_args(argv)
    # Handler.engine is a class attribute: staticmethod keeps it a plain function.
    Handler.engine = staticmethod(open_peer(args.engine))  # type: ignore[assignment]
    # The listen backlog is raised from http.server's 5, the one default a user hits at
    # once at 16 concurrent clients (connection resets that say nothing about OCR speed).
    ThreadingHTTPServer.request_queue_size = 128
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
