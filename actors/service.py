"""Starting the actor tree, and the one handle the web layer talks to.

``open_ocr_service(config)`` opens a root nursery that supervises the NPU owner (which
restarts its backend after faults) and the batcher, waits until the models are loaded,
and yields an :class:`OcrService`. Requests run in the *caller's* task (one orchestrator
task per request), so a client that disconnects cancels its own work and nothing else.
Leaving the context cancels the tree; backends are closed on the way out.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import attrs
import trio

from npu.backend import Backend, BackendInfo
from ocr.config import Config
from ocr.languages import choose_language, normalise_language, quote_codes

from .batcher import Batcher, BatcherStatistics, refuse_submissions
from .errors import NotReady, Overloaded, RequestTimeout, ShuttingDown, UnsupportedLanguage
from .messages import Event, Failed, InferJob, Notice, OcrRequest, OcrResult, RecSubmission
from .npu_owner import (
    DeviceBoard,
    DeviceClient,
    DeviceStatistics,
    refuse_queued_jobs,
    serve_npu_owner,
)
from .orchestrator import Orchestrator, PipelineSettings

log = logging.getLogger("hailo_ocr.service")

#: Device jobs waiting for the NPU owner (detection jobs and recognition batches).
JOB_QUEUE = 64
#: Recognition submissions waiting for the batcher (one per request in flight at most).
SUBMISSION_QUEUE = 256


def make_backend_factory(config: Config) -> Callable[[], Backend]:
    """The backend the configuration names. Imported lazily: the Hailo backend is only
    imported when asked for, and it imports ``hailo_platform`` only when it loads."""
    if config.backend.type == "hailo":
        from npu.hailo_backend import HailoBackend

        return lambda: HailoBackend(config)
    from npu.onnx_backend import OnnxBackend

    return lambda: OnnxBackend(config)


@attrs.frozen
class ServiceStatistics:
    requests_in_flight: int
    requests_admitted: int
    requests_refused: int
    requests_failed: int
    requests_timed_out: int
    device: DeviceStatistics
    batcher: BatcherStatistics


class OcrService:
    def __init__(
        self, config: Config, board: DeviceBoard, orchestrator: Orchestrator, batcher: Batcher,
        info: BackendInfo,
    ) -> None:
        self.config = config
        self.info = info
        self._board = board
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
    @property
    def ready(self) -> bool:
        return self._board.ready and not self._closing

    @property
    def not_ready_reason(self) -> str | None:
        if self._closing:
            return "shutting_down"
        return self._board.statistics().reason

    @property
    def languages(self) -> tuple[str, ...]:
        return self.info.languages

    def statistics(self) -> ServiceStatistics:
        return ServiceStatistics(
            requests_in_flight=self._in_flight, requests_admitted=self._admitted,
            requests_refused=self._refused, requests_failed=self._failed,
            requests_timed_out=self._timed_out, device=self._board.statistics(),
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

    def _admit(self) -> None:
        if self._closing:
            raise ShuttingDown("the service is shutting down")
        if not self._board.ready:
            reason = self._board.statistics().reason or "not_ready"
            raise NotReady(f"the service is not ready ({reason})", reason)
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

    async def extract(
        self, request: OcrRequest, events: trio.MemorySendChannel[Event] | None = None
    ) -> OcrResult:
        """Run one request to its result, raising its error. With ``events`` the
        progress events are sent there as well."""
        language, warnings = self.pick_language(request.languages)
        self._admit()
        self._in_flight += 1
        self._admitted += 1
        self._idle = trio.Event() if self._idle.is_set() else self._idle
        try:
            with trio.fail_after(self.config.server.request_timeout_s):
                result = await self._orchestrator.run(request, language, events, warnings)
            for observe in self._result_observers:
                try:
                    observe(result)
                except Exception:  # an observer's bug must not fail the request
                    log.exception("result observer %r failed", observe)
            return result
        except trio.TooSlowError:
            self._timed_out += 1
            raise RequestTimeout(
                f"the request took longer than {self.config.server.request_timeout_s:g} s"
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
    jobs_send: trio.MemorySendChannel[InferJob],
    jobs_recv: trio.MemoryReceiveChannel[InferJob],
    rec_send: trio.MemorySendChannel[RecSubmission],
    rec_recv: trio.MemoryReceiveChannel[RecSubmission],
) -> AsyncIterator[None]:
    """On the way out, answer whatever is still buffered in the actors' inboxes, then close
    them, in one step with no checkpoint between.

    Requests run in the web layer's tasks, not in this tree, so one can send a job or a
    submission after the NPU owner or the batcher has stopped reading: left in the buffer,
    its caller would wait for its deadline. Answered here with ``ShuttingDown``, and any
    later send finds the channel closed (also ``ShuttingDown``)."""
    try:
        yield
    finally:
        refuse_queued_jobs(jobs_recv, "the service is stopping")
        refuse_submissions(rec_recv, ShuttingDown("the service is stopping"))
        for channel in (jobs_send, jobs_recv, rec_send, rec_recv):
            channel.close()


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
    config: Config, make_backend: Callable[[], Backend] | None = None
) -> AsyncIterator[OcrService]:
    """Start the actor tree; yield the service once the models are loaded.

    The tree is one root nursery holding the NPU owner (which restarts its backend after
    a fault) and the batcher. Errors come out unwrapped: a model that fails to load
    raises its ``ModelLoadError`` (not an ``ExceptionGroup``), and an exception raised in
    the ``async with`` body comes out as itself. Leaving the context cancels the tree; the
    backend is closed and every request still waiting gets ``ShuttingDown``.
    """
    make_backend = make_backend or make_backend_factory(config)
    board = DeviceBoard()
    jobs_send, jobs_recv = trio.open_memory_channel[InferJob](JOB_QUEUE)
    rec_send, rec_recv = trio.open_memory_channel[RecSubmission](SUBMISSION_QUEUE)
    service: OcrService | None = None
    try:
        async with _answered_and_closed(jobs_send, jobs_recv, rec_send, rec_recv), \
                trio.open_nursery() as nursery:
            info: BackendInfo = await nursery.start(
                lambda task_status: serve_npu_owner(
                    make_backend, jobs_recv, board, job_timeout=config.backend.job_timeout_s,
                    backoff=config.backend.restart_backoff_s,
                    backoff_max=config.backend.restart_backoff_max_s, task_status=task_status,
                )
            )
            device = DeviceClient(jobs_send)
            b = config.batching
            batcher = Batcher(
                device, board, policy=b.policy, window_s=b.window_ms / 1000.0,
                max_queued=b.max_queued_crops, max_in_flight=b.max_batches_in_flight,
            )
            await nursery.start(batcher.serve, rec_recv)
            orchestrator = Orchestrator(
                PipelineSettings.from_config(config), device, rec_send, info,
                withdraw=batcher.withdraw,
            )
            service = OcrService(config, board, orchestrator, batcher, info)
            try:
                yield service
            finally:
                service._closing = True
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        single = _single_error(group)
        if single is None:
            raise
        raise single from single.__cause__  # keep its own cause; hide the wrapper
