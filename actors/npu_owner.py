"""The NPU owner: the only code that calls the inference backend.

It loads the models, publishes readiness and model facts on its :class:`DeviceBoard`,
and serves :class:`~actors.messages.InferJob` s from a bounded channel, at most
``max_jobs_in_flight`` at a time (a backend property: 1 on the CPU, more on an NPU whose
scheduler pipelines). Jobs are taken first come, first served, so neither detection nor
recognition can starve the other. A job whose caller has gone is dropped unrun.

A :class:`~npu.errors.DeviceFault` (or a job outliving its timeout) fails every job in
flight with that fault, marks the board not ready, closes the backend, and loads a new
one after an exponential backoff; jobs that arrive meanwhile fail at once with
``DeviceFault`` rather than waiting in the dark.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import attrs
import numpy as np
import outcome
import trio

from npu.backend import Backend, BackendInfo
from npu.errors import BackendError, DeviceFault, DeviceTimeout, InferenceError

from .messages import InferJob

log = logging.getLogger("hailo_ocr.npu_owner")


@attrs.frozen
class DeviceStatistics:
    ready: bool
    reason: str | None  # why not ready: "models_loading", "device_fault", ...
    jobs_run: int
    jobs_failed: int
    jobs_skipped: int  # caller gone before the job started
    jobs_in_flight: int
    busy_seconds: float
    restarts: int
    last_fault: str | None
    info: BackendInfo | None = attrs.field(repr=False)


class DeviceBoard:
    """What the NPU owner publishes. Written only by the owner; read by anyone through
    :meth:`statistics` (a snapshot) or :meth:`wait_ready`."""

    def __init__(self) -> None:
        self._ready = False
        self._reason: str | None = "models_loading"
        self._info: BackendInfo | None = None
        self._ready_event = trio.Event()
        self.jobs_run = 0
        self.jobs_failed = 0
        self.jobs_skipped = 0
        self.jobs_in_flight = 0
        self.busy_seconds = 0.0
        self.restarts = 0
        self.last_fault: str | None = None

    # -- owner side
    def _set_ready(self, info: BackendInfo) -> None:
        self._info = info
        self._ready, self._reason = True, None
        self._ready_event.set()

    def _set_not_ready(self, reason: str) -> None:
        self._ready, self._reason = False, reason
        if self._ready_event.is_set():
            self._ready_event = trio.Event()

    # -- reader side
    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def info(self) -> BackendInfo | None:
        return self._info

    async def wait_ready(self) -> BackendInfo:
        await self._ready_event.wait()
        assert self._info is not None
        return self._info

    def statistics(self) -> DeviceStatistics:
        return DeviceStatistics(
            ready=self._ready, reason=self._reason, jobs_run=self.jobs_run,
            jobs_failed=self.jobs_failed, jobs_skipped=self.jobs_skipped,
            jobs_in_flight=self.jobs_in_flight, busy_seconds=self.busy_seconds,
            restarts=self.restarts, last_fault=self.last_fault, info=self._info,
        )


def caller_gone(reply: trio.MemorySendChannel) -> bool:
    """True when nobody is left to read the reply (the caller was cancelled)."""
    try:
        return reply.statistics().open_receive_channels == 0
    except trio.ClosedResourceError:
        return True


def _answer(reply: trio.MemorySendChannel, result: outcome.Outcome) -> None:
    try:
        reply.send_nowait(result)
    except (trio.BrokenResourceError, trio.ClosedResourceError, trio.WouldBlock):
        pass  # the caller went away: nobody to tell


class DeviceClient:
    """The orchestrator's and batcher's handle on the NPU owner: sends a job, awaits its
    reply. Cancelling the caller closes its reply channel, which the owner sees."""

    def __init__(self, jobs: trio.MemorySendChannel) -> None:
        self._jobs = jobs

    async def infer(self, model_id: str, batch: np.ndarray) -> np.ndarray:
        reply_send, reply_recv = trio.open_memory_channel[outcome.Outcome](1)
        async with reply_recv:
            job = InferJob(model_id, batch, reply_send, time.monotonic())
            try:
                await self._jobs.send(job)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                raise DeviceFault("the device owner has stopped") from None
            try:
                result = await reply_recv.receive()
            except trio.EndOfChannel:
                raise DeviceFault("the device owner dropped the job") from None
            return result.unwrap()


async def _run_job(
    backend: Backend, job: InferJob, board: DeviceBoard, timeout: float,
    limiter: trio.CapacityLimiter, fault: list[BaseException],
) -> None:
    answered = False
    started = time.monotonic()
    board.jobs_in_flight += 1
    try:
        try:
            with trio.fail_after(timeout):
                out = await backend.infer(job.model_id, job.batch)
        except trio.TooSlowError:
            exc = DeviceTimeout(f"the device did not answer {job.model_id} within {timeout:g} s")
            fault.append(exc)
            board.jobs_failed += 1
            _answer(job.reply, outcome.Error(exc))
            answered = True
            raise exc from None
        except DeviceFault as exc:
            fault.append(exc)
            board.jobs_failed += 1
            _answer(job.reply, outcome.Error(exc))
            answered = True
            raise
        except BackendError as exc:
            board.jobs_failed += 1
            _answer(job.reply, outcome.Error(exc))
            answered = True
            return
        except Exception as exc:  # a bug in a backend: fail the job, keep the device
            log.exception("backend raised unexpectedly on %s", job.model_id)
            board.jobs_failed += 1
            _answer(job.reply, outcome.Error(InferenceError(f"{job.model_id} failed: {exc}")))
            answered = True
            return
        board.jobs_run += 1
        _answer(job.reply, outcome.Value(out))
        answered = True
    finally:
        board.jobs_in_flight -= 1
        board.busy_seconds += time.monotonic() - started
        limiter.release_on_behalf_of(job)
        if not answered:  # cancelled because another job faulted the device
            reason = fault[0] if fault else DeviceFault("the device owner stopped")
            if not isinstance(reason, DeviceFault):
                reason = DeviceFault(str(reason))
            _answer(job.reply, outcome.Error(reason))


async def _serve_jobs(
    backend: Backend, info: BackendInfo, jobs: trio.MemoryReceiveChannel,
    board: DeviceBoard, timeout: float,
) -> None:
    """Serve jobs until a device fault; then raise it."""
    limiter = trio.CapacityLimiter(max(1, info.max_jobs_in_flight))
    fault: list[BaseException] = []
    try:
        async with trio.open_nursery() as nursery:
            async for job in jobs:
                if caller_gone(job.reply):
                    board.jobs_skipped += 1
                    continue
                await limiter.acquire_on_behalf_of(job)
                if caller_gone(job.reply):  # it may have left while we waited
                    board.jobs_skipped += 1
                    limiter.release_on_behalf_of(job)
                    continue
                nursery.start_soon(_run_job, backend, job, board, timeout, limiter, fault)
    except BaseExceptionGroup as group:
        faults = group.subgroup(DeviceFault)
        if faults is not None:
            raise fault[0] if fault else faults.exceptions[0] from None
        raise
    if fault:
        raise fault[0]


async def _refuse_jobs_for(seconds: float, jobs: trio.MemoryReceiveChannel, why: str) -> None:
    with trio.move_on_after(seconds):
        async for job in jobs:
            _answer(job.reply, outcome.Error(DeviceFault(why)))


async def _close(backend: Backend) -> None:
    with trio.CancelScope(shield=True), trio.move_on_after(10):
        try:
            await trio.to_thread.run_sync(backend.close, abandon_on_cancel=True)
        except Exception:
            log.exception("closing the backend failed")


async def serve_npu_owner(
    make_backend: Callable[[], Backend],
    jobs: trio.MemoryReceiveChannel,
    board: DeviceBoard,
    *,
    job_timeout: float,
    backoff: float = 0.5,
    backoff_max: float = 30.0,
    task_status: trio.TaskStatus[BackendInfo] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Own the device forever: load, serve, and after a fault restart with backoff.

    A failure of the *first* load (model missing, runtime not installed, device held by
    another process) is raised to whoever started us: the service cannot start and the
    operator must see why. Later load failures are retried with backoff.
    """
    delay = backoff
    first = True
    while True:
        backend = make_backend()
        try:
            info = await trio.to_thread.run_sync(backend.load)
        except BaseException as exc:
            await _close(backend)
            if first:
                raise
            board.last_fault = f"{type(exc).__name__}: {exc}"
            log.error("reloading the backend failed (%s); retrying in %.1f s", exc, delay)
            await _refuse_jobs_for(delay, jobs, "the device is restarting")
            delay = min(delay * 2, backoff_max)
            continue
        board._set_ready(info)
        if first:
            log.info(
                "backend %s ready (%s, device %s): %s", info.kind, info.runtime_version,
                info.device or "cpu", ", ".join(f"{m.id}={m.name}" for m in info.models),
            )
            task_status.started(info)
            first = False
        else:
            log.warning("backend %s restarted and ready", info.kind)
        runs_before = board.jobs_run
        try:
            await _serve_jobs(backend, info, jobs, board, job_timeout)
            return  # the job channel closed: the service is stopping
        except DeviceFault as exc:
            board._set_not_ready("device_fault")
            board.last_fault = f"{type(exc).__name__}: {exc}"
            board.restarts += 1
            if board.jobs_run > runs_before:
                delay = backoff  # it worked for a while: start the backoff afresh
            log.error("device fault: %s; restarting the backend in %.1f s", exc, delay)
        finally:
            await _close(backend)
        await _refuse_jobs_for(delay, jobs, "the device is restarting after a fault")
        delay = min(delay * 2, backoff_max)
        if math.isinf(delay):  # pragma: no cover - defensive
            delay = backoff_max
