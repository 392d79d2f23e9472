"""The recognition batcher on its own: batching edge cases, routing of every result to
its own caller, flush timing under a mock clock, cancellation, and statistics.

Every crop shows an id (its colour); the fake recogniser reads the id back, so a result
proves which crop it came from, and the fake device's call log shows what was batched."""

from __future__ import annotations

import math
import random

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.config import POLICIES
from npu.backend import language_of
from tests.support.actor_harness import running_batcher
from tests.support.fakes import FakeDevice


def _expected(ids):
    return [str(i) for i in ids]


def _assert_batches_within(device: FakeDevice, size: int) -> None:
    for call in device.rec_calls():
        assert 1 <= call.frames <= size, f"a batch of {call.frames} frames, limit {size}"


# -- one request ---------------------------------------------------------------------


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("n", [1, 8, 15])
async def test_one_request(n, policy):
    device = FakeDevice(rec_batch_size=8)
    async with running_batcher(device, policy=policy) as h:
        ids = list(range(1, n + 1))
        assert await h.recognise(ids) == _expected(ids)
        stats = h.batcher.statistics()
    assert sorted(device.ids_run()) == ids  # every crop ran exactly once
    _assert_batches_within(device, 8)
    assert stats.batches == math.ceil(n / 8) == len(device.rec_calls())
    assert stats.slots_filled == n
    assert stats.slots_run == 8 * stats.batches
    assert stats.slots_padded == 0
    assert stats.crops_waited == n
    assert stats.queued == 0 and stats.batches_in_flight == 0
    assert sum(k * v for k, v in stats.batch_sizes.items()) == n


async def test_fixed_batch_pads_the_last_slots_and_drops_their_outputs():
    device = FakeDevice(
        rec_batch_size=8, fixed_batch=True, layout="nhwc_uint8_rgb", rec_policy="fixed"
    )
    async with running_batcher(device) as h:
        ids = [501, 502, 503, 504, 505, 506, 507, 508, 509, 510, 511]
        assert await h.recognise(ids) == _expected(ids)
        stats = h.batcher.statistics()
    calls = device.rec_calls()
    assert [c.frames for c in calls] == [8, 8]  # the device always gets a full batch
    assert calls[0].ids == ids[:8]  # a fixed-width model takes crops in arrival order
    assert calls[1].ids == ids[8:] + [None] * 5  # blank frames in the unused slots
    assert stats.slots_padded == 5
    assert stats.slots_filled == 11 and stats.slots_run == 16
    assert stats.fill == pytest.approx(11 / 16)


async def test_dynamic_width_groups_crops_of_similar_width():
    device = FakeDevice(rec_batch_size=2)
    async with running_batcher(device, max_in_flight=1) as h:
        ids = [11, 12, 13, 14, 15, 16]
        widths = [100, 400, 900, 110, 390, 880]
        assert await h.recognise(ids, widths=widths) == _expected(ids)
    groups = [sorted(c.ids) for c in device.rec_calls()]
    assert groups == [[11, 14], [12, 15], [13, 16]]


# -- several requests ----------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [8, 9])
async def test_three_concurrent_requests_share_a_batch(batch_size, autojump_clock):
    device = FakeDevice(rec_batch_size=batch_size)
    results = {}
    async with running_batcher(device, policy="window", window_s=0.008) as h:

        async def client(k):
            ids = [100 * k + j for j in (1, 2, 3)]
            results[k] = (ids, await h.recognise(ids))

        async with trio.open_nursery() as nursery:
            for k in (1, 2, 3):
                nursery.start_soon(client, k)
    for ids, texts in results.values():
        assert texts == _expected(ids)
    first = device.rec_calls()[0]
    assert {i // 100 for i in first.ids} == {1, 2, 3}  # one batch serves all three
    assert len(device.rec_calls()) == math.ceil(9 / batch_size)
    _assert_batches_within(device, batch_size)


@pytest.mark.parametrize("policy", POLICIES)
async def test_twenty_concurrent_requests_of_random_sizes(policy):
    rng = random.Random(20)
    device = FakeDevice(rec_batch_size=8, rec_delay=0.002)
    results = {}
    async with running_batcher(device, policy=policy, window_s=0.004) as h:

        async def client(k):
            await trio.sleep(rng.random() * 0.01)
            n = rng.randint(1, 20)
            ids = [1000 * k + j for j in range(1, n + 1)]
            widths = [rng.randint(20, 700) for _ in ids]
            results[k] = (ids, await h.recognise(ids, widths=widths))

        async with trio.open_nursery() as nursery:
            for k in range(1, 21):
                nursery.start_soon(client, k)
        stats = h.batcher.statistics()
    total = 0
    for ids, texts in results.values():
        assert texts == _expected(ids)
        total += len(ids)
    assert len(results) == 20
    assert sorted(device.ids_run()) == sorted(i for ids, _ in results.values() for i in ids)
    _assert_batches_within(device, 8)
    assert stats.slots_filled == total
    assert stats.batches == len(device.rec_calls())
    assert any(len({i // 1000 for i in c.ids}) > 1 for c in device.rec_calls())


# -- property: routing and batch limits under random arrivals --------------------------

_request = st.tuples(
    st.integers(min_value=0, max_value=30),  # arrival, ms
    st.integers(min_value=1, max_value=12),  # crops
    st.sampled_from(["en", "zh"]),
    st.integers(min_value=8, max_value=600),  # width of its crops (varied below)
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    requests=st.lists(_request, min_size=1, max_size=10),
    batch_size=st.integers(min_value=1, max_value=8),
    policy=st.sampled_from(POLICIES),
    fixed_batch=st.booleans(),
    max_in_flight=st.integers(min_value=1, max_value=3),
)
def test_every_crop_reaches_its_own_caller_in_order(
    requests, batch_size, policy, fixed_batch, max_in_flight
):
    device = FakeDevice(
        rec_batch_size=batch_size, fixed_batch=fixed_batch, languages=("en", "zh"),
        rec_delay=0.003,
    )
    results: dict[int, tuple[list[int], list[str]]] = {}
    lang_of: dict[int, str] = {}

    async def scenario():
        async with running_batcher(
            device, policy=policy, window_s=0.005, max_in_flight=max_in_flight
        ) as h:

            async def client(k, arrival_ms, n, lang, width):
                await trio.sleep(arrival_ms / 1000)
                ids = [100 * k + j for j in range(1, n + 1)]
                for i in ids:
                    lang_of[i] = lang
                widths = [width + 37 * j % 200 for j in range(n)]
                results[k] = (ids, await h.recognise(ids, language=lang, widths=widths))

            async with trio.open_nursery() as nursery:
                for k, (arrival, n, lang, width) in enumerate(requests, start=1):
                    nursery.start_soon(client, k, arrival, n, lang, width)
            stats = h.batcher.statistics()
            assert stats.queued == 0 and stats.batches_in_flight == 0

    trio.run(scenario, clock=trio.testing.MockClock(autojump_threshold=0))

    assert len(results) == len(requests)
    for ids, texts in results.values():
        assert texts == _expected(ids)  # its own crops, in its own order
    all_ids = sorted(i for ids, _ in results.values() for i in ids)
    assert sorted(device.ids_run()) == all_ids  # each crop ran once
    for call in device.rec_calls():
        assert call.frames <= batch_size
        if fixed_batch:
            assert call.frames == batch_size
        real = [i for i in call.ids if i is not None]
        assert real, "a batch with no crop in it was sent"
        lang = language_of(call.model_id)
        assert all(lang_of[i] == lang for i in real)  # one language per batch


# -- flush timing (virtual time) --------------------------------------------------------


async def test_window_flushes_when_the_oldest_crop_has_waited_the_window(autojump_clock):
    device = FakeDevice(rec_batch_size=8)
    async with running_batcher(device, policy="window", window_s=0.008) as h:
        t0 = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(h.recognise, [1, 2, 3])

            async def later():
                await trio.sleep(0.005)
                await h.recognise([4, 5])

            nursery.start_soon(later)
        first = device.rec_calls()[0]
        assert first.started - t0 == pytest.approx(0.008)  # the oldest crop's window
        assert sorted(first.ids) == [1, 2, 3, 4, 5]  # the late crops joined it

        t1 = trio.current_time()
        assert await h.recognise(list(range(10, 18))) == _expected(range(10, 18))
        full = device.rec_calls()[1]
        assert full.started == pytest.approx(t1)  # a full batch goes at once
        stats = h.batcher.statistics()
    assert stats.queue_wait_max_s == pytest.approx(0.008)


async def test_adaptive_sends_a_lone_crop_at_once_when_the_device_is_idle(autojump_clock):
    device = FakeDevice(rec_batch_size=8)
    async with running_batcher(device, policy="adaptive", window_s=0.050) as h:
        t0 = trio.current_time()
        assert await h.recognise([7]) == ["7"]
        assert device.rec_calls()[0].started == pytest.approx(t0)
        assert h.batcher.statistics().queue_wait_max_s == pytest.approx(0.0)


@pytest.mark.parametrize("policy", POLICIES)
async def test_crops_arriving_while_the_device_is_busy(policy, autojump_clock):
    """Adaptive holds the crops that arrive during a batch and sends them together when
    the device frees; the window policy sends each group as its window ends."""
    device = FakeDevice(rec_batch_size=8, rec_delay=0.100)
    async with running_batcher(device, policy=policy, window_s=0.008, max_in_flight=2) as h:
        t0 = trio.current_time()

        async def at(delay, ids):
            await trio.sleep(delay)
            assert await h.recognise(ids) == _expected(ids)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(at, 0, list(range(1, 9)))  # a full batch, runs 0 .. 0.1
            nursery.start_soon(at, 0.010, [21, 22])
            nursery.start_soon(at, 0.050, [31, 32, 33])
        stats = h.batcher.statistics()
    calls = device.rec_calls()
    starts = [round(c.started - t0, 4) for c in calls]
    if policy == "adaptive":
        assert [sorted(c.ids) for c in calls] == [list(range(1, 9)), [21, 22, 31, 32, 33]]
        assert starts == [0.0, 0.1]
        # The batch left the queue when the device freed, not earlier.
        assert stats.queue_wait_max_s == pytest.approx(0.090)
        assert stats.queue_wait_total_s == pytest.approx(2 * 0.090 + 3 * 0.050)
    else:
        assert stats.queue_wait_max_s == pytest.approx(0.050)
        assert stats.queue_wait_total_s == pytest.approx(2 * 0.008 + 3 * 0.050)
        # [21, 22] left at 0.018 and waited for the device; [31..33] left when a batch
        # slot freed (0.1) and ran after it.
        assert [sorted(c.ids) for c in calls] == [list(range(1, 9)), [21, 22], [31, 32, 33]]
        assert starts == [0.0, 0.1, 0.2]


async def test_languages_are_batched_apart_and_the_oldest_goes_first(autojump_clock):
    device = FakeDevice(rec_batch_size=4, languages=("en", "zh"), rec_delay=0.010)
    async with running_batcher(device, policy="window", window_s=0.008, max_in_flight=1) as h:

        async def at(delay, ids, lang):
            await trio.sleep(delay)
            assert await h.recognise(ids, language=lang) == _expected(ids)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(at, 0.000, [1, 2, 3, 4], "en")  # full: runs 0 .. 0.01
            nursery.start_soon(at, 0.001, [51, 52], "zh")
            nursery.start_soon(at, 0.002, [5, 6, 7, 8, 9, 10, 11, 12], "en")
    calls = [(c.model_id, sorted(c.ids)) for c in device.rec_calls()]
    # At 0.01 both queues are due and "en" even holds full batches, but the "zh" crops
    # are older: they go first instead of waiting behind every full "en" batch.
    assert calls == [
        ("recognition_en", [1, 2, 3, 4]),
        ("recognition_zh", [51, 52]),
        ("recognition_en", [5, 6, 7, 8]),
        ("recognition_en", [9, 10, 11, 12]),
    ]


# -- cancellation ------------------------------------------------------------------------


@pytest.mark.parametrize("withdraw", [True, False])
async def test_cancelled_request_frees_its_slots_and_runs_none_of_its_crops(
    withdraw, autojump_clock
):
    device = FakeDevice(rec_batch_size=4, rec_delay=0.050)
    async with running_batcher(device, max_in_flight=1, max_queued=8) as h:
        doomed = list(range(1, 13))  # 3 batches; 8 stay queued, the queue bound
        with trio.move_on_after(0.010) as scope:  # cancelled during its first batch
            await h.recognise(doomed, withdraw=withdraw)
        assert scope.cancelled_caught
        cancelled_at = trio.current_time()
        # Another request gets in (its crops need the room the doomed one held) and
        # is answered correctly.
        assert await h.recognise([101, 102]) == ["101", "102"]
        stats = h.batcher.statistics()
    after = [c for c in device.rec_calls() if c.started >= cancelled_at]
    assert after, "the later request ran"
    assert not any(i in doomed for c in after for i in c.ids)
    assert device.ids_run() == [1, 2, 3, 4, 101, 102]  # only its batch already running
    assert stats.crops_dropped == 8
    assert stats.queued == 0


async def test_batch_whose_callers_all_left_is_not_sent(autojump_clock):
    device = FakeDevice(rec_batch_size=4, rec_delay=0.050)
    async with running_batcher(device, policy="window", window_s=0.020) as h:
        with trio.move_on_after(0.010):
            await h.recognise([1, 2], withdraw=False)
        await trio.sleep(0.1)
        assert device.rec_calls() == []
        assert h.batcher.statistics().crops_dropped == 2


# -- errors -----------------------------------------------------------------------------


async def test_failed_batch_fails_its_callers_only_and_the_next_batch_works():
    from npu.errors import InferenceError

    device = FakeDevice(rec_batch_size=4)
    device.raise_after(0, InferenceError("bad batch"))
    async with running_batcher(device) as h:
        with pytest.raises(InferenceError, match="bad batch"):
            await h.recognise([1, 2])
        assert await h.recognise([3, 4]) == ["3", "4"]
        stats = h.batcher.statistics()
    assert stats.batches_failed == 1 and stats.batches == 1
    assert stats.slots_filled == 2


async def test_packing_error_fails_the_batch_not_the_batcher():
    """A crop the packer cannot handle (here: wrong height) fails its batch; the batcher
    keeps serving (before, an exception in packing killed the whole service)."""
    import numpy as np

    from actors.messages import RecResult, RecSubmission

    device = FakeDevice(rec_batch_size=4)
    async with running_batcher(device) as h:
        send, recv = trio.open_memory_channel[RecResult](2)
        bad = (np.zeros((48, 10, 3), np.uint8), np.zeros((20, 10, 3), np.uint8))
        await h.inbox.send(RecSubmission("en", bad, send))
        results = [await recv.receive(), await recv.receive()]
        assert all(r.error is not None for r in results)
        assert await h.recognise([9]) == ["9"]
        assert h.batcher.statistics().batches_failed == 1
