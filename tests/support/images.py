"""Images and encodings the tests build: Hershey text the recogniser reads exactly, a GIF
the service refuses, a decompression bomb's PNG header, base64 and data URIs."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import cv2
import numpy as np
from PIL import Image


def encode(img: np.ndarray, ext: str = ".png") -> bytes:
    ok, buf = cv2.imencode(ext, img)
    assert ok
    return buf.tobytes()


def text_image(lines: list[str], fmt: str = ".png", *, scale: float = 1.2) -> bytes:
    """Black Hershey text lines on white, one per row, encoded as ``fmt``."""
    line_h = int(44 * scale)
    width = max(200, max(len(t) for t in lines) * int(24 * scale) + 60)
    img = np.full((line_h * len(lines) + 40, width, 3), 255, np.uint8)
    for i, text in enumerate(lines):
        y = 20 + line_h * (i + 1) - int(12 * scale)
        cv2.putText(img, text, (30, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 2, cv2.LINE_AA)
    return encode(img, fmt)


def gif_image() -> bytes:
    """A real (tiny) GIF: an image format the service does not accept."""
    out = io.BytesIO()
    Image.new("RGB", (16, 16), (255, 0, 0)).save(out, "GIF")
    return out.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG whose IHDR declares ``width`` x ``height``: a decompression bomb's header
    (the IDAT holds one row of zeros; the rest never exists)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def data_uri(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{b64(data)}"
