"""The OCR orchestrator: one task per request.

decode (worker thread) -> detection job (to whichever device owner serves it) -> DB
post-processing and crops (worker thread) -> recognition through the batcher -> reading
order -> result, emitting progress events (accepted, detected, one line per region as it
is recognised, done) on the request's event channel. Errors propagate to the caller,
which turns them into a ``Failed`` event or an HTTP error; they never touch another
request.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, TypeVar

import attrs
import numpy as np
import outcome
import trio

from npu.backend import CLASSIFIER, DETECTION, ModelSpec, recognition_id
from ocr.classify import pack_cls, page_upside_down
from ocr.crop import crop_quad, rotate_180
from ocr.dbpost import DbParams, db_boxes
from ocr.decode import decode_image, limit_dimension
from ocr.detection import (
    DynamicDetParams,
    prepare_dynamic,
    prepare_fixed,
    to_nchw_normalised,
    to_nhwc_rgb_uint8,
)
from ocr.document import (
    Document,
    DocumentLimits,
    TextLayer,
    document_kind,
    open_document,
)
from ocr.errors import OcrInputError
from ocr.geometry import DetTransform
from ocr.order import line_texts, reading_order
from ocr.recognition import (
    REC_HEIGHT,
    join_pieces,
    pad_width,
    resize_for_rec,
    split_wide_crop,
)
from ocr.tiling import (
    TilePlan,
    TileTransform,
    TilingParams,
    merge_tile_boxes,
    plan_tiles,
    prepare_tile,
)

from .config import ServiceConfig
from .errors import ShuttingDown, fresh_error
from .messages import (
    Accepted,
    Detected,
    Done,
    LineRecognised,
    Notice,
    OcrRequest,
    OcrResult,
    PageDone,
    PageResult,
    PageStarted,
    RecResult,
    RecSubmission,
    Region,
    Timings,
)
from .routing import DeviceClient, ModelTable


@attrs.frozen
class PipelineSettings:
    """The per-request knobs, taken from the configuration once at start-up."""

    max_pixels: int
    #: Largest image side, pixels (processing.max_image_size); larger images are read
    #: scaled down to it. 0 = no limit.
    max_side: int
    det: DynamicDetParams
    db: DbParams
    rec_threshold: float
    use_cls: bool
    max_regions: int
    #: PDF and multi-page TIFF input (``processing``).
    documents: DocumentLimits
    #: Fixed-input detectors only: when to cut a tall or wide image into tiles.
    tiling: TilingParams = TilingParams()

    @classmethod
    def from_config(cls, config: ServiceConfig) -> PipelineSettings:
        o, p = config.ocr, config.processing
        return cls(
            max_pixels=config.processing.max_image_pixels,
            max_side=config.processing.max_image_size,
            det=DynamicDetParams(
                limit_side_len=o.det_limit_side_len, limit_type=o.det_limit_type,
                max_side_len=o.det_max_side_len, max_pixels=o.det_max_pixels,
            ),
            db=DbParams(
                thresh=o.det_threshold, box_thresh=o.det_box_threshold,
                unclip_ratio=o.unclip_ratio,
            ),
            rec_threshold=o.rec_threshold,
            use_cls=o.use_angle_cls,
            max_regions=o.max_regions,
            tiling=config.tiling,
            documents=DocumentLimits(
                max_pages=p.max_pages, dpi=p.pdf_dpi, max_page_pixels=p.max_page_pixels,
                max_image_pixels=p.max_image_pixels, render_timeout_s=p.page_render_timeout_s,
            ),
        )


def _prepare_detection(img: np.ndarray, spec: ModelSpec, s: PipelineSettings):
    if spec.policy == "fixed":
        assert spec.height and spec.width
        net, transform = prepare_fixed(img, spec.height, spec.width, pad_value=spec.pad_value)
    else:
        net, transform = prepare_dynamic(img, s.det)
    tensor = to_nhwc_rgb_uint8(net) if spec.layout == "nhwc_uint8_rgb" else to_nchw_normalised(net)
    return tensor, transform


def _find_regions(
    img: np.ndarray, prob: np.ndarray, transform: DetTransform, s: PipelineSettings
) -> tuple[np.ndarray, list[np.ndarray]]:
    quads, scores = db_boxes(prob, transform, s.db)
    return _bound_and_crop(img, quads, scores, s)


def _bound_and_crop(
    img: np.ndarray, quads: np.ndarray, scores: np.ndarray, s: PipelineSettings
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Keep the ``max_regions`` best-scoring boxes (in their order) and crop each."""
    if len(quads) > s.max_regions:
        keep = np.sort(np.argsort(-scores, kind="stable")[: s.max_regions])
        quads = quads[keep]
    crops = [crop_quad(img, q) for q in quads]
    return quads, crops


def _prepare_tiles(
    img: np.ndarray, plan: TilePlan, indices: Sequence[int], spec: ModelSpec
) -> tuple[np.ndarray, list[TileTransform]]:
    """Letterbox some tiles of ``img`` into one batch for the fixed-input detector."""
    assert spec.height and spec.width
    nets, transforms = [], []
    for i in indices:
        net, tt = prepare_tile(img, plan.tiles[i], spec.height, spec.width,
                               pad_value=spec.pad_value)
        nets.append(net)
        transforms.append(tt)
    if spec.layout == "nhwc_uint8_rgb":
        return to_nhwc_rgb_uint8(nets), transforms
    return to_nchw_normalised(nets), transforms


def _tile_boxes(
    prob: np.ndarray, transform: TileTransform, s: PipelineSettings
) -> tuple[np.ndarray, np.ndarray]:
    """DB post-processing of one tile's map, boxes in original-image pixels."""
    quads, scores = db_boxes(prob, transform.det, s.db)
    return transform.to_image(quads), scores


def _merge_regions(
    img: np.ndarray, plan: TilePlan, per_tile: Sequence[tuple[np.ndarray, np.ndarray]],
    s: PipelineSettings,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """The tiles' boxes merged into one set (:func:`ocr.tiling.merge_tile_boxes`), then
    bounded and cropped as :func:`_find_regions` does for a single map."""
    quads, scores = merge_tile_boxes(plan, per_tile)
    return _bound_and_crop(img, quads, scores, s)


def _rec_inputs(
    crops: Sequence[np.ndarray], spec: ModelSpec
) -> tuple[list[np.ndarray], list[int], tuple[int, ...] | None]:
    """Resize crops for the recogniser; a fixed-width model gets wide lines in pieces.
    Returns the pieces, for each piece the index of the crop it belongs to, and for a
    dynamic-width model the width each piece is to be padded to (its own,
    :func:`ocr.recognition.pad_width`), else None."""
    height = spec.height or REC_HEIGHT
    pieces: list[np.ndarray] = []
    owners: list[int] = []
    if spec.policy != "fixed":
        pieces = [resize_for_rec(c, height) for c in crops]
        widths = tuple(pad_width(p.shape[1]) for p in pieces)
        return pieces, list(range(len(crops))), widths
    for i, crop in enumerate(crops):
        if spec.policy == "fixed" and spec.width:
            parts = split_wide_crop(crop, height, spec.width)
            for part in parts:
                pieces.append(resize_for_rec(part, height, spec.width))
                owners.append(i)
        else:
            pieces.append(resize_for_rec(crop, height))
            owners.append(i)
    return pieces, owners, None


def _loaded(img: np.ndarray, max_side: int) -> tuple[np.ndarray, tuple[int, int]]:
    """The image to read (within ``max_side``) and the image's own (width, height)."""
    height, width = img.shape[:2]
    return limit_dimension(img, max_side), (width, height)


def _decode(data: bytes, s: PipelineSettings) -> tuple[np.ndarray, tuple[int, int]]:
    """The image to read (within ``max_side``) and the image's own (width, height)."""
    return _loaded(decode_image(data, max_pixels=s.max_pixels), s.max_side)


def _bbox(quad: np.ndarray) -> tuple[tuple[int, int], ...]:
    # tolist: Python floats in one call (runs on the Trio thread, for every region).
    return tuple((round(x), round(y)) for x, y in quad.tolist())


def _assemble(
    texts: Sequence[tuple[str, float] | None], quads: Sequence[np.ndarray] | np.ndarray,
    threshold: float, page: int | None,
) -> tuple[tuple[Region, ...], tuple[str, ...]]:
    """The regions worth keeping (text, confidence at or above ``threshold``) in reading
    order, and the text line by line (:mod:`ocr.order`)."""
    kept = [
        i for i, t in enumerate(texts)
        if t is not None and t[0].strip() and t[1] >= threshold
    ]
    regions = [
        Region(texts[i][0], round(texts[i][1], 4), _bbox(quads[i]), page=page)  # type: ignore[index]
        for i in kept
    ]
    order = reading_order([quads[i] for i in kept])
    ordered = tuple(regions[i] for line in order for i in line)
    lines = tuple(line_texts([r.text for r in regions], order))
    return ordered, lines


def detect_languages(language: str, texts: Sequence[str]) -> tuple[str, ...]:
    """The language the text was read in, then any other script found in it: ``zh`` for
    CJK ideographs, ``en`` for Latin letters (the original answered ``[language used]``)."""
    found = []
    joined = "".join(texts)
    if any("\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf" for ch in joined):
        found.append("zh")
    if any(ch.isascii() and ch.isalpha() for ch in joined):
        found.append("en")
    return (language, *(lang for lang in found if lang != language))


async def _emit(events: trio.MemorySendChannel | None, event: object) -> None:
    """Send a progress event to whoever listens; a REST request has no listener."""
    if events is not None:
        await events.send(event)


T = TypeVar("T")


async def _run_stoppable(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args, stop)`` in a worker thread, where ``stop()`` turns true as soon as
    this task is cancelled, so that ``fn`` can give up early instead of holding the
    cancellation (and, for PDFium, the lock) until it is done: a worker thread cannot be
    interrupted, only asked. ``fn``'s own errors come out as themselves."""
    stop = threading.Event()

    async def set_stop_when_cancelled() -> None:
        try:
            await trio.sleep_forever()
        finally:
            stop.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(set_stop_when_cancelled)
        result = await outcome.acapture(trio.to_thread.run_sync, fn, *args, stop.is_set)
        nursery.cancel_scope.cancel()
    # Past the nursery, this task was not cancelled (that would have been raised): an
    # early return of fn's (RenderCancelled) cannot be what comes out.
    return result.unwrap()


class Orchestrator:
    """Runs requests. Holds only immutable settings and the handles of the other actors.

    ``withdraw`` (the batcher's :meth:`~actors.batcher.Batcher.withdraw`) is called when a
    request ends before all its crops came back (cancelled, timed out, failed), so its
    queued crops leave the batcher at once instead of at the batcher's next look.
    """

    def __init__(
        self, settings: PipelineSettings, device: DeviceClient,
        batcher: trio.MemorySendChannel, models: ModelTable,
        withdraw: Callable[[trio.MemorySendChannel], object] | None = None,
    ) -> None:
        self._s = settings
        self._device = device
        self._batcher = batcher
        self._models = models
        self._withdraw = withdraw
        det_slots = models.slots(DETECTION)
        # Requests between decode and the end of detection hold a decoded image and a
        # float detection input (tens of MB for a receipt). Only this many at once: enough
        # to keep the device fed (some running, some ready, some decoding), and peak memory
        # no longer grows with the requests in flight (benchmarks/RESULTS.md, peak RSS).
        # A document's pages take these slots like images, one each.
        self._image_stage = trio.CapacityLimiter(max(4, 2 * det_slots))
        # Of those, only as many as the device runs at once hold a float detection input
        # (12 bytes a pixel: 26 MB at 2.2 Mpx); the others wait as decoded images. The
        # input is made in a few ms, so nothing is prepared ahead; the previous image's
        # boxes are found while the device runs the next (benchmarks/RESULTS.md).
        self._det_stage = trio.CapacityLimiter(max(1, det_slots))
        # PDFium runs one call at a time in the whole process (ocr/document.py): requests
        # wait for it here, cancellably, rather than in worker threads on its lock.
        self._pdfium = trio.CapacityLimiter(1)
        # Pages of one document read at once: as many as may be between decode and the
        # end of detection, so that one page is detected while others are recognised
        # (their crops share batches), and a long document never queues more than this
        # ahead of the requests that arrive after it.
        self._pages_in_flight = int(self._image_stage.total_tokens)

    # -- documents -------------------------------------------------------------------------

    async def _document_call(self, doc: Document, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` (a method of ``doc``) in a worker thread, behind the PDFium
        limiter when the document is a PDF."""
        if not doc.uses_pdfium:
            return await trio.to_thread.run_sync(fn, *args)
        async with self._pdfium:
            return await trio.to_thread.run_sync(fn, *args)

    @asynccontextmanager
    async def open_document(self, request: OcrRequest) -> AsyncIterator[Document | None]:
        """The PDF or multi-page TIFF ``request`` holds, opened and its pages chosen
        (``request.options``), closed on the way out; None for an image. Raises the
        document's input errors (``invalid_pdf``, ``pdf_encrypted``, ``too_many_pages``,
        ``page_out_of_range``)."""
        kind = document_kind(request.image)
        if kind is None:
            yield None
            return
        opener = partial(open_document, request.image, request.options, self._s.documents)
        if kind == "PDF":
            async with self._pdfium:
                doc = await trio.to_thread.run_sync(opener)
        else:
            doc = await trio.to_thread.run_sync(opener)
        if doc is None:
            yield None
            return
        try:
            yield doc
        finally:
            with trio.CancelScope(shield=True):  # PDFium's memory is not the GC's
                await self._document_call(doc, doc.close)

    # -- requests --------------------------------------------------------------------------

    async def run(
        self, request: OcrRequest, language: str, events: trio.MemorySendChannel | None = None,
        warnings: tuple[Notice, ...] = (), document: Document | None = None,
    ) -> OcrResult:
        """Read one image, or the pages of ``document`` (from :meth:`open_document`), in
        ``language``; ``warnings`` are passed on in the result."""
        rid = request.id
        t0 = time.perf_counter()
        await _emit(events, Accepted(rid))
        if document is not None:
            result = await self._run_document(document, rid, language, events, warnings, t0)
        else:
            load = partial(trio.to_thread.run_sync, _decode, request.image, self._s)
            page = await self._read_image(load, rid, language, events, None, t0)
            result = OcrResult(
                text=page.text, regions=page.regions,
                languages_detected=detect_languages(language, [r.text for r in page.regions]),
                language=language, timings=page.timings, image_size=page.image_size,
                lines=page.lines, warnings=warnings,
            )
        await _emit(events, Done(rid, result))
        return result

    async def _read_image(
        self, load: Callable[[], Awaitable[tuple[np.ndarray, tuple[int, int]]]],
        rid: str | None, language: str, events: trio.MemorySendChannel | None,
        page: int | None, t0: float,
    ) -> PageResult:
        """Detect and recognise the image ``load()`` gives (an upload decoded, a page
        rendered): the single-image pipeline, for images and pages alike."""
        s, models = self._s, self._models
        async with self._image_stage:  # decode_ms includes the wait for a slot
            img, (width, height) = await load()
            t_decoded = time.perf_counter()
            read_height, read_width = img.shape[:2]

            det_spec = models.spec(DETECTION)
            plan = None
            if det_spec.policy == "fixed" and det_spec.height and det_spec.width:
                # A tall receipt letterboxed whole into a landscape model loses its text:
                # such images go through in overlapping tiles (ocr/tiling.py).
                plan = plan_tiles(read_height, read_width, det_spec.height, det_spec.width,
                                  s.det, s.tiling)
            if plan is not None and plan.tiled:
                quads, crops = await self._detect_tiles(img, det_spec, plan)
            else:
                async with self._det_stage:
                    tensor, transform = await trio.to_thread.run_sync(
                        _prepare_detection, img, det_spec, s
                    )
                    prob = await self._device.infer(DETECTION, tensor)
                    del tensor
                quads, crops = await trio.to_thread.run_sync(
                    _find_regions, img, prob[0], transform, s
                )
                del prob
            # The decoded image, the detection input and its probability map are tens of
            # MB for a receipt; drop them now, not when recognition ends, or every request
            # waiting in the batcher keeps them (benchmarks/RESULTS.md, peak RSS).
            del img
        if (read_width, read_height) != (width, height):  # read scaled down: map back
            quads = quads * np.array([width / read_width, height / read_height], np.float32)
        t_detected = time.perf_counter()
        if events is not None:  # a REST request has no listener: no boxes to format
            await _emit(events, Detected(rid, tuple(_bbox(q) for q in quads), page))

        rec_spec = models.spec(recognition_id(language))
        if s.use_cls and crops and models.has(CLASSIFIER):
            crops = await self._classify(crops)
        pieces, owners, widths = await trio.to_thread.run_sync(_rec_inputs, crops, rec_spec)

        texts: list[tuple[str, float] | None] = [None] * len(crops)
        if pieces:
            texts = await self._recognise(
                rid, language, pieces, owners, quads, events, widths, page
            )
        t_done = time.perf_counter()

        regions, lines = _assemble(texts, quads, s.rec_threshold, page)
        timings = Timings(
            decode_ms=round((t_decoded - t0) * 1000, 2),
            detection_ms=round((t_detected - t_decoded) * 1000, 2),
            recognition_ms=round((t_done - t_detected) * 1000, 2),
            total_ms=round((t_done - t0) * 1000, 2),
        )
        return PageResult(
            page=page or 1, text=" ".join(lines), regions=regions, lines=lines,
            image_size=(width, height), source="ocr", timings=timings,
        )

    async def _run_document(
        self, doc: Document, rid: str | None, language: str,
        events: trio.MemorySendChannel | None, warnings: tuple[Notice, ...], t0: float,
    ) -> OcrResult:
        """Read the selected pages, a few at a time (their crops share recognition
        batches with each other and with every other request), and put them together.

        A page's own input error (damaged, too small, an image in it too large, too slow
        to render) fails that page only; it is reported in its entry and in
        ``warnings``. Any other error (the device, the deadline) fails the request, and
        leaving (an error or a cancelled client) cancels every page still being read."""
        results: dict[int, PageResult] = {}
        failure: list[BaseException] = []
        slots = trio.Semaphore(self._pages_in_flight)

        async def read(number: int, cancel: trio.CancelScope) -> None:
            try:
                await _emit(events, PageStarted(rid, number, len(doc.pages)))
                try:
                    page = await self._read_page(doc, number, rid, language, events)
                except OcrInputError as exc:
                    page = PageResult(page=number, error=exc)
                results[number] = page
                await _emit(events, PageDone(rid, page))
            except Exception as exc:
                if not failure:
                    failure.append(exc)
                cancel.cancel()
            finally:
                slots.release()

        async with trio.open_nursery() as nursery:
            for number in doc.pages:
                await slots.acquire()
                if failure:
                    slots.release()
                    break
                nursery.start_soon(read, number, nursery.cancel_scope)
        if failure:
            raise failure[0]

        pages = tuple(results[n] for n in doc.pages)
        read_ok = [p for p in pages if p.error is None]
        if not read_ok:
            error = pages[0].error
            assert error is not None
            raise error
        notices = tuple(
            Notice("page_failed", f"page {p.page} was not read: {p.error}")
            for p in pages if p.error is not None
        )
        first = read_ok[0]
        t_done = time.perf_counter()
        timings = Timings(
            decode_ms=round(sum(p.timings.decode_ms for p in read_ok), 2),
            detection_ms=round(sum(p.timings.detection_ms for p in read_ok), 2),
            recognition_ms=round(sum(p.timings.recognition_ms for p in read_ok), 2),
            total_ms=round((t_done - t0) * 1000, 2),
        )
        # The fields a one-image client reads are the first page's (its regions' boxes
        # are in that page's pixels, as image_size); the languages, warnings and timings
        # are the whole document's.
        return OcrResult(
            text=first.text, regions=first.regions,
            languages_detected=detect_languages(
                language, [r.text for p in read_ok for r in p.regions]
            ),
            language=language, timings=timings, image_size=first.image_size,
            lines=first.lines, warnings=warnings + notices, pages=pages,
        )

    async def _read_page(
        self, doc: Document, number: int, rid: str | None, language: str,
        events: trio.MemorySendChannel | None,
    ) -> PageResult:
        """One page: from its text layer when the request's ``pdf_text`` lets it (and it
        has one), else rendered and read like an image."""
        t0 = time.perf_counter()
        layer = await self._document_call(doc, doc.text_layer, number)
        if layer is not None:
            return await self._text_layer_page(layer, number, rid, events, t0)

        dpi: float | None = None

        async def render() -> tuple[np.ndarray, tuple[int, int]]:
            nonlocal dpi
            if doc.uses_pdfium:
                async with self._pdfium:
                    rendered = await _run_stoppable(doc.render, number)
            else:
                rendered = await _run_stoppable(doc.render, number)
            dpi = rendered.dpi
            return await trio.to_thread.run_sync(_loaded, rendered.image, self._s.max_side)

        page = await self._read_image(render, rid, language, events, number, t0)
        return attrs.evolve(page, dpi=dpi)

    async def _text_layer_page(
        self, layer: TextLayer, number: int, rid: str | None,
        events: trio.MemorySendChannel | None, t0: float,
    ) -> PageResult:
        """A page read from its text layer: the same events and assembly as OCR, each
        piece with confidence 1."""
        quads = np.array([q for _, q in layer.pieces], np.float32).reshape(-1, 4, 2)
        await _emit(events, Detected(rid, tuple(q for _, q in layer.pieces), number))
        texts: list[tuple[str, float] | None] = []
        for i, (text, quad) in enumerate(layer.pieces):
            texts.append((text, 1.0))
            await _emit(events, LineRecognised(rid, i, Region(text, 1.0, quad, page=number)))
        regions, lines = _assemble(texts, quads, 0.0, number)
        total_ms = round((time.perf_counter() - t0) * 1000, 2)
        return PageResult(
            page=number, text=" ".join(lines), regions=regions, lines=lines,
            image_size=layer.size, source="text_layer",
            timings=Timings(decode_ms=total_ms, total_ms=total_ms), dpi=layer.dpi,
        )

    async def _detect_tiles(
        self, img: np.ndarray, spec: ModelSpec, plan: TilePlan
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Detect text tile by tile and merge the boxes (fixed-input detectors).

        The tiles go to the device as separate jobs, ``spec.batch_size`` tiles a job, all
        submitted at once so the device can pipeline them (at most ``max_tiles`` per
        request, so this stays bounded); each job's maps are post-processed in a worker
        thread as soon as they come back. The first error stops the other jobs and is
        raised as itself (not wrapped in an exception group), as the single-map path does.
        """
        s = self._s
        n = len(plan.tiles)
        step = max(1, spec.batch_size)
        per_tile: list[tuple[np.ndarray, np.ndarray] | None] = [None] * n
        failure: list[BaseException] = []

        async def run_job(indices: range, cancel: trio.CancelScope) -> None:
            try:
                tensor, transforms = await trio.to_thread.run_sync(
                    _prepare_tiles, img, plan, indices, spec
                )
                prob = await self._device.infer(DETECTION, tensor)
                del tensor
                for j, i in enumerate(indices):
                    per_tile[i] = await trio.to_thread.run_sync(
                        _tile_boxes, prob[j], transforms[j], s
                    )
            except Exception as exc:
                if not failure:
                    failure.append(exc)
                cancel.cancel()

        async with trio.open_nursery() as nursery:
            for start in range(0, n, step):
                nursery.start_soon(run_job, range(start, min(n, start + step)),
                                   nursery.cancel_scope)
        if failure:
            raise failure[0]
        done = [t for t in per_tile if t is not None]
        assert len(done) == n, "a tile job ended without result or error"
        return await trio.to_thread.run_sync(_merge_regions, img, plan, done, s)

    async def _classify(self, crops: list[np.ndarray]) -> list[np.ndarray]:
        """The crops, all turned by 180 degrees if the image reads upside down
        (``ocr.classify.page_upside_down``), else as they were."""
        spec = self._models.spec(CLASSIFIER)
        probs = []
        for start in range(0, len(crops), spec.batch_size):
            chunk = crops[start : start + spec.batch_size]
            tensor = await trio.to_thread.run_sync(pack_cls, chunk)
            probs.append(await self._device.infer(CLASSIFIER, tensor))
        if not page_upside_down(np.concatenate(probs)):
            return crops
        return [rotate_180(c) for c in crops]

    async def _recognise(
        self, rid: str | None, language: str, pieces: list[np.ndarray], owners: list[int],
        quads: np.ndarray, events: trio.MemorySendChannel | None,
        widths: tuple[int, ...] | None = None, page: int | None = None,
    ) -> list[tuple[str, float] | None]:
        n_regions = len(quads)
        reply_send, reply_recv = trio.open_memory_channel[RecResult](len(pieces))
        piece_texts: list[list[tuple[int, str, float]]] = [[] for _ in range(n_regions)]
        pieces_left = [0] * n_regions
        for o in owners:
            pieces_left[o] += 1
        texts: list[tuple[str, float] | None] = [None] * n_regions
        received = 0
        try:
            async with reply_recv:
                try:
                    await self._batcher.send(
                        RecSubmission(language, tuple(pieces), reply_send, widths)
                    )
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    raise ShuttingDown("the service is stopping") from None
                while received < len(pieces):
                    res = await reply_recv.receive()
                    received += 1
                    if res.error is not None:
                        raise fresh_error(res.error)
                    owner = owners[res.index]
                    piece_texts[owner].append((res.index, res.text, res.confidence))
                    pieces_left[owner] -= 1
                    if pieces_left[owner] == 0:
                        parts = [(t, c) for _, t, c in sorted(piece_texts[owner])]
                        text, conf = parts[0] if len(parts) == 1 else join_pieces(parts)
                        texts[owner] = (text, conf)
                        keep = text.strip() and conf >= self._s.rec_threshold
                        if keep and events is not None:
                            region = Region(text, round(conf, 4), _bbox(quads[owner]),
                                            page=page)
                            await _emit(events, LineRecognised(rid, owner, region))
        finally:
            if received < len(pieces) and self._withdraw is not None:
                self._withdraw(reply_send)
        return texts
