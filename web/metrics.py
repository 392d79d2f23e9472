"""Prometheus metrics at ``GET /metrics``.

Two kinds of numbers, gathered two ways:

* Things the *web layer* sees happen (a request answered, a websocket opened, an OCR
  result produced) are observed as they happen into counters and histograms: requests by
  route and status, request latency, and the per-stage latencies of each result
  (``OcrResult.timings``: decode, detection, recognition, total).
* Things the *actors* own (queue depths, batch fill, device busy time, restarts) are not
  copied anywhere: a custom collector reads ``service.statistics()`` snapshots when
  Prometheus scrapes, so there is no second bookkeeping to drift, and no hook inside the
  batcher or NPU owner on their hot paths. The result cache is read the same way.

Each app gets its own :class:`~prometheus_client.CollectorRegistry` (never the global
one), so tests can build many apps in one process without "duplicated timeseries" errors
and one app's numbers never leak into another's.

Route labels use the URL *rule* (``/v1/ocr/extract``), not the path a client sent, so a
client probing random paths cannot grow the label set without bound; those all count as
``<unmatched>``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client import Gauge as _Gauge
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from quart_trio import QuartTrio

from actors.messages import PAGE_SOURCES, OcrResult
from actors.service import OcrService

from . import openapi
from .cache import CacheStats, ResultCache
from .openapi import operator as openapi_operator

#: Where the scrape finds the service (None before it starts) and the result cache.
GetService = Callable[[], OcrService | None]
GetCache = Callable[[], ResultCache[OcrResult] | None]

PREFIX = "hailo_ocr"

#: Request latency buckets (seconds): OCR requests take tens of milliseconds on an NPU and
#: up to seconds on a loaded CPU, health checks take microseconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0)
#: Recognition batch sizes (crops per device call); the models' batch sizes are 1-32.
BATCH_SIZE_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)
REGION_BUCKETS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
STAGES = ("decode", "detection", "recognition", "total")


class ServiceCollector(Collector):
    """Reads the actor tree's and the cache's snapshots at scrape time."""

    def __init__(self, get_service: GetService, get_cache: GetCache) -> None:
        self._get_service = get_service
        self._get_cache = get_cache

    def describe(self) -> list[Metric]:
        # Returning nothing keeps the registry from calling collect() at registration
        # time, when the service usually does not exist yet.
        return []

    def collect(self) -> Iterator[Metric]:
        service = self._get_service()
        ready = GaugeMetricFamily(
            f"{PREFIX}_ready", "1 when the models are loaded and requests are admitted."
        )
        ready.add_metric([], 1.0 if service is not None and service.ready else 0.0)
        yield ready
        if service is not None:
            yield from self._service_metrics(service)
        cache = self._get_cache()
        if cache is not None:
            yield from self._cache_metrics(cache.stats())

    def _service_metrics(self, service: OcrService) -> Iterator[Metric]:
        s = service.statistics()
        info = service.info
        fam = GaugeMetricFamily(
            f"{PREFIX}_backend_info", "The inference backend in use (value is always 1).",
            labels=["backend", "device", "runtime_version"],
        )
        fam.add_metric([str(info.kind), str(info.device or ""), str(info.runtime_version)], 1.0)
        yield fam

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"{PREFIX}_{name}", doc, value=float(value))

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(f"{PREFIX}_{name}", doc, value=float(value))

        # Requests, as the service's admission control sees them.
        yield gauge("requests_in_flight", "OCR requests being processed now.", s.requests_in_flight)
        yield counter("requests_admitted", "OCR requests admitted.", s.requests_admitted)
        yield counter(
            "requests_refused", "OCR requests refused because too many were in flight (429).",
            s.requests_refused,
        )
        yield counter(
            "requests_failed", "Admitted OCR requests that ended in an error.", s.requests_failed
        )
        yield counter(
            "requests_timed_out", "OCR requests that outlived server.request_timeout_s (504).",
            s.requests_timed_out,
        )
        # The device owners, one series per device ("npu", "cpu": npu.placement).
        devices = s.devices.items()
        jobs = CounterMetricFamily(
            f"{PREFIX}_device_jobs", "Device calls by device and result: run, failed, skipped "
            "(the caller left before the call started) or refused (the device was restarting).",
            labels=["device", "result"],
        )
        for name, d in devices:
            jobs.add_metric([name, "run"], float(d.jobs_run))
            jobs.add_metric([name, "failed"], float(d.jobs_failed))
            jobs.add_metric([name, "skipped"], float(d.jobs_skipped))
            jobs.add_metric([name, "refused"], float(d.jobs_refused))
        yield jobs
        for metric, kind, doc, attr in (
            ("device_ready", GaugeMetricFamily,
             "1 when the device's owner has its models loaded (0 while it restarts).", "ready"),
            ("device_jobs_in_flight", GaugeMetricFamily, "Device calls running now.",
             "jobs_in_flight"),
            ("device_busy_seconds", CounterMetricFamily,
             "Seconds the device spent running calls.", "busy_seconds"),
            ("device_restarts", CounterMetricFamily,
             "Times the device's backend was reloaded after a fault.", "restarts"),
        ):
            fam = kind(f"{PREFIX}_{metric}", doc, labels=["device"])
            for name, d in devices:
                fam.add_metric([name], float(getattr(d, attr)))
            yield fam
        # The recognition batcher.
        b = s.batcher
        yield counter("rec_batches", "Recognition batches run on the device.", b.batches)
        yield counter(
            "rec_slots_filled", "Crops recognised (batch slots holding a real crop).",
            b.slots_filled,
        )
        yield counter(
            "rec_slots_run", "Batch capacity used (batches x the model's batch size).", b.slots_run
        )
        yield counter(
            "rec_slots_padded", "Blank frames sent to fill fixed-size batches.", b.slots_padded
        )
        yield gauge(
            "rec_batch_fill_ratio",
            "Crops recognised / batch capacity used, since start (1 = every batch was full).",
            b.fill,
        )
        yield counter(
            "rec_crops_dropped", "Queued crops dropped because their request went away.",
            b.crops_dropped,
        )
        yield gauge("rec_queued_crops", "Crops waiting in the batcher's queues.", b.queued)
        yield gauge(
            "rec_batches_in_flight", "Recognition batches sent to the device, not yet answered.",
            b.batches_in_flight,
        )
        yield counter(
            "rec_queue_wait_seconds", "Total time crops waited in the batcher before their batch.",
            b.queue_wait_total_s,
        )
        yield gauge(
            "rec_queue_wait_max_seconds", "Longest any crop waited in the batcher.",
            b.queue_wait_max_s,
        )
        yield _histogram_from_counts(
            f"{PREFIX}_rec_batch_size", "Real crops per recognition batch.", b.batch_sizes,
            BATCH_SIZE_BUCKETS,
        )

    def _cache_metrics(self, c: CacheStats) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            f"{PREFIX}_cache_enabled", "1 when the result cache is on.", value=float(c.enabled)
        )
        yield GaugeMetricFamily(f"{PREFIX}_cache_entries", "Results cached.", value=c.entries)
        yield GaugeMetricFamily(
            f"{PREFIX}_cache_bytes", "Approximate memory the cached results hold.", value=c.bytes
        )
        for name, doc, value in (
            ("hits", "Requests answered from the cache.", c.hits),
            ("misses", "Cache look-ups that found nothing.", c.misses),
            ("evictions", "Results dropped to stay within max_entries / max_mb.", c.evictions),
            ("expirations", "Results dropped for being older than ttl_s.", c.expirations),
        ):
            yield CounterMetricFamily(f"{PREFIX}_cache_{name}", doc, value=float(value))


def _histogram_from_counts(
    name: str, doc: str, counts: Mapping[int, int], buckets: tuple[float, ...]
) -> HistogramMetricFamily:
    """A Prometheus histogram from exact ``{value: how many times}`` counts."""
    cumulative = []
    for le in buckets:
        cumulative.append((_fmt(le), float(sum(n for v, n in counts.items() if v <= le))))
    total = float(sum(counts.values()))
    cumulative.append(("+Inf", total))
    return HistogramMetricFamily(
        name, doc, buckets=cumulative, sum_value=float(sum(v * n for v, n in counts.items())),
    )


def _fmt(le: float) -> str:
    return repr(float(le))


class Metrics:
    """One app's metrics: the registry, the observed series, and the scrape collector."""

    def __init__(
        self, get_service: GetService = lambda: None, get_cache: GetCache = lambda: None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http_requests = Counter(
            f"{PREFIX}_http_requests", "HTTP requests answered, by route, method and status.",
            ["route", "method", "status"], registry=r,
        )
        self.http_latency = Histogram(
            f"{PREFIX}_http_request_duration_seconds",
            "Time from receiving an HTTP request to its response, by route.",
            ["route"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.ws_connections = Counter(
            f"{PREFIX}_websocket_connections", "Websocket connections accepted, by route.",
            ["route"], registry=r,
        )
        self.ws_open = _Gauge(
            f"{PREFIX}_websocket_connections_open", "Websocket connections open now.", registry=r,
        )
        self.stage_latency = Histogram(
            f"{PREFIX}_stage_duration_seconds",
            "Time each OCR stage took per image (decode, detection, recognition, total), "
            "from the results' own timings; cache hits are not counted.",
            ["stage"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.images = Counter(
            f"{PREFIX}_images", "Images read to a result, by how: 'computed' or 'cache'.",
            ["source"], registry=r,
        )
        self.regions = Histogram(
            f"{PREFIX}_regions_per_image", "Text lines returned per image (per page of a "
            "document).", buckets=REGION_BUCKETS, registry=r,
        )
        self.pages = Counter(
            f"{PREFIX}_document_pages", "Pages of PDF and multi-page TIFF documents read, by "
            "how: 'ocr', 'text_layer' (the PDF's own text) or 'failed' (that page's own "
            "error); cache hits are not counted.", ["source"], registry=r,
        )
        # Pre-create the label sets so every series exists (as 0) from the first scrape;
        # a rate() over a series that appears later misses its first increments.
        for stage in STAGES:
            self.stage_latency.labels(stage)
        for source in ("computed", "cache"):
            self.images.labels(source)
        for source in (*PAGE_SOURCES, "failed"):
            self.pages.labels(source)
        r.register(ServiceCollector(get_service, get_cache))

    # -- observing -----------------------------------------------------------------------
    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.http_requests.labels(route, method, str(status)).inc()
        self.http_latency.labels(route).observe(max(0.0, seconds))

    def observe_result(self, result: OcrResult, *, cached: bool = False) -> None:
        """Count one OCR result; its stage timings only when it was really computed. A
        document's pages count as images do for regions and stage times (each page read
        by OCR once; ``total`` is the whole request's)."""
        self.images.labels("cache" if cached else "computed").inc()
        read = [p for p in result.pages if p.error is None]
        for count in ([len(p.regions) for p in read] if result.pages else [len(result.regions)]):
            self.regions.observe(count)
        if cached:
            return
        for page in result.pages:
            self.pages.labels("failed" if page.error is not None else page.source).inc()
        stages = [p.timings for p in read if p.source == "ocr"] if result.pages else [
            result.timings]
        for t in stages:
            for stage, ms in zip(STAGES[:3], (t.decode_ms, t.detection_ms, t.recognition_ms),
                                 strict=True):
                self.stage_latency.labels(stage).observe(max(0.0, ms) / 1000.0)
        self.stage_latency.labels("total").observe(max(0.0, result.timings.total_ms) / 1000.0)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _route_label() -> str:
    from quart import has_request_context, has_websocket_context, request, websocket

    if has_request_context():
        ctx_obj: Any = request
    elif has_websocket_context():
        ctx_obj = websocket
    else:
        ctx_obj = None
    rule = getattr(ctx_obj, "url_rule", None) if ctx_obj is not None else None
    return rule.rule if rule is not None else "<unmatched>"


def install_metrics(app: QuartTrio, get_service: GetService, get_cache: GetCache) -> Metrics:
    """Create the app's :class:`Metrics`, hook it into every request, websocket and OCR
    result, and serve ``GET /metrics``. Call it last in the app factory (its
    ``before_serving`` hook needs the service started)."""
    from quart import Response, g

    metrics = Metrics(get_service, get_cache)

    # Registered after the factory's own before_serving hook, which starts the service,
    # so the service exists here. Stage timings are observed in the service itself, so
    # REST and websocket results are both counted, once each.
    @app.before_serving
    async def _observe_results() -> None:
        service = get_service()
        if service is not None:
            service.add_result_observer(metrics.observe_result)

    @app.before_request
    async def _start_timer() -> None:
        g._metrics_started = time.perf_counter()

    @app.after_request
    async def _count_request(response: Any) -> Any:
        started = getattr(g, "_metrics_started", None)
        elapsed = time.perf_counter() - started if started is not None else 0.0
        from quart import request

        metrics.observe_request(_route_label(), request.method, response.status_code, elapsed)
        return response

    @app.before_websocket
    async def _ws_opened() -> None:
        metrics.ws_connections.labels(_route_label()).inc()
        metrics.ws_open.inc()
        g._metrics_ws_open = True

    @app.teardown_websocket
    async def _ws_closed(_exc: BaseException | None) -> None:
        if getattr(g, "_metrics_ws_open", False):
            metrics.ws_open.dec()
            g._metrics_ws_open = False

    async def metrics_endpoint() -> Response:
        body, content_type = metrics.render()
        return Response(body, status=200, content_type=content_type)

    app.add_url_rule("/metrics", "metrics", metrics_endpoint, methods=["GET"])
    openapi.add_paths(app, openapi_operator.METRICS)
    return metrics
