"""Prometheus metrics: what /metrics reports after real requests, that each app has its own
registry, that the actors' numbers are read at scrape time, and that the README lists
every metric the service exposes."""

from __future__ import annotations

import json
import re

import trio
from prometheus_client.parser import text_string_to_metric_families

from actors.messages import OcrResult, Region, Timings
from npu.errors import DeviceFault
from tests.support.config import with_changes
from tests.support.images import b64, data_uri, text_image
from tests.support.paths import REPO
from tests.support.server import ControlledBackend, fast
from web.app import create_app
from web.metrics import Metrics, _histogram_from_counts

README = REPO / "README.md"


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of an exposition."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


async def scrape(client) -> dict:
    r = await client.get("/metrics")
    assert r.status_code == 200
    assert r.mimetype == "text/plain"
    return parse((await r.get_data()).decode())


def _result(n: int = 2) -> OcrResult:
    regions = tuple(Region("x", 0.9, ((0, 0), (1, 0), (1, 1), (0, 1))) for _ in range(n))
    return OcrResult("x x", regions, ("en",), "en", Timings(2.0, 30.0, 40.0, 75.0), (10, 10),
                     lines=("x", "x"))


# -- units ----------------------------------------------------------------------------------


def test_histogram_from_exact_counts():
    h = _histogram_from_counts("h", "doc", {1: 2, 5: 1, 8: 3}, (1, 4, 8, 16))
    buckets = {s.labels["le"]: s.value for s in h.samples if s.name == "h_bucket"}
    assert buckets == {"1.0": 2, "4.0": 2, "8.0": 6, "16.0": 6, "+Inf": 6}
    sums = {s.name: s.value for s in h.samples if not s.name.endswith("_bucket")}
    assert sums["h_count"] == 6 and sums["h_sum"] == 2 * 1 + 5 + 3 * 8


def test_each_metrics_object_has_its_own_registry():
    a, b = Metrics(), Metrics()  # would raise "Duplicated timeseries" on a shared registry
    a.observe_result(_result())
    a.observe_request("/x", "GET", 200, 0.01)
    sa, sb = parse(a.render()[0].decode()), parse(b.render()[0].decode())
    assert value(sa, "hailo_ocr_stage_duration_seconds_count", stage="total") == 1
    assert value(sb, "hailo_ocr_stage_duration_seconds_count", stage="total") == 0
    assert value(sa, "hailo_ocr_http_requests_total", route="/x", method="GET", status="200") == 1
    assert ("hailo_ocr_http_requests_total",
            (("method", "GET"), ("route", "/x"), ("status", "200"))) not in sb


def test_stage_latencies_come_from_the_result_timings():
    m = Metrics()
    m.observe_result(_result(3))
    m.observe_result(_result(3), cached=True)  # a cache hit did no stage work
    s = parse(m.render()[0].decode())
    for stage, seconds in (("decode", 0.002), ("detection", 0.03), ("recognition", 0.04),
                           ("total", 0.075)):
        assert value(s, "hailo_ocr_stage_duration_seconds_count", stage=stage) == 1
        assert abs(value(s, "hailo_ocr_stage_duration_seconds_sum", stage=stage) - seconds) < 1e-9
    assert value(s, "hailo_ocr_images_total", source="computed") == 1
    assert value(s, "hailo_ocr_images_total", source="cache") == 1
    assert value(s, "hailo_ocr_regions_per_image_sum") == 6


# -- through the app ---------------------------------------------------------------------


async def _stream_one(client, image: str) -> dict:
    async with client.websocket("/v1/ocr/stream") as ws:
        await ws.send(json.dumps({"id": 1, "image": image, "languages": ["en"]}))
        while True:
            event = json.loads(await ws.receive())
            if event["type"] in ("done", "error"):
                return event


async def test_metrics_after_real_requests(config):
    app = create_app(fast(with_changes(config, cache={"enabled": True})))
    image = text_image(["HELLO WORLD", "ORANGE GARDEN", "SILVER RIVER"])
    async with app.test_app() as test_app:
        client = test_app.test_client()
        before = await scrape(client)
        assert value(before, "hailo_ocr_ready") == 1
        assert value(before, "hailo_ocr_stage_duration_seconds_count", stage="total") == 0

        body = {"image": b64(image), "languages": ["en"]}
        assert (await client.post("/v1/ocr/extract", json=body)).status_code == 200
        assert (await client.post("/v1/ocr/extract", json=body)).status_code == 200  # cached
        bad = {"image": b64(b"nope"), "languages": ["en"]}
        assert (await client.post("/v1/ocr/extract", json=bad)).status_code == 400
        assert (await client.get("/no/such/route")).status_code == 404
        done = await _stream_one(client, data_uri(image))
        assert done["type"] == "done"

        s = await scrape(client)

    req = "hailo_ocr_http_requests_total"
    assert value(s, req, route="/v1/ocr/extract", method="POST", status="200") == 2
    assert value(s, req, route="/v1/ocr/extract", method="POST", status="400") == 1
    assert value(s, req, route="<unmatched>", method="GET", status="404") == 1
    assert value(s, req, route="/metrics", method="GET", status="200") == 1  # the first scrape
    lat = "hailo_ocr_http_request_duration_seconds"
    assert value(s, lat + "_count", route="/v1/ocr/extract") == 3
    assert value(s, lat + "_sum", route="/v1/ocr/extract") > 0
    assert value(s, "hailo_ocr_websocket_connections_total", route="/v1/ocr/stream") == 1

    # Two images really computed (REST miss + websocket), one served from the cache.
    for stage in ("decode", "detection", "recognition", "total"):
        assert value(s, "hailo_ocr_stage_duration_seconds_count", stage=stage) == 2, stage
    assert value(s, "hailo_ocr_stage_duration_seconds_sum", stage="total") >= value(
        s, "hailo_ocr_stage_duration_seconds_sum", stage="detection")
    assert value(s, "hailo_ocr_images_total", source="computed") == 2
    assert value(s, "hailo_ocr_images_total", source="cache") == 1
    assert value(s, "hailo_ocr_regions_per_image_sum") == 9

    # Read from the actors' statistics at scrape time.
    # The REST miss, the undecodable image (decoding happens inside the service) and
    # the websocket image; the cache hit never reached the service.
    assert value(s, "hailo_ocr_requests_admitted_total") == 3
    assert value(s, "hailo_ocr_requests_failed_total") == 1
    assert value(s, "hailo_ocr_requests_in_flight") == 0
    batches = value(s, "hailo_ocr_rec_batches_total")
    assert batches >= 2
    assert value(s, "hailo_ocr_rec_batch_size_count") == batches
    assert value(s, "hailo_ocr_rec_batch_size_sum") == value(s, "hailo_ocr_rec_slots_filled_total")
    assert value(s, "hailo_ocr_rec_slots_filled_total") == 6
    fill = value(s, "hailo_ocr_rec_batch_fill_ratio")
    assert 0 < fill <= 1
    assert fill == value(s, "hailo_ocr_rec_slots_filled_total") / value(
        s, "hailo_ocr_rec_slots_run_total")
    assert value(s, "hailo_ocr_rec_queued_crops") == 0
    assert value(s, "hailo_ocr_device_jobs_total", device="cpu", result="run") >= 2 + batches
    assert value(s, "hailo_ocr_device_busy_seconds_total", device="cpu") > 0
    assert value(s, "hailo_ocr_device_restarts_total", device="cpu") == 0
    info = [dict(labels) for name, labels in s if name == "hailo_ocr_backend_info"]
    assert len(info) == 1 and info[0]["backend"] == "onnx" and info[0]["device"] == ""
    assert "onnxruntime" in info[0]["runtime_version"]
    # The cache, read at scrape time too.
    assert value(s, "hailo_ocr_cache_enabled") == 1
    assert value(s, "hailo_ocr_cache_hits_total") == 1
    assert value(s, "hailo_ocr_cache_misses_total") == 2  # the first image and the bad one
    assert value(s, "hailo_ocr_cache_entries") == 1


async def test_device_restarts_are_counted(config):
    made: list[ControlledBackend] = []
    cfg = fast(config, backend={"restart_backoff_s": 0.01, "restart_backoff_max_s": 0.05})

    def make_backend(_ids) -> ControlledBackend:
        # The first backend faults on its first call; the restarted one is healthy.
        b = ControlledBackend(cfg, fail_next=DeviceFault("simulated fault") if not made else None)
        made.append(b)
        return b

    app = create_app(cfg, {"cpu": make_backend})
    body = {"image": b64(text_image(["HELLO"])), "languages": ["en"]}
    async with app.test_app() as test_app:
        client = test_app.test_client()
        r = await client.post("/v1/ocr/extract", json=body)
        assert r.status_code == 503
        with trio.fail_after(20):
            while True:
                s = await scrape(client)
                if value(s, "hailo_ocr_ready") == 1:
                    break
                await trio.sleep(0.02)
        assert value(s, "hailo_ocr_device_restarts_total", device="cpu") == 1
        assert value(s, "hailo_ocr_device_jobs_total", device="cpu", result="failed") >= 1
        assert (await client.post("/v1/ocr/extract", json=body)).status_code == 200
    assert len(made) == 2


async def test_metrics_need_the_token_when_one_is_set(config):
    app = create_app(with_changes(config, server={"auth_token": "tok"}))
    async with app.test_app() as test_app:
        client = test_app.test_client()
        assert (await client.get("/metrics")).status_code == 401
        r = await client.get("/metrics", headers={"Authorization": "Bearer tok"})
        assert r.status_code == 200
        s = parse((await r.get_data()).decode())
        # The refused scrape was counted too.
        assert value(s, "hailo_ocr_http_requests_total", route="/metrics", method="GET",
                     status="401") == 1


async def test_readme_lists_every_metric(config):
    """Every metric family the service exposes is in the README's `## Metrics` section,
    and the section names none that do not exist."""
    text = README.read_text()
    match = re.search(r"^## Metrics\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, "README.md needs a '## Metrics' section"
    documented = {re.sub(r"_total$", "", n) for n in re.findall(r"`(hailo_ocr_\w+)", match[1])}

    app = create_app(fast(with_changes(config, cache={"enabled": True})))
    async with app.test_app() as test_app:
        r = await test_app.test_client().get("/metrics")
        exposed = {
            f.name for f in text_string_to_metric_families((await r.get_data()).decode())
            # (prometheus_client's parser reports pre-created label sets' `_created`
            # timestamps as families of their own; they are not metrics of ours.)
            if f.name.startswith("hailo_ocr_") and not f.name.endswith("_created")
        }
    assert exposed - documented == set(), "exposed but not in the README"
    assert documented - exposed == set(), "in the README but not exposed"
