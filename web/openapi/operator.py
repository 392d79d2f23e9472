"""The operator's routes: Prometheus metrics (:mod:`web.metrics`) and the result cache's
statistics (:mod:`web.cache_routes`)."""

from __future__ import annotations

from typing import Final

from .errors import UNAUTHORIZED
from .fragment import JSON, Fragment

METRICS: Final = Fragment(paths={
    "/metrics": {
        "get": {
            "summary": "Prometheus metrics (text exposition format)",
            "operationId": "metrics",
            "responses": {
                "200": {
                    "description": "Metrics.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                "401": UNAUTHORIZED,
            },
        },
    },
})

CACHE: Final = Fragment(paths={
    "/cache/stats": {
        "get": {
            "summary": "Result cache statistics",
            "operationId": "cache_stats",
            "responses": {
                "200": {
                    "description": "Hits, misses, entries and size.",
                    "content": {JSON: {"schema": {
                        "type": "object",
                        "required": ["enabled", "entries", "items_cached"],
                        "properties": {
                            "enabled": {"type": "boolean"},
                            "entries": {"type": "integer"},
                            "items_cached": {
                                "type": "integer",
                                "description": "Same as entries (the original's name).",
                            },
                            "bytes": {"type": "integer"},
                            "max_entries": {"type": "integer"},
                            "max_bytes": {"type": "integer"},
                            "ttl_s": {"type": "number"},
                            "hits": {"type": "integer"},
                            "misses": {"type": "integer"},
                            "evictions": {"type": "integer"},
                            "expirations": {"type": "integer"},
                        },
                    }}},
                },
                "401": UNAUTHORIZED,
            },
        },
    },
})
