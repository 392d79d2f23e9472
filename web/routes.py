"""REST routes: health, readiness, models, and extraction. Parse, call the service, map."""

from __future__ import annotations

import resource
import sys
import threading
import time
from typing import Any

import trio
from quart import Blueprint, current_app, request

from actors.messages import OcrRequest
from actors.service import OcrService

from . import openapi
from .app import get_state
from .cache_routes import extract_with_cache
from .inputs import image_from_request
from .openapi import rest as openapi_rest
from .responses import extract_json
from .settings import Config

bp = Blueprint("ocr", __name__)


def memory_usage_mb() -> int:
    """Resident set size now (Linux /proc), else the peak from getrusage."""
    try:
        with open("/proc/self/statm", "rb") as f:
            pages = int(f.read().split()[1])
        return round(pages * resource.getpagesize() / 2**20)
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return round(peak / (2**20 if sys.platform == "darwin" else 1024))


@bp.get("/health")
async def health() -> dict[str, Any]:
    state = get_state(current_app)
    service = state.service
    ready = service is not None and service.ready
    stats = service.statistics() if service is not None else None
    if service is not None:
        languages = list(service.languages)
        device, backend = service.info.device, service.info.kind
        devices = device_states(service)
        reason = service.backend_choice.reason
    else:
        languages = list(state.config.ocr.languages)
        device, backend = None, state.config.backend.type
        devices = []
        reason = None
    return {
        "status": "ok" if ready else ("starting" if service is None else "degraded"),
        "models_loaded": ready,
        "languages_supported": languages,
        "memory_usage_mb": memory_usage_mb(),
        "uptime_seconds": int(time.monotonic() - state.started_at),
        "hailo_device": device,
        "backend": backend,
        # Why this backend (with backend auto: the device manager, the NPU or the CPU).
        "backend_reason": reason,
        # As the original had it: how many times the models were loaded (1, plus one per
        # reload after a device fault).
        "model_loads": stats.model_loads if stats else 0,
        # Added for operators (and the graceful-shutdown test): requests being processed.
        "requests_in_flight": stats.requests_in_flight if stats else 0,
        # Where the models run (npu.placement): each device owner, its state and models.
        "devices": devices,
        # For leak hunting (benchmarks/soak.py): both must stay flat under steady load.
        "debug": {"threads": threading.active_count(), "tasks": count_tasks()},
        # For clients that size their work to the server (``hailo-ocr read``).
        "limits": limits_json(state.config),
    }


def limits_json(config: Config) -> dict[str, int]:
    """The admission limits a client can plan with; public like the rest of /health
    (they say how much work is accepted, nothing about what was read)."""
    server = config.server
    return {
        "max_in_flight": server.max_in_flight,
        "ws_max_in_flight": server.ws_max_in_flight,
        "max_body_bytes": server.max_body_bytes,
    }


def device_states(service: OcrService) -> list[dict[str, Any]]:
    """Each device owner as ``/health`` shows it: its state (``ready``, or why not:
    ``models_loading``, ``device_fault`` while it restarts, ``stopped``), the models it
    serves and how often it restarted. No fault text: ``/health`` is public."""
    out = []
    for name, stats in service.device_statistics().items():
        out.append({
            "device": name,
            "state": stats.state,
            "models": [m for m, placed in service.models.models.items() if placed.device == name],
            "restarts": stats.restarts,
        })
    return out


def count_tasks() -> int:
    """Trio tasks alive in this process (a walk of the task tree from the root)."""
    count = 0
    stack = [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        if task is None:
            continue
        count += 1
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return count


@bp.get("/health/ready")
async def ready():
    state = get_state(current_app)
    if state.draining:  # shutting down soon: leave the balancer's rotation now
        return {"ready": False, "reason": "draining"}, 503, {"Retry-After": "2"}
    reason = state.not_ready_reason
    if reason is None:
        return {"ready": True}
    return {"ready": False, "reason": reason}, 503, {"Retry-After": "2"}


@bp.get("/models")
async def models() -> dict[str, Any]:
    service = get_state(current_app).require_service()
    devices = service.device_statistics()
    data = []
    for m in service.info.models:
        entry: dict[str, Any] = {"id": m.id, "name": m.name, "type": m.kind}
        if m.language:
            entry["language"] = m.language
        device = service.models.device(m.id)
        entry["status"] = (
            "loaded" if devices[device].ready and not service.closing else "unavailable"
        )
        entry["batch_size"] = m.batch_size
        # Where it runs (npu.placement) and the file it was loaded from.
        entry["device"] = device
        entry["file"] = m.path
        data.append(entry)
    return {"object": "list", "data": data}


@bp.post("/v1/ocr/extract")
async def extract() -> dict[str, Any]:
    state = get_state(current_app)
    service = state.require_service()
    parsed = await image_from_request(request, state.config)
    result, cached = await extract_with_cache(
        state, service, OcrRequest(parsed.data, parsed.languages, options=parsed.options)
    )
    return extract_json(result, service.info), 200, {"X-Cache": "hit" if cached else "miss"}


def register(app) -> None:
    app.register_blueprint(bp)
    openapi.add_paths(app, openapi_rest.FRAGMENT)
