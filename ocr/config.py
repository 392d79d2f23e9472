"""The pipeline's own sections of the configuration: ``ocr`` (languages, thresholds,
detection sizing) and ``processing`` (image and document limits), and the error any layer
raises for a configuration that cannot be.

Each layer owns the attrs class of its sections (``npu/config.py``, ``actors/config.py``,
``web/config.py``); the whole file is composed, loaded and validated at the top, where the
CLI starts (:mod:`web.settings`). ``tiling`` is :class:`ocr.tiling.TilingParams` itself.
"""

from __future__ import annotations

import attrs


class ConfigError(Exception):
    """The configuration cannot be: a bad key or value, or a placement that cannot run.
    The operator fixes it; the service does not start."""

    code = "invalid_config"


@attrs.frozen
class OcrConfig:
    #: Languages loaded (aliases such as ch_sim or en-US are read as en / zh). When
    #: default_language is not set, the first is the default, as in the original service.
    languages: tuple[str, ...] = ("en", "zh")
    default_language: str = "en"
    #: A request asking only for languages not loaded: "fallback" reads it in the default
    #: language and says so in the response's warnings (the original's behaviour);
    #: "reject" answers 422 unsupported_language.
    unknown_language: str = "fallback"
    #: DB pixel threshold: probability above which a pixel counts as text.
    det_threshold: float = 0.3
    #: DB box threshold: mean probability a box needs to be kept.
    det_box_threshold: float = 0.5
    unclip_ratio: float = 1.6
    #: Lines recognised with a lower confidence are dropped. Above PaddleOCR's 0.5: on
    #: ../shared/devdata the lines between 0.5 and 0.7 were mostly misread texture in
    #: photos and web images, rarely real text on documents (benchmarks/RESULTS.md, round 5).
    rec_threshold: float = 0.7
    #: Run the 0/180-degree line classifier (CPU backend only).
    use_angle_cls: bool = False
    #: Dynamic detection input: scale the short side up to this (limit_type min) or the
    #: long side down to it (max) ...
    det_limit_side_len: int = 704
    det_limit_type: str = "min"
    #: ... but never make the input's long side longer than this (ocr/detection.py).
    det_max_side_len: int = 1600
    #: Most pixels in the dynamic detection input; larger inputs are scaled down to it.
    #: Detection's working memory grows with its input's pixels (about 200 MB per million
    #: on the CPU), so this bounds the service's peak RSS; with the 1600 px long side only
    #: near-square inputs reach it.
    det_max_pixels: int = 2_200_000
    #: Most text regions read from one image (the rest are dropped, largest score first).
    max_regions: int = 1000


@attrs.frozen
class ProcessingConfig:
    #: Largest image dimension, pixels, as the original service meant it: a larger image
    #: is scaled down to it (aspect kept) before detection; boxes are still given in the
    #: image's own pixels. 0 = no limit.
    max_image_size: int = 0
    #: Largest encoded image accepted, bytes (413 beyond).
    max_image_bytes: int = 20 * 1024 * 1024
    #: Largest decoded image accepted, pixels (checked from the header, before decoding).
    #: Also bounds each TIFF page and each image embedded in a PDF page.
    max_image_pixels: int = 40_000_000
    #: Most pages of a PDF or multi-page TIFF read in one request (413 beyond; a client
    #: chooses pages with the ``pages`` field).
    max_pages: int = 200
    #: Resolution PDF pages are rendered at when a request names none (``dpi``): the
    #: lowest at which no devdata scan set reads worse than at 300 (benchmarks/RESULTS.md).
    pdf_dpi: int = 200
    #: Most pixels of one rendered PDF page; a larger page is rendered at the lower
    #: resolution that fits. Bounds the memory of a page like max_image_pixels an image's.
    max_page_pixels: int = 12_000_000
    #: Longest one PDF page may take to render; past it that page fails on its own
    #: (``page_render_timeout``) and the others are read.
    page_render_timeout_s: float = 20.0
