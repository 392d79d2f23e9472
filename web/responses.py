"""The JSON shapes of results and progress events (SPEC.md), shared by REST, the
websocket and ``hailo-ocr extract --json`` so they cannot drift apart."""

from __future__ import annotations

from typing import Any

from actors.messages import (
    Accepted,
    Detected,
    Done,
    Event,
    Failed,
    LineRecognised,
    OcrResult,
    PageDone,
    PageResult,
    PageStarted,
    Region,
    Timings,
)
from npu.backend import DETECTION, BackendInfo, recognition_id

from .errors import describe, describe_and_log


def bbox_json(bbox: tuple[tuple[int, int], ...]) -> list[list[int]]:
    return [[int(x), int(y)] for x, y in bbox]


def _model_name(info: BackendInfo, model_id: str) -> str | None:
    try:
        return info.model(model_id).name
    except KeyError:
        return None


def hailo_info(info: BackendInfo, language: str) -> dict[str, Any]:
    """What actually ran: device is null on the CPU backend."""
    return {
        "device": info.device,
        "backend": info.kind,
        "detection_model": _model_name(info, DETECTION),
        "recognition_model": _model_name(info, recognition_id(language)),
    }


def region_json(r: Region) -> dict[str, Any]:
    out = {"text": r.text, "confidence": r.confidence, "bbox": bbox_json(r.bbox), "type": r.type}
    if r.page is not None:  # a document's region: its bbox is in that page's pixels
        out["page"] = r.page
    return out


def _statistics(regions: tuple[Region, ...]) -> dict[str, Any]:
    n = len(regions)
    mean = sum(r.confidence for r in regions) / n if n else 0.0
    return {"total_regions": n, "average_confidence": round(mean, 4)}


def _performance(t: Timings) -> dict[str, int]:
    # Measured in the orchestrator; whole milliseconds, the type the original service's
    # clients read.
    return {
        "decode_time_ms": round(t.decode_ms),
        "detection_time_ms": round(t.detection_ms),
        "recognition_time_ms": round(t.recognition_ms),
        "total_time_ms": round(t.total_ms),
    }


def page_json(page: PageResult) -> dict[str, Any]:
    """One entry of a document's ``pages``: the page read, or its error."""
    if page.error is not None:
        info = describe(page.error)
        return {"page": page.page, "success": False, "error": info.message, "code": info.code}
    return {
        "page": page.page, "success": True, "text": page.text, "lines": list(page.lines),
        "regions": [region_json(r) for r in page.regions],
        "statistics": _statistics(page.regions),
        "image_size": {"width": page.image_size[0], "height": page.image_size[1]},
        "source": page.source, "dpi": page.dpi, "performance": _performance(page.timings),
    }


def result_json(result: OcrResult, info: BackendInfo) -> dict[str, Any]:
    """The body of a successful ``POST /v1/ocr/extract`` (without ``success``)."""
    out = {
        "text": result.text,
        "lines": list(result.lines),
        "regions": [region_json(r) for r in result.regions],
        "languages_detected": list(result.languages_detected),
        "language": result.language,
        "warnings": [{"code": w.code, "message": w.message} for w in result.warnings],
        "statistics": _statistics(result.regions),
        "performance": _performance(result.timings),
        "image_size": {"width": result.image_size[0], "height": result.image_size[1]},
        "hailo_info": hailo_info(info, result.language),
    }
    if result.pages:
        out["pages"] = [page_json(p) for p in result.pages]
    return out


def extract_json(result: OcrResult, info: BackendInfo) -> dict[str, Any]:
    return {"success": True, **result_json(result, info)}


def event_json(event: Event, client_id: Any, info: BackendInfo) -> dict[str, Any]:
    """A websocket event. ``client_id`` is the id exactly as the client sent it."""
    if isinstance(event, Accepted):
        return {"type": "accepted", "id": client_id}
    if isinstance(event, PageStarted):
        return {"type": "page", "id": client_id, "page": event.page, "pages": event.pages}
    if isinstance(event, Detected):
        detected = {
            "type": "detected", "id": client_id,
            "regions": [{"index": i, "bbox": bbox_json(b)} for i, b in enumerate(event.bboxes)],
        }
        if event.page is not None:
            detected["page"] = event.page
        return detected
    if isinstance(event, LineRecognised):
        r = event.region
        line = {
            "type": "line", "id": client_id, "index": event.index, "text": r.text,
            "confidence": r.confidence, "bbox": bbox_json(r.bbox),
        }
        if r.page is not None:
            line["page"] = r.page
        return line
    if isinstance(event, PageDone):
        return {"type": "page_done", "id": client_id, **page_json(event.result)}
    if isinstance(event, Done):
        return {"type": "done", "id": client_id, **result_json(event.result, info)}
    if isinstance(event, Failed):
        return error_event(client_id, event.error)
    raise TypeError(f"unknown event {event!r}")


def error_event(client_id: Any, exc: BaseException) -> dict[str, Any]:
    """A websocket ``error`` event: what REST would answer, as fields. A websocket has no
    response headers, so REST's ``Retry-After`` becomes ``retry_after`` (whole seconds),
    present exactly when REST would send the header: the client may send that image
    again after that long."""
    info = describe_and_log(exc)
    event = {"type": "error", "id": client_id, "error": info.message, "code": info.code,
             "status": info.status}
    if "Retry-After" in info.headers:
        event["retry_after"] = int(info.headers["Retry-After"])
    return event
