"""The actor tree with fake backends: the NPU owner, supervision after device faults,
admission and deadlines, progress events, and a clean shutdown.

Images are coloured bars on white (``fakes.bars_image``): the fake detector finds one
region per bar and the fake recogniser reads each bar's id, so a result's lines prove
which request's crops they came from."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import numpy as np
import pytest
import trio
import trio.testing

from actors.batcher import refuse_submissions
from actors.device_owner import DeviceBoard, refuse_queued_jobs, serve_device_owner
from actors.errors import NotReady, Overloaded, RequestTimeout, ShuttingDown
from actors.messages import (
    Accepted,
    Detected,
    Done,
    Failed,
    InferJob,
    LineRecognised,
    OcrRequest,
    RecSubmission,
)
from actors.routing import DeviceClient
from actors.service import open_ocr_service
from npu.errors import DeviceFault, DeviceLost, DeviceTimeout, InferenceError, ModelLoadError
from ocr.errors import OcrInputError
from tests.support.config import with_changes
from tests.support.fakes import FakeBackend, FakeDevice, bars_image


@pytest.fixture
def cfg(config):
    """Fast supervision and generous deadlines; tests tighten what they need."""
    return with_changes(
        config,
        server={"request_timeout_s": 10.0},
        ocr={"det_limit_side_len": 32},  # keep the bar images at their size: fast
        backend={"job_timeout_s": 5.0, "restart_backoff_s": 0.05, "restart_backoff_max_s": 0.2},
    )


def request(ids, rid=None):
    return OcrRequest(bars_image(ids), ("en",), rid)


async def lines(svc, ids) -> list[str]:
    result = await svc.extract(request(ids))
    return list(result.lines)


async def wait_until(predicate, within: float = 5.0) -> None:
    """Poll a condition on the actors' published state (they signal nobody): bounded."""
    with trio.fail_after(within):
        while not predicate():  # noqa: ASYNC110 - polling counters, there is no event
            await trio.sleep(0.005)


def expected(ids):
    return [str(i) for i in ids]


# -- requests through the whole tree ---------------------------------------------------------


async def test_concurrent_requests_each_get_their_own_lines(cfg):
    dev = FakeDevice(rec_batch_size=8, det_delay=0.01, rec_delay=0.02)
    sizes = [1, 3, 8, 15, 2, 9]
    got = {}
    async with open_ocr_service(cfg, dev.factory()) as svc:

        async def client(k, n):
            ids = [100 * k + j for j in range(1, n + 1)]
            got[k] = (ids, await lines(svc, ids))

        async with trio.open_nursery() as nursery:
            for k, n in enumerate(sizes, start=1):
                nursery.start_soon(client, k, n)
        stats = svc.statistics()
    for ids, texts in got.values():
        assert texts == expected(ids)
    assert all(c.frames <= 8 for c in dev.rec_calls())
    assert stats.batcher.slots_filled == sum(sizes)
    assert stats.requests_admitted == len(sizes) and stats.requests_in_flight == 0
    assert stats.devices["cpu"].jobs_run == len(dev.calls)
    # Requests shared batches: the device saw fewer batches than one per request part.
    assert any(len({i // 100 for i in c.ids}) > 1 for c in dev.rec_calls())


async def test_stream_emits_progress_then_done(cfg):
    dev = FakeDevice()
    ids = [11, 12, 13, 14]
    send, recv = trio.open_memory_channel(100)
    async with open_ocr_service(cfg, dev.factory()) as svc:
        async with send:
            await svc.stream(request(ids, "r1"), send)
        events = [e async for e in recv]
    assert isinstance(events[0], Accepted) and events[0].id == "r1"
    assert isinstance(events[1], Detected) and len(events[1].bboxes) == 4
    line_events = events[2:-1]
    assert all(isinstance(e, LineRecognised) for e in line_events)
    assert sorted(e.index for e in line_events) == [0, 1, 2, 3]
    assert sorted(e.region.text for e in line_events) == expected(ids)
    assert isinstance(events[-1], Done) and list(events[-1].result.lines) == expected(ids)
    assert all(e.id == "r1" for e in events)


async def test_stream_reports_a_failure_as_a_typed_event(cfg):
    dev = FakeDevice()
    send, recv = trio.open_memory_channel(100)
    async with open_ocr_service(cfg, dev.factory()) as svc:
        async with send:
            await svc.stream(OcrRequest(b"not an image", ("en",), "bad"), send)
        events = [e async for e in recv]
    assert isinstance(events[-1], Failed)
    assert isinstance(events[-1].error, OcrInputError)
    assert events[-1].id == "bad"


# -- failures ------------------------------------------------------------------------------


async def test_inference_error_fails_that_request_only_and_the_device_stays(cfg):
    dev = FakeDevice()
    dev.raise_after(0, InferenceError("one bad batch"))
    async with open_ocr_service(cfg, dev.factory()) as svc:
        with pytest.raises(InferenceError, match="one bad batch"):
            await svc.extract(request([1, 2]))
        assert svc.ready
        assert await lines(svc, [3, 4]) == ["3", "4"]
        stats = svc.statistics()
    assert stats.devices["cpu"].restarts == 0 and dev.loads == 1
    assert stats.requests_failed == 1


async def test_a_failing_request_does_not_affect_the_others(cfg):
    dev = FakeDevice(det_delay=0.01)
    dev.raise_after(0, InferenceError("detection failed"), kind="detection")
    outcomes = {}
    async with open_ocr_service(cfg, dev.factory()) as svc:

        async def client(name, req):
            try:
                outcomes[name] = list((await svc.extract(req)).lines)
            except Exception as exc:
                outcomes[name] = exc

        async with trio.open_nursery() as nursery:
            nursery.start_soon(client, "a", request([1, 2, 3]))
            nursery.start_soon(client, "b", request([4, 5, 6]))
            nursery.start_soon(client, "junk", OcrRequest(b"\x89PNG broken", ("en",)))
    assert isinstance(outcomes["junk"], OcrInputError)
    failed = [k for k in ("a", "b") if isinstance(outcomes[k], InferenceError)]
    assert len(failed) == 1  # whichever reached the device first
    ok = "b" if failed == ["a"] else "a"
    assert outcomes[ok] == (["1", "2", "3"] if ok == "a" else ["4", "5", "6"])


async def test_device_fault_restarts_the_owner_and_later_requests_succeed(cfg):
    dev = FakeDevice()
    dev.raise_after(1, DeviceFault("chip reset"))  # the second recognition call
    async with open_ocr_service(cfg, dev.factory()) as svc:
        assert await lines(svc, [1]) == ["1"]
        with pytest.raises(DeviceFault, match="chip reset"):
            await svc.extract(request([2]))
        # Not ready as soon as the caller learns of the fault ...
        assert not svc.ready and svc.not_ready_reason == "device_fault"
        with pytest.raises(NotReady):
            await svc.extract(request([3]))
        # ... and ready again once the backend is reloaded.
        await wait_until(lambda: svc.ready)
        assert await lines(svc, [4, 5]) == ["4", "5"]
        stats = svc.statistics()
    assert stats.devices["cpu"].restarts == 1
    assert "chip reset" in stats.devices["cpu"].last_fault
    assert dev.loads == 2 and dev.closes == 2 and dev.open_backends == 0


async def test_hanging_device_times_the_request_out_then_restarts(cfg):
    cfg = with_changes(
        cfg, server={"request_timeout_s": 0.3},
        backend={"job_timeout_s": 0.8, "restart_backoff_s": 0.05},
    )
    dev = FakeDevice()
    dev.hang_after(0, 60.0)
    async with open_ocr_service(cfg, dev.factory()) as svc:
        start = trio.current_time()
        with pytest.raises(RequestTimeout):
            await svc.extract(request([1, 2, 3]))
        assert trio.current_time() - start < 0.6  # the deadline, not the device, ended it
        await wait_until(lambda: not svc.ready, within=2)  # the job timeout: a fault
        assert "DeviceTimeout" in svc.statistics().devices["cpu"].last_fault
        await wait_until(lambda: svc.ready, within=2)
        assert await lines(svc, [4]) == ["4"]
        stats = svc.statistics()
    assert stats.requests_timed_out == 1
    assert stats.devices["cpu"].restarts == 1
    hung = dev.rec_calls()[0]
    assert hung.result == "cancelled"  # the owner cancelled it after the job timeout
    assert dev.open_backends == 0


async def test_hang_past_the_job_timeout_is_a_device_timeout(cfg):
    cfg = with_changes(cfg, backend={"job_timeout_s": 0.2, "restart_backoff_s": 0.05})
    dev = FakeDevice()
    dev.hang_after(0, 60.0)
    async with open_ocr_service(cfg, dev.factory()) as svc:
        with pytest.raises(DeviceTimeout):
            await svc.extract(request([1]))
        assert not svc.ready
        await wait_until(lambda: svc.ready)
        assert await lines(svc, [2]) == ["2"]


async def test_lost_device_is_reloaded_with_backoff(cfg):
    dev = FakeDevice()
    dev.lose_after(0, kind="recognition")
    async with open_ocr_service(cfg, dev.factory()) as svc:
        dev.failing_loads = 2  # the first two reloads fail too
        with pytest.raises(DeviceLost):
            await svc.extract(request([1, 2]))
        assert not svc.ready
        start = trio.current_time()
        await wait_until(lambda: svc.ready)
        # backoff 0.05, then 0.1 and 0.2 after the failed reloads
        assert trio.current_time() - start >= 0.3
        assert dev.loads == 4
        assert await lines(svc, [3, 4]) == ["3", "4"]
    assert dev.open_backends == 0


async def test_first_load_failure_is_raised_as_itself(cfg):
    dev = FakeDevice(failing_loads=1)
    with pytest.raises(ModelLoadError):
        async with open_ocr_service(cfg, dev.factory()):
            pytest.fail("the service must not start")
    assert dev.open_backends == 0


async def test_an_error_in_the_body_comes_out_unwrapped(cfg):
    dev = FakeDevice()
    with pytest.raises(KeyError):
        async with open_ocr_service(cfg, dev.factory()):
            raise KeyError("mine")
    assert dev.open_backends == 0


# -- admission and deadlines ---------------------------------------------------------------


async def test_admission_full_is_refused_at_once(cfg):
    cfg = with_changes(cfg, server={"max_in_flight": 2})
    dev = FakeDevice(det_delay=0.2)
    async with open_ocr_service(cfg, dev.factory()) as svc:
        async with trio.open_nursery() as nursery:
            for ids in ([1], [2]):
                nursery.start_soon(lines, svc, ids)
            await wait_until(lambda: svc.statistics().requests_in_flight == 2)
            start = trio.current_time()
            with pytest.raises(Overloaded) as info:
                await svc.extract(request([3]))
            assert trio.current_time() - start < 0.05
            assert info.value.retry_after > 0
        stats = svc.statistics()
    assert stats.requests_refused == 1 and stats.requests_admitted == 2


async def test_deadline_drops_the_pending_crops(cfg):
    cfg = with_changes(
        cfg, server={"request_timeout_s": 0.25}, batching={"max_batches_in_flight": 1}
    )
    dev = FakeDevice(rec_batch_size=4, rec_delay=0.1)
    ids = list(range(1, 21))  # 5 batches of 0.1 s: cannot finish in 0.25 s
    async with open_ocr_service(cfg, dev.factory()) as svc:
        with pytest.raises(RequestTimeout):
            await svc.extract(request(ids))
        timed_out = trio.current_time()
        await trio.sleep(0.3)
        assert svc.statistics().batcher.queued == 0
        assert svc.ready  # a request's deadline is not a device fault
        assert await lines(svc, [99]) == ["99"]
        stats = svc.statistics()
    late = [c for c in dev.rec_calls() if c.started > timed_out and set(c.ids) & set(ids)]
    assert late == []  # none of its crops ran after its deadline
    ran = [i for i in dev.ids_run() if i in ids]
    assert 0 < len(ran) < len(ids)
    assert stats.batcher.crops_dropped == len(ids) - len(ran)
    assert stats.requests_timed_out == 1


async def test_cancelled_request_runs_none_of_its_crops_afterwards(cfg):
    cfg = with_changes(cfg, batching={"max_batches_in_flight": 1})
    dev = FakeDevice(rec_batch_size=4, rec_delay=0.05)
    ids = list(range(1, 16))
    async with open_ocr_service(cfg, dev.factory()) as svc:
        with trio.move_on_after(5) as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(svc.extract, request(ids))
                await wait_until(lambda: len(dev.rec_calls()) == 1)
                nursery.cancel_scope.cancel()  # the client went away
        assert not scope.cancelled_caught
        cancelled = trio.current_time()
        stats = svc.statistics()
        assert stats.requests_in_flight == 0 and stats.batcher.queued == 0
        assert await lines(svc, [77]) == ["77"]
    assert not any(set(c.ids) & set(ids) for c in dev.rec_calls() if c.started >= cancelled)
    assert len([i for i in dev.ids_run() if i in ids]) == 4  # only the batch already running


# -- a device owner on its own ---------------------------------------------------------------


@asynccontextmanager
async def running_owner(
    dev: FakeDevice, job_timeout: float = 5.0
) -> AsyncIterator[tuple[DeviceClient, DeviceBoard]]:
    board = DeviceBoard()
    send, recv = trio.open_memory_channel(64)
    async with trio.open_nursery() as nursery:
        await nursery.start(
            partial(serve_device_owner, partial(FakeBackend, dev), recv, board,
                    job_timeout=job_timeout, backoff=0.05)
        )
        yield DeviceClient({m.id: send for m in dev.info().models}), board
        nursery.cancel_scope.cancel()


DET = np.zeros((1, 3, 32, 32), np.float32)
REC = np.zeros((2, 3, 48, 64), np.float32)


async def test_job_whose_caller_left_is_not_run():
    dev = FakeDevice(det_delay=0.1)
    async with running_owner(dev) as (client, board):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.infer, "detection", DET)  # occupies the device
            await wait_until(lambda: dev.active_calls == 1)
            with trio.move_on_after(0.02):
                await client.infer("detection", DET)  # queued, then abandoned
            nursery.start_soon(client.infer, "detection", DET)
        stats = board.statistics()
    assert len(dev.calls) == 2
    assert stats.jobs_skipped == 1 and stats.jobs_run == 2


@pytest.mark.parametrize("slots", [1, 3])
async def test_jobs_in_flight_follow_the_backend(slots):
    dev = FakeDevice(det_delay=0.05, max_jobs_in_flight=slots)
    async with running_owner(dev) as (client, _):
        async with trio.open_nursery() as nursery:
            for _ in range(6):
                nursery.start_soon(client.infer, "detection", DET)
    assert dev.max_active_calls == slots
    assert len(dev.calls) == 6


async def test_detection_and_recognition_are_served_in_arrival_order():
    dev = FakeDevice(det_delay=0.01, rec_delay=0.01)
    kinds = ["recognition_en", "recognition_en", "detection", "recognition_en", "detection"]
    async with running_owner(dev) as (client, _):
        async with trio.open_nursery() as nursery:
            for model_id in kinds:
                nursery.start_soon(client.infer, model_id, DET if model_id == "detection" else REC)
                await trio.testing.wait_all_tasks_blocked()
    assert [c.model_id for c in dev.calls] == kinds


async def test_fault_fails_every_job_in_flight_with_the_device_error():
    dev = FakeDevice(rec_delay=0.2, max_jobs_in_flight=3)
    dev.raise_after(0, DeviceLost("gone"), kind="detection")
    errors = []
    async with running_owner(dev) as (client, board):

        async def job(model_id, batch):
            try:
                await client.infer(model_id, batch)
            except Exception as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(job, "recognition_en", REC)
            nursery.start_soon(job, "recognition_en", REC)
            await wait_until(lambda: dev.active_calls == 2)
            nursery.start_soon(job, "detection", DET)
        assert not board.ready
        await wait_until(lambda: board.ready)
        assert (await client.infer("detection", DET)).shape == (1, 32, 32)
    assert len(errors) == 3 and all(isinstance(e, DeviceLost) for e in errors)
    assert len({id(e) for e in errors}) == 3  # each caller its own exception object
    assert [c.result for c in dev.rec_calls()] == ["cancelled", "cancelled"]


# -- shutdown ----------------------------------------------------------------------------------


def busy_worker_threads(before: set[int | None]) -> list[str]:
    """Threads still running work: new threads, or Trio workers on a job. (Trio keeps
    idle worker threads cached for a few seconds, named "Trio thread N"; a worker running
    a job is named after it, "<function> from <task>".)"""
    return [
        t.name for t in threading.enumerate()
        if t is not threading.main_thread()
        and not t.name.startswith("Trio thread")
        and (t.ident not in before or " from " in t.name)
    ]


@pytest.mark.parametrize("stage", ["detection", "recognition"])
async def test_shutdown_leaves_no_task_thread_or_model_behind(cfg, stage):
    """Three requests are in flight when the service closes: one on the device, the
    others queued (at the owner, or in the batcher). The running device call is allowed
    to finish (no abandoned worker thread), the backend is closed, and every waiting
    request is told at once rather than left to its deadline."""
    cfg = with_changes(cfg, batching={"max_batches_in_flight": 1})
    delays = {"det_delay": 0.3} if stage == "detection" else {"rec_delay": 0.3}
    dev = FakeDevice(rec_batch_size=4, threaded=True, **delays)
    before = {t.ident for t in threading.enumerate()}
    outcomes: list[BaseException] = []
    async with trio.open_nursery() as outer:  # the web layer's tasks live out here
        async with open_ocr_service(cfg, dev.factory()) as svc:

            async def client(ids):
                try:
                    await svc.extract(request(ids))
                    outcomes.append("done")
                except Exception as exc:
                    outcomes.append(exc)

            for k in range(3):
                outer.start_soon(client, [10 * k + j for j in (1, 2, 3, 4)])
            if stage == "detection":
                await wait_until(lambda: svc.statistics().requests_in_flight == 3)
                await trio.sleep(0.1)  # one more detection reaches the owner, one waits
                assert len(dev.det_calls()) == 1
            else:
                # A batch on the device and at least one more request's crops waiting in
                # the batcher (detection runs one image at a time, so the third request
                # may still be there).
                await wait_until(
                    lambda: svc.statistics().batcher.queued >= 4
                    and any(c.result == "running" for c in dev.rec_calls())
                )
            assert dev.active_calls == 1
        assert dev.active_calls == 0
        assert dev.calls[0].result == "ok"  # finished, not abandoned
        assert dev.open_backends == 0 and dev.closes == dev.loads == 1
        with trio.fail_after(1):
            await wait_until(lambda: len(outcomes) == 3)
    # Every waiting request was told; the one whose batch was on the device may have had
    # its answer first (the call was allowed to finish).
    told = [e for e in outcomes if isinstance(e, ShuttingDown)]
    assert len(told) >= (3 if stage == "detection" else 2), outcomes
    assert all(e == "done" for e in outcomes if not isinstance(e, ShuttingDown)), outcomes
    assert busy_worker_threads(before) == []
    assert not svc.ready
    with pytest.raises(ShuttingDown):
        await svc.extract(request([1]))


async def test_work_left_in_the_inboxes_at_shutdown_is_answered_not_dropped():
    """What a request sent while the actors stopped (still buffered when the service
    closes) is answered ShuttingDown, so its caller does not wait for its deadline."""
    jobs_send, jobs_recv = trio.open_memory_channel(4)
    reply_send, reply_recv = trio.open_memory_channel(1)
    jobs_send.send_nowait(InferJob("detection", np.zeros((1, 3, 32, 32)), reply_send, 0.0))
    refuse_queued_jobs(jobs_recv, "stopping")
    with pytest.raises(ShuttingDown):
        reply_recv.receive_nowait().unwrap()

    rec_send, rec_recv = trio.open_memory_channel(4)
    results_send, results_recv = trio.open_memory_channel(2)
    crops = (np.zeros((48, 64, 3), np.uint8),) * 2
    rec_send.send_nowait(RecSubmission("en", crops, results_send))
    refuse_submissions(rec_recv, ShuttingDown("stopping"))
    got = [results_recv.receive_nowait() for _ in range(2)]
    assert [r.index for r in got] == [0, 1]
    assert all(isinstance(r.error, ShuttingDown) for r in got)
