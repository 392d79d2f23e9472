"""A device owner: the only code that calls a device's inference backend.

There is one owner per device that serves a model (:mod:`npu.placement`): the NPU owner
holds the Hailo device and the HEFs placed on it, the CPU owner the ONNX Runtime sessions
placed on the CPU. Both are this same actor with a different backend, each with its own
inbox and its own :class:`DeviceBoard`; a fault of one leaves the other serving.

An owner loads its models, publishes readiness and model facts on its board, and serves
:class:`~actors.messages.InferJob` s from a bounded channel, at most
``max_jobs_in_flight`` at a time (a backend property: one per core on the CPU, whose
backend shares the cores out among its jobs; more on an NPU whose scheduler pipelines).
Jobs are taken first come, first served from one channel, so neither detection nor
recognition can starve the other. A job whose caller has gone is
dropped unrun.

A :class:`~npu.errors.DeviceFault` (or a job outliving its timeout) marks the board not
ready, fails every job in flight with that fault, closes the backend, and loads a new
one after an exponential backoff; jobs that arrive meanwhile fail at once with
``DeviceFault`` rather than waiting in the dark. An unexpected exception in the owner
itself is treated the same way, so a bug cannot take the whole service down.

A job that has started runs to its end even if its caller leaves: work already on the
device cannot be recalled, and a backend call abandoned mid-way would leave a worker
thread (or an NPU job) running after the service has closed the backend. On shutdown
the jobs in flight get a short grace period to finish before they are cancelled.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import attrs
import outcome
import trio

from npu.backend import Backend, BackendInfo
from npu.errors import BackendError, DeviceFault, DeviceTimeout, InferenceError

from .errors import ShuttingDown, fresh_error
from .messages import InferJob
from .reply import answer, caller_gone

log = logging.getLogger("hailo_ocr.device_owner")

#: Longest the jobs in flight may take to finish once the service is stopping.
SHUTDOWN_GRACE_S = 5.0


@attrs.frozen
class DeviceStatistics:
    device: str  # "npu" or "cpu"
    ready: bool
    reason: str | None  # why not ready ("models_loading", "device_fault", ...); None when ready
    jobs_run: int
    jobs_failed: int
    jobs_skipped: int  # caller gone before the job started
    jobs_in_flight: int
    busy_seconds: float
    restarts: int
    last_fault: str | None
    info: BackendInfo | None = attrs.field(repr=False)
    jobs_refused: int = 0  # answered with DeviceFault while the device was restarting
    loads: int = 0  # backends loaded successfully: the first load, then each reload

    @property
    def state(self) -> str:
        """``ready``, or why not (what ``/health`` and ``NotReady`` say)."""
        return "ready" if self.ready else (self.reason or "not_ready")


class DeviceBoard:
    """What a device owner publishes. Written only by its owner (through the ``mark_*``
    methods and the counters); read by anyone through :meth:`statistics` (a snapshot)."""

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self._ready = False
        self._reason: str = "models_loading"
        self._info: BackendInfo | None = None
        self.jobs_run = 0
        self.jobs_failed = 0
        self.jobs_skipped = 0
        self.jobs_refused = 0
        self.jobs_in_flight = 0
        self.busy_seconds = 0.0
        self.restarts = 0
        self.loads = 0
        self.last_fault: str | None = None

    # -- owner side
    def mark_ready(self, info: BackendInfo) -> None:
        """A backend has loaded ``info``'s models and serves."""
        self.loads += 1
        self._info = info
        self._ready = True

    def mark_not_ready(self, reason: str, fault: BaseException | None = None) -> None:
        """The device does not serve, and why (``device_fault``, ``stopped``); ``fault``
        is recorded as the last fault."""
        self._ready, self._reason = False, reason
        if fault is not None:
            self.last_fault = f"{type(fault).__name__}: {fault}"

    # -- reader side
    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def info(self) -> BackendInfo | None:
        return self._info

    def statistics(self) -> DeviceStatistics:
        return DeviceStatistics(
            device=self.device, ready=self._ready,
            reason=None if self._ready else self._reason, jobs_run=self.jobs_run,
            jobs_failed=self.jobs_failed, jobs_skipped=self.jobs_skipped,
            jobs_in_flight=self.jobs_in_flight, busy_seconds=self.busy_seconds,
            restarts=self.restarts, last_fault=self.last_fault, info=self._info,
            jobs_refused=self.jobs_refused, loads=self.loads,
        )


def _refuse(job: InferJob, error: BaseException) -> None:
    answer(job.reply, outcome.Error(fresh_error(error)))


@attrs.define
class _Serving:
    """State of one incarnation of the backend, shared by its job tasks."""

    backend: Backend
    board: DeviceBoard
    timeout: float
    slots: trio.Semaphore
    nursery_scope: trio.CancelScope | None = None
    running: set[trio.CancelScope] = attrs.Factory(set)
    fault: BaseException | None = None

    def device_failed(self, exc: BaseException) -> None:
        """The first fault wins: publish it, then stop every job and the job loop."""
        if self.fault is None:
            self.fault = exc
            self.board.mark_not_ready("device_fault", exc)
        for scope in self.running:
            scope.cancel()
        if self.nursery_scope is not None:
            self.nursery_scope.cancel()


async def _run_job(s: _Serving, job: InferJob) -> None:
    """Run one job (one semaphore slot already taken for it) and answer its caller."""
    board = s.board
    started = trio.current_time()
    board.jobs_in_flight += 1
    answered = False
    try:
        # Shielded: a job on the device runs to its end (or its timeout) even when the
        # caller or the service goes away; the owner cancels it explicitly after a fault
        # and shortens its deadline on shutdown.
        with trio.CancelScope(shield=True) as scope:
            s.running.add(scope)
            try:
                with trio.fail_after(s.timeout):
                    out = await s.backend.infer(job.model_id, job.batch)
            except trio.TooSlowError:
                exc = DeviceTimeout(
                    f"the device did not answer {job.model_id} within {s.timeout:g} s"
                )
                board.jobs_failed += 1
                s.device_failed(exc)
                _refuse(job, exc)
                answered = True
                return
            except DeviceFault as exc:
                board.jobs_failed += 1
                s.device_failed(exc)
                _refuse(job, exc)
                answered = True
                return
            except BackendError as exc:  # one failed job; the device is fine
                board.jobs_failed += 1
                answer(job.reply, outcome.Error(exc))
                answered = True
                return
            except Exception as exc:  # a bug in a backend: fail the job, keep the device
                log.exception("backend raised unexpectedly on %s", job.model_id)
                board.jobs_failed += 1
                answer(job.reply, outcome.Error(InferenceError(f"{job.model_id} failed: {exc}")))
                answered = True
                return
            finally:
                s.running.discard(scope)
        if not scope.cancelled_caught:
            board.jobs_run += 1
            answer(job.reply, outcome.Value(out))
            answered = True
    finally:
        board.jobs_in_flight -= 1
        board.busy_seconds += trio.current_time() - started
        s.slots.release()
        if not answered:  # cancelled: another job faulted the device, or shutdown
            board.jobs_failed += 1
            _refuse(job, s.fault or ShuttingDown("the service stopped before the job finished"))


async def _serve_jobs(s: _Serving, jobs: trio.MemoryReceiveChannel) -> None:
    """Serve jobs until a device fault (then raise it) or until the channel closes."""
    async with trio.open_nursery() as nursery:
        s.nursery_scope = nursery.cancel_scope
        try:
            async for job in jobs:
                if caller_gone(job.reply):
                    s.board.jobs_skipped += 1
                    continue
                try:
                    await s.slots.acquire()
                except BaseException:
                    _refuse(job, s.fault or ShuttingDown("the service is stopping"))
                    raise
                if caller_gone(job.reply):  # it may have left while we waited
                    s.board.jobs_skipped += 1
                    s.slots.release()
                    continue
                nursery.start_soon(_run_job, s, job)
        except trio.Cancelled:
            # Fault or shutdown: jobs in flight get a short grace to finish (a fault
            # has cancelled them already), then the nursery waits for them.
            deadline = trio.current_time() + min(s.timeout, SHUTDOWN_GRACE_S)
            for scope in s.running:
                scope.deadline = min(scope.deadline, deadline)
            raise
    if s.fault is not None:
        raise s.fault


async def _refuse_jobs_for(
    seconds: float, jobs: trio.MemoryReceiveChannel, board: DeviceBoard, why: str
) -> None:
    """While the device restarts, answer every job at once with a ``DeviceFault``."""
    with trio.move_on_after(seconds):
        async for job in jobs:
            board.jobs_refused += 1
            _refuse(job, DeviceFault(why))


def refuse_queued_jobs(jobs: trio.MemoryReceiveChannel, why: str) -> None:
    """Answer the jobs still buffered in the channel; nobody will run them."""
    while True:
        try:
            job = jobs.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
            return
        _refuse(job, ShuttingDown(why))


async def _close(backend: Backend) -> None:
    """Close a backend in a worker thread, even while being cancelled, within 10 s."""
    with trio.CancelScope(shield=True), trio.move_on_after(10):
        try:
            await trio.to_thread.run_sync(backend.close, abandon_on_cancel=True)
        except Exception:
            log.exception("closing the backend failed")


async def serve_device_owner(
    make_backend: Callable[[], Backend],
    jobs: trio.MemoryReceiveChannel,
    board: DeviceBoard,
    *,
    job_timeout: float,
    backoff: float = 0.5,
    backoff_max: float = 30.0,
    task_status: trio.TaskStatus[BackendInfo] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Own the device until cancelled: load, serve, and after a fault restart with backoff.

    A failure of the *first* load (model missing, runtime not installed, device held by
    another process) is raised to whoever started us: the service cannot start and the
    operator must see why. Later load failures are retried with backoff (doubling, at
    most ``backoff_max``; reset after a backend that served jobs successfully).
    """
    delay = backoff
    first = True
    try:
        while True:
            backend = make_backend()
            try:
                info = await trio.to_thread.run_sync(backend.load)
            except BaseException as exc:
                await _close(backend)
                if first or not isinstance(exc, Exception):
                    raise
                board.mark_not_ready("device_fault", exc)
                log.error(
                    "%s: reloading the backend failed (%s); retrying in %.2f s", board.device,
                    exc, delay,
                )
                await _refuse_jobs_for(delay, jobs, board, "the device is restarting")
                delay = min(delay * 2, backoff_max)
                continue
            board.mark_ready(info)
            if first:
                log.info(
                    "%s: backend %s ready (%s, device %s): %s", board.device, info.kind,
                    info.runtime_version, info.device or "cpu",
                    ", ".join(f"{m.id}={m.name}" for m in info.models),
                )
                task_status.started(info)
                first = False
            else:
                log.warning("%s: backend %s restarted and ready", board.device, info.kind)
            runs_before = board.jobs_run
            serving = _Serving(
                backend, board, job_timeout, trio.Semaphore(max(1, info.max_jobs_in_flight))
            )
            try:
                await _serve_jobs(serving, jobs)
                return  # the job channel closed: the service is stopping
            except Exception as exc:
                if not isinstance(exc, DeviceFault):
                    log.exception("%s: the device owner failed unexpectedly; restarting it",
                                  board.device)
                board.mark_not_ready("device_fault", exc)
                board.restarts += 1
                if board.jobs_run > runs_before:
                    delay = backoff  # it worked for a while: start the backoff afresh
                log.error(
                    "%s: device fault: %s; restarting the backend in %.2f s", board.device, exc,
                    delay,
                )
            finally:
                await _close(backend)
            await _refuse_jobs_for(delay, jobs, board, "the device is restarting after a fault")
            delay = min(delay * 2, backoff_max)
            if math.isinf(delay):  # pragma: no cover - defensive
                delay = backoff_max
    finally:
        board.mark_not_ready("stopped")
        refuse_queued_jobs(jobs, "the service is stopping")
