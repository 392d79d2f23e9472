"""Exceptions raised by the pure pipeline functions.

Each carries a stable ``code`` so the web layer can map it to an HTTP status without
parsing messages. Messages are written for the person who sent the image.
"""

from __future__ import annotations


class OcrInputError(Exception):
    """The input cannot be processed; the caller can fix it."""

    code = "invalid_input"


class ImageDecodeError(OcrInputError):
    """The bytes are not a readable image (corrupt, truncated, or not an image at all)."""

    code = "invalid_image"


class UnsupportedImageFormat(OcrInputError):
    """A real image, but in a format the service does not accept (GIF, SVG, PDF, ...)."""

    code = "unsupported_media_type"


class ImageTooLarge(OcrInputError):
    """The image's declared pixel count is over the configured limit.

    Raised from the header alone, before the pixels are decoded, so a decompression bomb
    never allocates its buffer.
    """

    code = "image_too_large"


class ImageTooSmall(OcrInputError):
    """The image has no pixels to read (zero width or height)."""

    code = "image_too_small"


class InvalidPdf(OcrInputError):
    """The bytes start like a PDF, but PDFium cannot read the document (or one page of it)."""

    code = "invalid_pdf"


class PdfEncrypted(OcrInputError):
    """The PDF needs a password to open (a user password, or a security handler PDFium
    does not know). PDFs protected only by an owner password open and are read."""

    code = "pdf_encrypted"


class TooManyPages(OcrInputError):
    """More pages were asked for (or, without ``pages``, the document has more) than
    ``processing.max_pages``."""

    code = "too_many_pages"


class PageOutOfRange(OcrInputError):
    """``pages`` names a page the document does not have."""

    code = "page_out_of_range"


class PageRenderTimeout(OcrInputError):
    """One page took longer than ``processing.page_render_timeout_s`` to render; that
    page's error (the others are still read)."""

    code = "page_render_timeout"
