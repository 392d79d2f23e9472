"""Image decoding: bytes in, a BGR ``uint8`` array out.

Decoding follows RapidOCR's loader (Pillow, EXIF orientation applied, grey and alpha
images flattened the same way) so that the same file gives the same pixels to the same
models. The pixel-count limit is checked against the header *before* the pixels are
decoded, so a 50 000 x 50 000 PNG of a few kilobytes never allocates its 7 GB buffer.
"""

from __future__ import annotations

import io
import warnings

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageDecodeError, ImageTooLarge, ImageTooSmall, UnsupportedImageFormat

#: Pillow format names the service accepts (MPO is the multi-picture JPEG many cameras write).
ACCEPTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "BMP", "WEBP", "TIFF"})

#: Content types of the accepted formats, for checking what a client declares.
ACCEPTED_MEDIA_TYPES = frozenset(
    {"image/jpeg", "image/jpg", "image/png", "image/bmp", "image/x-ms-bmp", "image/webp",
     "image/tiff", "image/tif"}
)

#: Smallest width and height accepted, pixels: the smallest legible glyph is about this tall.
MIN_SIDE = 4

# Pillow refuses images beyond twice this count with its own error; our limit is stricter
# and checked first, so Pillow's guard only needs to stay out of the way.
Image.MAX_IMAGE_PIXELS = None


def sniff_format(data: bytes) -> str | None:
    """Name the container format from its magic bytes, or None if it is not one we know.

    Cheap and header-only: used to answer "what is this?" for errors (a GIF is a 415, random
    bytes are a 400) and to check a data URI's declared media type against its content.
    """
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"BM"):
        return "BMP"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if b"%PDF-" in data[:1024]:  # readers (PDFium too) allow bytes before the header
        return "PDF"
    head = data[:512].lstrip().lower()
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in head):
        return "SVG"
    return None


def decode_image(data: bytes, *, max_pixels: int, frame: int = 0) -> np.ndarray:
    """Decode ``data`` (its ``frame``-th frame: a page of a multi-page TIFF) into an
    ``(H, W, 3)`` BGR ``uint8`` array.

    Raises :class:`UnsupportedImageFormat` for real images in formats we do not accept,
    :class:`ImageTooLarge` when the header declares more than ``max_pixels`` pixels,
    :class:`ImageTooSmall` for an image under ``MIN_SIDE`` pixels a side, and
    :class:`ImageDecodeError` for anything that is not a readable image.
    """
    if not data:
        raise ImageDecodeError("the image is empty (0 bytes)")
    sniffed = sniff_format(data)
    if sniffed == "PDF":  # ocr.document reads it, page by page
        raise UnsupportedImageFormat("a PDF is a document, read page by page, not one image")
    if sniffed in {"GIF", "SVG"}:
        raise UnsupportedImageFormat(
            f"{sniffed} is not supported; send JPEG, PNG, BMP, WebP or TIFF"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        raise ImageDecodeError("the data is not a readable image") from exc
    except Exception as exc:  # Pillow raises a zoo of types for malformed headers
        raise ImageDecodeError("the image header is malformed") from exc

    with img:
        if frame:
            try:
                img.seek(frame)
            except Exception as exc:  # EOFError, or a malformed directory on the way
                raise ImageDecodeError(f"the file has no readable frame {frame + 1}") from exc
        if img.format not in ACCEPTED_FORMATS:
            raise UnsupportedImageFormat(
                f"{img.format} is not supported; send JPEG, PNG, BMP, WebP or TIFF"
            )
        width, height = img.size
        if width <= 0 or height <= 0:
            raise ImageTooSmall("the image has no pixels")
        if width < MIN_SIDE or height < MIN_SIDE:
            # No text fits in fewer pixels; refusing is clearer than a 200 with no text,
            # and spares the detector a 736 x 736 upscale of one pixel.
            raise ImageTooSmall(
                f"the image is {width}x{height} pixels; text needs at least "
                f"{MIN_SIDE}x{MIN_SIDE}"
            )
        if width * height > max_pixels:
            raise ImageTooLarge(
                f"the image is {width}x{height} = {width * height} pixels; "
                f"the limit is {max_pixels}"
            )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                img.load()
                img = _exif_transpose(img)
                return _to_bgr(img)
        except (ImageTooLarge, ImageTooSmall):
            raise
        except Exception as exc:  # truncated data, bad chunks, codec errors
            raise ImageDecodeError("the image data is corrupt or truncated") from exc


def limit_dimension(img: np.ndarray, max_side: int) -> np.ndarray:
    """``img`` scaled down (aspect kept) so neither side exceeds ``max_side`` pixels;
    ``img`` itself when it already fits or ``max_side`` is 0.

    ``processing.max_image_size``: the original service letterboxed every image into its
    detector's input and never refused a large one, so a large image is read smaller,
    not refused; the caller maps what it finds back to the image's own pixels."""
    height, width = img.shape[:2]
    longest = max(height, width)
    if max_side <= 0 or longest <= max_side:
        return img
    scale = max_side / longest
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)


def _exif_transpose(img: Image.Image) -> Image.Image:
    # In place: without an orientation tag Pillow would otherwise return a copy of
    # every pixel, for nothing (the image is ours alone).
    try:
        ImageOps.exif_transpose(img, in_place=True)
    except Exception:  # a broken EXIF block should not lose the picture
        pass
    return img


def _to_bgr(img: Image.Image) -> np.ndarray:
    """Flatten any Pillow mode to 3-channel BGR the way RapidOCR does."""
    mode = img.mode
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("1", "I;16", "I;16B", "I;16L", "I", "F"):
        img = _to_8bit_grey(img)
        mode = "L"
    if mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        img = img.convert("RGB")
        mode = "RGB"
    if mode == "PA":
        img = img.convert("RGBA")
        mode = "RGBA"

    arr = np.asarray(img)
    if mode == "L":
        return cv2.cvtColor(arr, cv2.COLOR_GRAY2BGR)
    if mode == "LA":
        return _grey_alpha_to_bgr(arr)
    if mode == "RGBA":
        return _rgba_to_bgr(arr)
    if mode == "RGB":
        return cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    raise ImageDecodeError(f"unsupported pixel mode {mode}")


def _to_8bit_grey(img: Image.Image) -> Image.Image:
    if img.mode == "1":
        return img.convert("L")
    arr = np.asarray(img, dtype=np.float64)
    lo, hi = float(arr.min()), float(arr.max())
    scaled = np.zeros_like(arr) if hi <= lo else (arr - lo) * (255.0 / (hi - lo))
    return Image.fromarray(scaled.astype(np.uint8), mode="L")


def _grey_alpha_to_bgr(arr: np.ndarray) -> np.ndarray:
    grey = np.ascontiguousarray(arr[..., 0])
    alpha = np.ascontiguousarray(arr[..., 1])
    bgr = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    not_alpha = cv2.cvtColor(cv2.bitwise_not(alpha), cv2.COLOR_GRAY2BGR)
    return cv2.add(cv2.bitwise_and(bgr, bgr, mask=alpha), not_alpha)


def _rgba_to_bgr(arr: np.ndarray) -> np.ndarray:
    """Composite over white or black, whichever contrasts with the visible pixels.

    Text drawn in black on a transparent background would vanish on black; white text
    would vanish on white. RapidOCR picks the background from the mean luminance of the
    opaque pixels; we do the same so both engines see the same picture.
    """
    rgb = arr[..., :3].astype(np.float32)
    alpha = arr[..., 3].astype(np.float32) / 255.0
    visible = rgb[arr[..., 3] > 0]
    if visible.size == 0:
        background = 255.0
    else:
        luminance = visible @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        background = 255.0 if float(luminance.mean()) < 128 else 0.0
    # In place, the same float32 products and sums: two full-size temporaries fewer.
    rgb *= alpha[..., None]
    rgb += (background * (1.0 - alpha))[..., None]
    return cv2.cvtColor(rgb.astype(np.uint8), cv2.COLOR_RGB2BGR)
