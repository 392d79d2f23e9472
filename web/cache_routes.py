"""The optional result cache, as the web layer uses it, and ``GET /cache/stats``.

The cache itself (:mod:`web.cache`) is a plain LRU; this module decides what goes in:
only successful results, keyed by the image bytes, the languages asked for and, when they
are not the defaults, how a document is to be read (``pages``, ``dpi``, ``pdf_text``). Errors are
never cached, so a transient device fault is not replayed to the next client. A hit skips
the service entirely (no admission slot, no NPU time), which is the point of the cache.
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint, current_app
from quart_trio import QuartTrio

from actors.messages import OcrRequest, OcrResult
from actors.service import OcrService

from . import openapi
from .app import AppState, get_state
from .cache import ResultCache, cache_key
from .openapi import operator as openapi_operator
from .settings import Config

bp = Blueprint("cache", __name__)


async def extract_with_cache(
    state: AppState, service: OcrService, request: OcrRequest
) -> tuple[OcrResult, bool]:
    """``service.extract(request)``, through the app's cache when it is on.
    Returns the result and whether it came from the cache."""
    cache = state.cache
    if cache is None or not cache.enabled:
        return await service.extract(request), False
    key = cache_key(request.image, request.languages, request.options.cache_tag())
    hit = cache.get(key)
    if hit is not None:
        if state.metrics is not None:
            state.metrics.observe_result(hit, cached=True)
        return hit, True
    result = await service.extract(request)
    cache.put(key, result)
    return result, False


@bp.get("/cache/stats")
async def cache_stats() -> dict[str, Any]:
    cache = get_state(current_app).cache
    assert cache is not None  # set up with the route
    stats = cache.stats().as_dict()
    # The original service's name for the number of entries (its clients read it).
    return {**stats, "items_cached": stats["entries"]}


def register(app: QuartTrio, config: Config) -> ResultCache[OcrResult]:
    """Create the app's cache from ``config.cache`` and serve its statistics."""
    cache: ResultCache[OcrResult] = ResultCache.from_config(config.cache)
    app.register_blueprint(bp)
    openapi.add_paths(app, openapi_operator.CACHE)
    return cache
