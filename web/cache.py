"""An optional in-memory LRU cache of OCR results, keyed by the image bytes and languages.

Why it exists: clients at the edge often send the same image again (a camera that has not
moved, a retrying client, a dashboard that polls). Recognising it again costs the NPU
time that other requests could use, so an operator can turn this on (``cache.enabled``).
It is off by default because it holds recognised text in memory, which is not always
acceptable, and because most workloads never repeat an image.

The cache is bounded three ways: entry count (``max_entries``), approximate memory
(``max_mb``) and age (``ttl_s``). It is a plain data structure: no locks and no Trio,
because it is only used from the Trio thread, where nothing runs concurrently between
awaits. The clock is injectable so TTL behaviour is tested without sleeping.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

import attrs

from .config import CacheConfig

V = TypeVar("V")


def cache_key(image: bytes, languages: Iterable[str], options: str = "") -> str:
    """A key naming the image *content*, the languages asked for and ``options`` (how a
    document is read: ``DocumentOptions.cache_tag``, "" for the defaults).

    SHA-256 rather than a cheaper hash: the key is all that stands between one client's
    image and another client's text, so a collision must be infeasible, not just unlikely.
    The languages are part of the key because the same image read with another model is
    another result.
    """
    h = hashlib.sha256()
    h.update(image)
    h.update(b"\x00languages:")
    h.update(",".join(languages).encode("utf-8"))
    if options:
        h.update(b"\x00options:" + options.encode("utf-8"))
    return h.hexdigest()


def estimate_size(value: Any) -> int:
    """Approximate bytes a cached value holds, walking attrs objects, containers and
    strings. An estimate is enough: it is only used to keep the cache near ``max_mb``."""
    seen: set[int] = set()

    def walk(v: Any) -> int:
        if id(v) in seen:
            return 0
        seen.add(id(v))
        size = sys.getsizeof(v)
        if isinstance(v, str | bytes | int | float | bool) or v is None:
            return size
        if isinstance(v, dict):
            return size + sum(walk(k) + walk(x) for k, x in v.items())
        if isinstance(v, list | tuple | set | frozenset):
            return size + sum(walk(x) for x in v)
        if attrs.has(type(v)):
            return size + sum(walk(getattr(v, f.name)) for f in attrs.fields(type(v)))
        return size

    return walk(value)


@attrs.frozen
class CacheStats:
    """A snapshot of the cache, as ``GET /cache/stats`` reports it."""

    enabled: bool
    entries: int
    bytes: int
    max_entries: int
    max_bytes: int
    ttl_s: float
    hits: int
    misses: int
    evictions: int  # removed to make room (count or memory bound)
    expirations: int  # removed because older than ttl_s

    def as_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.define
class _Entry(Generic[V]):
    value: V
    size: int
    stored_at: float


class ResultCache(Generic[V]):
    """Least-recently-used cache with entry, memory and age bounds.

    A disabled cache (``enabled=False``) stores nothing and counts nothing, so callers
    can use it unconditionally.
    """

    def __init__(
        self, *, enabled: bool = True, max_entries: int = 256, max_bytes: int = 64 * 2**20,
        ttl_s: float = 600.0, clock: Callable[[], float] = time.monotonic,
        sizer: Callable[[Any], int] = estimate_size,
    ) -> None:
        self.enabled = enabled and max_entries > 0 and max_bytes > 0
        self.max_entries = max(0, int(max_entries))
        self.max_bytes = max(0, int(max_bytes))
        self.ttl_s = float(ttl_s)
        self._clock = clock
        self._sizer = sizer
        self._entries: OrderedDict[str, _Entry[V]] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.expirations = 0

    @classmethod
    def from_config(
        cls, config: CacheConfig, clock: Callable[[], float] = time.monotonic
    ) -> ResultCache[Any]:
        return cls(
            enabled=config.enabled, max_entries=config.max_entries,
            max_bytes=int(config.max_mb * 2**20), ttl_s=config.ttl_s, clock=clock,
        )

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        entry = self._entries.get(key)
        return entry is not None and not self._expired(entry, self._clock())

    def _expired(self, entry: _Entry[V], now: float) -> bool:
        return self.ttl_s > 0 and now - entry.stored_at >= self.ttl_s

    def _remove(self, key: str) -> None:
        entry = self._entries.pop(key)
        self._bytes -= entry.size

    def get(self, key: str) -> V | None:
        """The value stored under ``key`` (now the most recently used), or None."""
        if not self.enabled:
            return None
        entry = self._entries.get(key)
        if entry is not None and self._expired(entry, self._clock()):
            self._remove(key)
            self.expirations += 1
            entry = None
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry.value

    def put(self, key: str, value: V) -> bool:
        """Store ``value``; returns False when it was not stored (cache disabled, or the
        value alone is larger than the memory bound)."""
        if not self.enabled:
            return False
        size = self._sizer(value)
        if size > self.max_bytes:
            return False
        if key in self._entries:
            self._remove(key)
        self._entries[key] = _Entry(value, size, self._clock())
        self._bytes += size
        self._purge_expired()
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            oldest = next(iter(self._entries))
            self._remove(oldest)
            self.evictions += 1
        return True

    def _purge_expired(self, *, full: bool = False) -> None:
        """Drop expired entries. Entries are in use order, not storage order, so a stale
        entry can sit behind a fresh one that was read recently; ``put`` only trims from
        the old end (cheap, and ``get`` catches the rest), ``stats`` sweeps everything so
        the numbers it reports are exact."""
        if self.ttl_s <= 0:
            return
        now = self._clock()
        if full:
            stale = [k for k, e in self._entries.items() if self._expired(e, now)]
        else:
            stale = []
            for k, e in self._entries.items():
                if not self._expired(e, now):
                    break
                stale.append(k)
        for key in stale:
            self._remove(key)
            self.expirations += 1

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0

    def stats(self) -> CacheStats:
        self._purge_expired(full=True)
        return CacheStats(
            enabled=self.enabled, entries=len(self._entries), bytes=self._bytes,
            max_entries=self.max_entries, max_bytes=self.max_bytes, ttl_s=self.ttl_s,
            hits=self.hits, misses=self.misses, evictions=self.evictions,
            expirations=self.expirations,
        )
