"""ocr.decode: every accepted format, EXIF orientation, pixel modes, limits, errors."""

from __future__ import annotations

import io
import time
import tracemalloc

import numpy as np
import pytest
from PIL import Image

from ocr.decode import MIN_SIDE, decode_image, sniff_format
from ocr.errors import (
    ImageDecodeError,
    ImageTooLarge,
    ImageTooSmall,
    OcrInputError,
    UnsupportedImageFormat,
)
from tests.support.images import png_header_only

LIMIT = 40_000_000


def _pattern(w: int = 64, h: int = 48) -> np.ndarray:
    """An RGB image whose every quadrant has a different colour (orientation visible)."""
    arr = np.zeros((h, w, 3), dtype=np.uint8)
    arr[: h // 2, : w // 2] = (255, 0, 0)
    arr[: h // 2, w // 2 :] = (0, 255, 0)
    arr[h // 2 :, : w // 2] = (0, 0, 255)
    arr[h // 2 :, w // 2 :] = (255, 255, 255)
    return arr


def _save(img: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("fmt", "lossless"),
    [("PNG", True), ("BMP", True), ("TIFF", True), ("WEBP", True), ("JPEG", False)],
)
def test_each_format_decodes_to_bgr(fmt, lossless):
    rgb = _pattern()
    params = {"lossless": True} if fmt == "WEBP" else {}
    if fmt == "JPEG":
        params = {"quality": 95}
    data = _save(Image.fromarray(rgb), fmt, **params)
    assert sniff_format(data) == ("WEBP" if fmt == "WEBP" else fmt)
    out = decode_image(data, max_pixels=LIMIT)
    assert out.shape == (48, 64, 3) and out.dtype == np.uint8
    expected = rgb[..., ::-1]
    if lossless:
        assert np.array_equal(out, expected)
    else:
        assert np.abs(out.astype(int) - expected.astype(int)).mean() < 6


@pytest.mark.parametrize(
    ("orientation", "shape", "top_left_rgb"),
    [
        (1, (48, 64), (255, 0, 0)),
        (3, (48, 64), (255, 255, 255)),  # rotated 180: the bottom-right quadrant first
        (6, (64, 48), (0, 0, 255)),  # rotated 90 clockwise: bottom-left comes to top-left
        (8, (64, 48), (0, 255, 0)),  # rotated 90 counter-clockwise
    ],
)
def test_exif_orientation_is_applied(orientation, shape, top_left_rgb):
    img = Image.fromarray(_pattern())
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _save(img, "JPEG", quality=95, exif=exif.tobytes())
    out = decode_image(data, max_pixels=LIMIT)
    assert out.shape[:2] == shape
    corner = out[:8, :8].reshape(-1, 3).mean(axis=0)[::-1]  # BGR -> RGB
    assert np.abs(corner - np.array(top_left_rgb)).max() < 20


def test_grey_is_converted_to_three_equal_channels():
    grey = (np.arange(48 * 64).reshape(48, 64) % 256).astype(np.uint8)
    out = decode_image(_save(Image.fromarray(grey, mode="L"), "PNG"), max_pixels=LIMIT)
    assert out.shape == (48, 64, 3)
    assert all(np.array_equal(out[..., c], grey) for c in range(3))


def test_one_bit_and_palette_images_decode():
    bw = Image.fromarray(_pattern()[..., 0]).convert("1")
    out = decode_image(_save(bw, "PNG"), max_pixels=LIMIT)
    assert out.shape == (48, 64, 3) and set(np.unique(out)) <= {0, 255}
    pal = Image.fromarray(_pattern()).convert("P")
    out = decode_image(_save(pal, "PNG"), max_pixels=LIMIT)
    assert np.array_equal(out[0, 0], [0, 0, 255])  # red, in BGR


def test_sixteen_bit_grey_is_scaled_to_eight_bits():
    arr = np.linspace(0, 65535, 48 * 64).reshape(48, 64).astype(np.uint16)
    out = decode_image(_save(Image.fromarray(arr), "PNG"), max_pixels=LIMIT)
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255


def test_rgba_dark_text_on_transparent_gets_a_white_background():
    rgba = np.zeros((20, 30, 4), dtype=np.uint8)
    rgba[5:15, 5:25] = (0, 0, 0, 255)  # opaque black "text", the rest fully transparent
    out = decode_image(_save(Image.fromarray(rgba, "RGBA"), "PNG"), max_pixels=LIMIT)
    assert out.shape == (20, 30, 3)
    assert (out[0, 0] == 255).all() and (out[10, 10] == 0).all()


def test_rgba_light_text_on_transparent_gets_a_black_background():
    rgba = np.zeros((20, 30, 4), dtype=np.uint8)
    rgba[5:15, 5:25] = (255, 255, 255, 255)
    out = decode_image(_save(Image.fromarray(rgba, "RGBA"), "PNG"), max_pixels=LIMIT)
    assert (out[0, 0] == 0).all() and (out[10, 10] == 255).all()


def test_grey_alpha_is_flattened_over_white():
    la = np.zeros((10, 10, 2), dtype=np.uint8)
    la[..., 0] = 0
    la[2:8, 2:8, 1] = 255
    out = decode_image(_save(Image.fromarray(la, "LA"), "PNG"), max_pixels=LIMIT)
    assert (out[0, 0] == 255).all() and (out[5, 5] == 0).all()


def test_pixel_limit_is_checked_from_the_header_before_decoding():
    data = png_header_only(50_000, 50_000)
    assert len(data) < 200
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(ImageTooLarge) as info:
            decode_image(data, max_pixels=LIMIT)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 1.0
    assert peak < 5 * 1024 * 1024  # 50000 x 50000 x 3 would be 7.5 GB
    assert info.value.code == "image_too_large"
    assert "50000x50000" in str(info.value)


@pytest.mark.parametrize(("w", "h"), [(1, 1), (3, 100), (100, 3)])
def test_images_under_the_minimum_side_are_too_small(w, h):
    data = _save(Image.fromarray(np.zeros((h, w, 3), np.uint8)), "PNG")
    with pytest.raises(ImageTooSmall) as info:
        decode_image(data, max_pixels=LIMIT)
    assert info.value.code == "image_too_small"
    assert decode_image(_save(Image.new("RGB", (MIN_SIDE, MIN_SIDE)), "PNG"),
                        max_pixels=LIMIT).shape == (MIN_SIDE, MIN_SIDE, 3)


def test_pixel_limit_boundary():
    data = _save(Image.fromarray(_pattern(40, 25)), "PNG")
    assert decode_image(data, max_pixels=1000).shape == (25, 40, 3)
    with pytest.raises(ImageTooLarge):
        decode_image(data, max_pixels=999)


@pytest.mark.parametrize(
    ("data", "error", "code"),
    [
        (b"", ImageDecodeError, "invalid_image"),
        (b"this is not an image at all" * 10, ImageDecodeError, "invalid_image"),
        (b"GIF89a" + b"\x00" * 40, UnsupportedImageFormat, "unsupported_media_type"),
        (b"%PDF-1.7\n" + b"\x00" * 40, UnsupportedImageFormat, "unsupported_media_type"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", UnsupportedImageFormat,
         "unsupported_media_type"),
    ],
)
def test_bad_input_raises_typed_errors(data, error, code):
    with pytest.raises(error) as info:
        decode_image(data, max_pixels=LIMIT)
    assert isinstance(info.value, OcrInputError)
    assert info.value.code == code


def test_real_gif_is_unsupported():
    data = _save(Image.fromarray(_pattern()).convert("P"), "GIF")
    assert sniff_format(data) == "GIF"
    with pytest.raises(UnsupportedImageFormat):
        decode_image(data, max_pixels=LIMIT)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_image_is_a_decode_error(fmt):
    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 255, (200, 200, 3), dtype=np.uint8)
    data = _save(Image.fromarray(noisy), fmt)
    with pytest.raises(ImageDecodeError):
        decode_image(data[: len(data) // 3], max_pixels=LIMIT)


def test_sniff_format_names_containers_and_rejects_unknown():
    assert sniff_format(b"\xff\xd8\xff\xe0rest") == "JPEG"
    assert sniff_format(b"\x89PNG\r\n\x1a\nrest") == "PNG"
    assert sniff_format(b"BM" + b"\x00" * 20) == "BMP"
    assert sniff_format(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "WEBP"
    assert sniff_format(b"II*\x00rest") == "TIFF" and sniff_format(b"MM\x00*rest") == "TIFF"
    assert sniff_format(b"hello") is None
