"""Starting the actor tree, and the one handle the web layer talks to.

``open_ocr_service(config)`` decides where each model runs (:mod:`npu.placement`), opens a
root nursery that supervises one device owner per device in use (each restarts its own
backend after faults) and the batcher, waits until every owner has loaded its models, and
yields an :class:`OcrService`. Requests run in the *caller's* task (one orchestrator task
per request), so a client that disconnects cancels its own work and nothing else. Leaving
the context cancels the tree; backends are closed on the way out.

Readiness is per device: the service is ready (``/health/ready``) when every owner is,
since each serves detection or a loaded language. While one owner restarts after a fault,
a request that needs it is refused at once (503 ``not_ready``, reason ``device_fault``)
and a job already sent to it fails at once (503 ``device_fault``); requests served
entirely by the other device go on.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from functools import partial

import attrs
import trio

from npu.backend import (
    CLASSIFIER,
    DETECTION,
    Backend,
    BackendFactory,
    BackendInfo,
    recognition_id,
)
from npu.backend_choice import DEVICE_MANAGER, HAILO, BackendChoice, choose_backend
from npu.errors import ModelLoadError
from npu.placement import CPU, NPU, Placement, plan_placement
from ocr.languages import choose_language, normalise_language, quote_codes

from .batcher import Batcher, BatcherStatistics, refuse_submissions
from .config import ServiceConfig
from .device_owner import (
    DeviceBoard,
    DeviceStatistics,
    refuse_queued_jobs,
    serve_device_owner,
)
from .errors import NotReady, Overloaded, RequestTimeout, ShuttingDown, UnsupportedLanguage
from .messages import Event, Failed, InferJob, Notice, OcrRequest, OcrResult, RecSubmission
from .orchestrator import Orchestrator, PipelineSettings
from .routing import DeviceClient, ModelTable

log = logging.getLogger("hailo_ocr.service")

#: Device jobs waiting for one device owner (detection jobs and recognition batches).
JOB_QUEUE = 64
#: Recognition submissions waiting for the batcher (one per request in flight at most).
SUBMISSION_QUEUE = 256


def backend_factories(
    config: ServiceConfig, placement: Placement, npu_kind: str = HAILO
) -> dict[str, BackendFactory]:
    """The backend of each device, built for the model ids placed on it; the NPU's is
    ``npu_kind`` (:func:`npu.backend_choice.choose_backend`): HailoRT in this process, or
    hailo-device-manager. Imported lazily: an NPU backend is only imported when a model is
    placed on the NPU, and it imports ``hailo_platform`` only when it loads."""

    def npu(model_ids: frozenset[str]) -> Backend:
        if npu_kind == DEVICE_MANAGER:
            from npu.device_manager_backend import DeviceManagerBackend

            return DeviceManagerBackend(config, model_ids)
        from npu.hailo_backend import HailoBackend

        return HailoBackend(config, model_ids)

    def cpu(model_ids: frozenset[str]) -> Backend:
        from npu.onnx_backend import OnnxBackend

        return OnnxBackend(config, model_ids, threads=placement.cpu_threads)

    return {NPU: npu, CPU: cpu}


@attrs.frozen
class ServiceStatistics:
    requests_in_flight: int
    requests_admitted: int
    requests_refused: int
    requests_failed: int
    requests_timed_out: int
    devices: Mapping[str, DeviceStatistics]  # device ("npu", "cpu") -> its owner's board
    batcher: BatcherStatistics

    @property
    def model_loads(self) -> int:
        """How many times the models were loaded, as the original service counted it: 1
        once every device owner has loaded its models, plus one per reload after a fault
        (on any device); 0 before the first load."""
        if not self.devices or any(d.loads == 0 for d in self.devices.values()):
            return 0
        return 1 + sum(d.loads - 1 for d in self.devices.values())


class OcrService:
    def __init__(
        self, config: ServiceConfig, boards: Mapping[str, DeviceBoard], orchestrator: Orchestrator,
        batcher: Batcher, models: ModelTable, choice: BackendChoice,
    ) -> None:
        self.config = config
        #: Which device serves which model, and each model's facts (immutable).
        self.models = models
        #: The backends seen as one (``hailo_info``, ``/health``, the log).
        self.info: BackendInfo = models.backend_info()
        #: Which backend runs the NPU's models (or that none does) and why (``auto``
        #: resolved).
        self.backend_choice = choice
        self._boards = dict(boards)
        self._orchestrator = orchestrator
        self._batcher = batcher
        self._in_flight = 0
        self._admitted = 0
        self._refused = 0
        self._failed = 0
        self._timed_out = 0
        self._closing = False
        self._idle = trio.Event()
        self._idle.set()
        self._result_observers: list[Callable[[OcrResult], None]] = []

    # -- state ---------------------------------------------------------------------
    def device_statistics(self) -> dict[str, DeviceStatistics]:
        """Each device owner's board, as a snapshot."""
        return {device: board.statistics() for device, board in self._boards.items()}

    @property
    def closing(self) -> bool:
        """Shutdown has begun: new requests are refused."""
        return self._closing

    @property
    def ready(self) -> bool:
        """Every device owner is ready (each serves detection or a loaded language)."""
        return not self._closing and all(d.ready for d in self.device_statistics().values())

    @property
    def not_ready_reason(self) -> str | None:
        """Why the service is not :attr:`ready` (None when it is)."""
        if self._closing:
            return "shutting_down"
        unready = self._unready_device(self._boards)
        return unready[1] if unready else None

    def _unready_device(self, devices: Iterable[str]) -> tuple[str, str] | None:
        """The first of ``devices`` that is not ready, and why."""
        for device in devices:
            stats = self._boards[device].statistics()
            if not stats.ready:
                return device, stats.state
        return None

    @property
    def languages(self) -> tuple[str, ...]:
        return self.models.languages

    def devices_for(self, language: str) -> tuple[str, ...]:
        """The devices a request in ``language`` needs: detection's, its recogniser's,
        and the classifier's when it is on."""
        ids = [DETECTION, recognition_id(language)]
        if self.config.ocr.use_angle_cls:
            ids.append(CLASSIFIER)
        return self.models.devices_for(tuple(ids))

    def statistics(self) -> ServiceStatistics:
        return ServiceStatistics(
            requests_in_flight=self._in_flight, requests_admitted=self._admitted,
            requests_refused=self._refused, requests_failed=self._failed,
            requests_timed_out=self._timed_out, devices=self.device_statistics(),
            batcher=self._batcher.statistics(),
        )

    def add_result_observer(self, observer: Callable[[OcrResult], None]) -> None:
        """Call ``observer(result)`` for every successful result (REST and streaming
        alike), e.g. to record stage latencies in metrics. Observers run on the Trio
        thread and must be quick and must not raise."""
        self._result_observers.append(observer)

    def begin_shutdown(self) -> None:
        """Refuse new requests from now on; the ones in flight go on."""
        self._closing = True

    async def wait_idle(self) -> None:
        await self._idle.wait()

    # -- requests --------------------------------------------------------------------
    def pick_language(self, languages: tuple[str, ...]) -> tuple[str, tuple[Notice, ...]]:
        """The loaded language to read a request in (the first one asked for that is
        loaded, aliases such as ``zh-CN`` included), and the warnings to return with it.
        Languages not loaded fall back to the default with a ``language_fallback``
        warning, or with ``ocr.unknown_language: reject`` are refused (422)."""
        supported = self.languages
        if self.config.ocr.unknown_language == "reject":
            unknown = [c for c in languages if normalise_language(c) not in supported]
            if unknown:
                raise UnsupportedLanguage(
                    f"language {quote_codes(unknown)} is not supported; supported: "
                    f"{', '.join(supported)}",
                    supported,
                )
        default = self.config.ocr.default_language
        choice = choose_language(
            languages, supported, default if default in supported else supported[0]
        )
        if not choice.unsupported:
            return choice.language, ()
        named = quote_codes(choice.unsupported)
        return choice.language, (Notice(
            "language_fallback",
            f"language {named} is not supported; the image was read as "
            f"{choice.language!r} (supported: {', '.join(supported)})",
        ),)

    def _admit(self, language: str) -> None:
        if self._closing:
            raise ShuttingDown("the service is shutting down")
        unready = self._unready_device(self.devices_for(language))
        if unready is not None:
            device, reason = unready
            raise NotReady(
                f"the service is not ready for {language!r}: its {device} device is not "
                f"ready ({reason})", reason,
            )
        if self._in_flight >= self.config.server.max_in_flight:
            self._refused += 1
            raise Overloaded(
                f"{self._in_flight} requests are in flight, the limit is "
                f"{self.config.server.max_in_flight}; retry shortly"
            )

    async def stream(self, request: OcrRequest, events: trio.MemorySendChannel[Event]) -> None:
        """Run one request, sending its progress events and finally ``Done`` or
        ``Failed`` to ``events``. Admission errors (overload, not ready, bad language)
        are sent as ``Failed`` too. Never raises for a request's own failure."""
        try:
            result_or_error = await self.extract(request, events=events)
        except Exception as exc:
            result_or_error = exc
        if isinstance(result_or_error, BaseException):
            try:
                await events.send(Failed(request.id, result_or_error))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

    @asynccontextmanager
    async def open_events(
        self, request: OcrRequest, buffer: int
    ) -> AsyncIterator[trio.MemoryReceiveChannel[Event]]:
        """``request`` run in the background (:meth:`stream`): its events, ending with
        ``Done`` or ``Failed``, arrive on the channel yielded (``buffer`` of them may
        wait). Leaving the block before the last event cancels the request."""
        events_send, events_recv = trio.open_memory_channel[Event](buffer)

        async def produce() -> None:
            async with events_send:
                await self.stream(request, events_send)

        async with trio.open_nursery() as nursery, events_recv:
            nursery.start_soon(produce)
            try:
                yield events_recv
            finally:
                nursery.cancel_scope.cancel()

    async def extract(
        self, request: OcrRequest, events: trio.MemorySendChannel[Event] | None = None
    ) -> OcrResult:
        """Run one request to its result, raising its error. With ``events`` the
        progress events are sent there as well."""
        language, warnings = self.pick_language(request.languages)
        self._admit(language)
        self._in_flight += 1
        self._admitted += 1
        self._idle = trio.Event() if self._idle.is_set() else self._idle
        timeout = self.config.server.request_timeout_s
        pages = 1
        try:
            with trio.fail_after(timeout) as deadline:
                async with self._orchestrator.open_document(request) as document:
                    if document is not None:
                        # A document gets the request deadline for each page it reads.
                        pages = len(document.pages)
                        deadline.deadline += timeout * (pages - 1)
                    result = await self._orchestrator.run(
                        request, language, events, warnings, document
                    )
            for observe in self._result_observers:
                try:
                    observe(result)
                except Exception:  # an observer's bug must not fail the request
                    log.exception("result observer %r failed", observe)
            return result
        except trio.TooSlowError:
            self._timed_out += 1
            per_page = f" ({timeout:g} s for each of its {pages} pages)" if pages > 1 else ""
            raise RequestTimeout(
                f"the request took longer than {timeout * pages:g} s{per_page}"
            ) from None
        except Exception:
            self._failed += 1
            raise
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()


@asynccontextmanager
async def _answered_and_closed(
    job_channels: Mapping[str, tuple[trio.MemorySendChannel[InferJob],
                                     trio.MemoryReceiveChannel[InferJob]]],
    rec_send: trio.MemorySendChannel[RecSubmission],
    rec_recv: trio.MemoryReceiveChannel[RecSubmission],
) -> AsyncIterator[None]:
    """On the way out, answer whatever is still buffered in the actors' inboxes, then close
    them, in one step with no checkpoint between.

    Requests run in the web layer's tasks, not in this tree, so one can send a job or a
    submission after a device owner or the batcher has stopped reading: left in the buffer,
    its caller would wait for its deadline. Answered here with ``ShuttingDown``, and any
    later send finds the channel closed (also ``ShuttingDown``)."""
    try:
        yield
    finally:
        for _, jobs_recv in job_channels.values():
            refuse_queued_jobs(jobs_recv, "the service is stopping")
        refuse_submissions(rec_recv, ShuttingDown("the service is stopping"))
        for pair in job_channels.values():
            for channel in pair:
                channel.close()
        rec_send.close()
        rec_recv.close()


def _log_placement(placement: Placement) -> None:
    for m in placement.models:
        log.log(
            logging.WARNING if m.fallback else logging.INFO,
            "placement: %s runs on the %s (%s)", m.model_id, m.device.upper(), m.reason,
        )
    if CPU in placement.devices:
        log.info(
            "placement: the CPU owner's ONNX Runtime sessions use %s",
            f"{placement.cpu_threads} threads each" if placement.cpu_threads
            else "one thread per core",
        )


def _check_loaded(device: str, wanted: frozenset[str], info: BackendInfo) -> None:
    """A backend must load exactly the models placed on its device."""
    loaded = {m.id for m in info.models}
    if loaded != wanted:
        raise ModelLoadError(
            f"the {device} backend loaded {', '.join(sorted(loaded)) or 'nothing'} but was "
            f"given {', '.join(sorted(wanted))}"
        )


def _single_error(group: BaseExceptionGroup) -> BaseException | None:
    """The one exception a group (possibly nested) holds, or None if it holds several."""
    leaves: list[BaseException] = []

    def walk(e: BaseException) -> None:
        if isinstance(e, BaseExceptionGroup):
            for inner in e.exceptions:
                walk(inner)
        else:
            leaves.append(e)

    walk(group)
    return leaves[0] if len(leaves) == 1 else None


@asynccontextmanager
async def open_ocr_service(
    config: ServiceConfig, backends: Mapping[str, BackendFactory] | None = None,
    placement: Placement | None = None,
) -> AsyncIterator[OcrService]:
    """Start the actor tree; yield the service once every device's models are loaded.

    ``placement`` (default: :func:`npu.placement.plan_placement` of ``config``) says which
    device runs which model; ``backends`` (default: :func:`backend_factories`) builds each
    device's backend for its model ids. The tree is one root nursery holding a device owner
    per device in use (each restarts its own backend after a fault; the NPU's is started
    first) and the batcher. Errors come out unwrapped: a model that fails to load raises
    its ``ModelLoadError`` (not an ``ExceptionGroup``), and an exception raised in the
    ``async with`` body comes out as itself. Leaving the context cancels the tree; the
    backends are closed and every request still waiting gets ``ShuttingDown``.
    """
    choice = choose_backend(config)
    if backends is None:
        log.info("backend %s (%s)", choice.kind, choice.reason)
    else:
        choice = BackendChoice(choice.kind, "backends given by the caller")
    placement = placement or plan_placement(config, backend=choice)
    _log_placement(placement)
    factories = (backends if backends is not None
                 else backend_factories(config, placement, choice.kind))
    devices = placement.devices
    missing = [d for d in devices if d not in factories]
    if missing:
        raise ValueError(f"no backend factory for device(s) {', '.join(missing)}")
    boards = {d: DeviceBoard(d) for d in devices}
    job_channels = {d: trio.open_memory_channel[InferJob](JOB_QUEUE) for d in devices}
    rec_send, rec_recv = trio.open_memory_channel[RecSubmission](SUBMISSION_QUEUE)
    service: OcrService | None = None
    b, be = config.batching, config.backend
    try:
        async with _answered_and_closed(job_channels, rec_send, rec_recv), \
                trio.open_nursery() as nursery:
            infos: dict[str, BackendInfo] = {}
            for d in devices:
                model_ids = placement.model_ids(d)
                infos[d] = await nursery.start(
                    partial(
                        serve_device_owner, partial(factories[d], model_ids),
                        job_channels[d][1], boards[d], job_timeout=be.job_timeout_s,
                        backoff=be.restart_backoff_s, backoff_max=be.restart_backoff_max_s,
                    )
                )
                _check_loaded(d, model_ids, infos[d])
            models = ModelTable.from_backends(infos)
            device = DeviceClient({m: job_channels[models.device(m)][0] for m in models.models})
            batcher = Batcher(
                device, models, policy=b.policy, window_s=b.window_ms / 1000.0,
                max_queued=b.max_queued_crops, max_in_flight=b.max_batches_in_flight,
            )
            await nursery.start(batcher.serve, rec_recv)
            orchestrator = Orchestrator(
                PipelineSettings.from_config(config), device, rec_send, models,
                withdraw=batcher.withdraw,
            )
            service = OcrService(config, boards, orchestrator, batcher, models, choice)
            try:
                yield service
            finally:
                service.begin_shutdown()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        single = _single_error(group)
        if single is None:
            raise
        raise single from single.__cause__  # keep its own cause; hide the wrapper
