"""The result cache: the LRU itself (bounds, TTL with a fake clock), and through the app
(a repeated image is answered from the cache without touching the service; errors and
other languages are not)."""

from __future__ import annotations

import pytest

from actors.messages import OcrResult, Region, Timings
from tests.support.config import with_changes
from tests.support.images import b64, text_image
from tests.support.server import fast, words_of
from web.app import create_app, get_state
from web.cache import ResultCache, cache_key, estimate_size
from web.config import CacheConfig


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_cache(**kw) -> tuple[ResultCache, FakeClock]:
    clock = FakeClock()
    kw.setdefault("sizer", lambda v: 10)
    return ResultCache(clock=clock, **kw), clock


# -- the data structure -------------------------------------------------------------------


def test_key_names_content_and_languages():
    a = cache_key(b"image", ("en",))
    assert a == cache_key(b"image", ["en"])  # content, not identity
    assert a != cache_key(b"image!", ("en",))
    assert a != cache_key(b"image", ("zh",))
    assert a != cache_key(b"image", ("en", "zh"))
    assert cache_key(b"image", ()) != a
    # No ambiguity between the image bytes and the languages part.
    assert cache_key(b"ab", ("c",)) != cache_key(b"a", ("bc",))


def test_get_put_and_counts():
    cache, _ = make_cache(max_entries=4)
    assert cache.get("a") is None
    assert cache.put("a", "A")
    assert cache.get("a") == "A"
    s = cache.stats()
    assert (s.entries, s.bytes, s.hits, s.misses, s.evictions) == (1, 10, 1, 1, 0)
    assert cache.put("a", "A2")  # replacing does not double-count memory
    assert cache.stats().bytes == 10 and cache.get("a") == "A2"


def test_least_recently_used_is_evicted_first():
    cache, _ = make_cache(max_entries=3)
    for k in "abc":
        cache.put(k, k.upper())
    assert cache.get("a") == "A"  # a is now the most recently used
    cache.put("d", "D")
    assert "b" not in cache
    assert all(k in cache for k in "acd")
    assert cache.stats().evictions == 1
    assert len(cache) == 3


def test_memory_bound():
    sizes = {"small": 30, "big": 70, "huge": 101}
    cache, _ = make_cache(max_entries=100, max_bytes=100, sizer=lambda v: sizes[v])
    cache.put("1", "small")
    cache.put("2", "small")
    cache.put("3", "small")
    assert cache.stats().bytes == 90
    cache.put("4", "big")  # needs 70: evicts the two oldest
    s = cache.stats()
    assert s.bytes == 100 and s.entries == 2 and s.evictions == 2
    assert "3" in cache and "4" in cache
    assert not cache.put("5", "huge")  # larger than the whole cache: not stored ...
    assert "3" in cache and "4" in cache  # ... and nothing evicted for it
    assert cache.stats().bytes <= cache.max_bytes


def test_ttl_expires_entries():
    cache, clock = make_cache(ttl_s=60)
    cache.put("a", "A")
    clock.now += 59.9
    assert cache.get("a") == "A"
    clock.now += 0.1
    assert cache.get("a") is None
    s = cache.stats()
    assert (s.entries, s.bytes, s.expirations, s.misses, s.hits) == (0, 0, 1, 1, 1)


def test_stats_sweep_stale_entries_behind_fresh_ones():
    cache, clock = make_cache(ttl_s=10, max_entries=10)
    cache.put("old", 1)
    clock.now += 5
    cache.put("new", 2)
    assert cache.get("old") == 1  # "old" moves behind "new" in use order
    clock.now += 6  # "old" is 11 s old, "new" 6 s
    s = cache.stats()
    assert s.entries == 1 and s.expirations == 1
    assert "new" in cache and "old" not in cache


def test_disabled_cache_stores_and_counts_nothing():
    cache, _ = make_cache(enabled=False)
    assert not cache.put("a", "A")
    assert cache.get("a") is None
    s = cache.stats()
    assert (s.enabled, s.entries, s.hits, s.misses) == (False, 0, 0, 0)


def test_from_config_converts_megabytes():
    cache = ResultCache.from_config(CacheConfig(enabled=True, max_entries=7, max_mb=1.5, ttl_s=3))
    s = cache.stats()
    assert (s.enabled, s.max_entries, s.max_bytes, s.ttl_s) == (True, 7, int(1.5 * 2**20), 3.0)
    assert not ResultCache.from_config(CacheConfig()).enabled  # off by default


def test_estimated_size_grows_with_the_result():
    def result(n: int) -> OcrResult:
        regions = tuple(
            Region(f"line {i} " * 10, 0.9, ((0, 0), (1, 0), (1, 1), (0, 1))) for i in range(n)
        )
        texts = tuple(r.text for r in regions)
        return OcrResult(" ".join(texts), regions, ("en",), "en", Timings(), (100, 100),
                         lines=texts)

    small, large = estimate_size(result(1)), estimate_size(result(50))
    assert large > small * 10
    assert large > len(result(50).text) * 2  # regions, lines and full text


# -- through the app -----------------------------------------------------------------------


@pytest.fixture
def image() -> bytes:
    return text_image(["HELLO WORLD", "ORANGE GARDEN"])


async def _post(client, image: bytes, languages=("en",)):
    body = {"image": b64(image), "languages": list(languages)}
    r = await client.post("/v1/ocr/extract", json=body)
    return r, await r.get_json()


async def test_repeated_image_is_served_from_the_cache(config, image):
    app = create_app(fast(with_changes(config, cache={"enabled": True})))
    async with app.test_app() as test_app:
        client = test_app.test_client()
        first, body1 = await _post(client, image)
        assert first.status_code == 200 and first.headers["X-Cache"] == "miss"
        assert words_of(body1["text"]) == ["HELLO", "WORLD", "ORANGE", "GARDEN"]
        second, body2 = await _post(client, image)
        assert second.status_code == 200 and second.headers["X-Cache"] == "hit"
        assert body2 == body1
        # The hit never reached the service.
        assert get_state(app).service.statistics().requests_admitted == 1

        stats = await (await client.get("/cache/stats")).get_json()
        assert stats["enabled"] is True
        counts = (stats["entries"], stats["hits"], stats["misses"], stats["evictions"])
        assert counts == (1, 1, 1, 0)
        assert stats["bytes"] > len(body1["text"])

        # Another language is another result: a miss, computed by the service.
        third, _ = await _post(client, image, ("zh",))
        assert third.status_code == 200 and third.headers["X-Cache"] == "miss"
        assert get_state(app).service.statistics().requests_admitted == 2


async def test_errors_are_not_cached(config, image):
    app = create_app(fast(with_changes(
        config, cache={"enabled": True}, ocr={"unknown_language": "reject"})))
    async with app.test_app() as test_app:
        client = test_app.test_client()
        for _ in range(2):
            r, body = await _post(client, b"not an image")
            assert r.status_code == 400 and body["success"] is False
        for _ in range(2):
            r, body = await _post(client, image, ("xx",))
            assert r.status_code == 422
        stats = await (await client.get("/cache/stats")).get_json()
        assert stats["entries"] == 0 and stats["hits"] == 0


async def test_cache_is_off_by_default(config, image):
    app = create_app(fast(config))
    async with app.test_app() as test_app:
        client = test_app.test_client()
        for _ in range(2):
            r, _ = await _post(client, image)
            assert r.headers["X-Cache"] == "miss"
        stats = await (await client.get("/cache/stats")).get_json()
        assert stats["enabled"] is False and stats["entries"] == 0
        assert get_state(app).service.statistics().requests_admitted == 2


async def test_small_cache_evicts_through_the_app(config):
    app = create_app(fast(with_changes(config, cache={"enabled": True, "max_entries": 1})))
    a, b = text_image(["HELLO"]), text_image(["WORLD"])
    async with app.test_app() as test_app:
        client = test_app.test_client()
        for img in (a, b, a):
            r, _ = await _post(client, img)
            assert r.headers["X-Cache"] == "miss"
        stats = await (await client.get("/cache/stats")).get_json()
        assert (stats["entries"], stats["evictions"], stats["misses"]) == (1, 2, 3)

