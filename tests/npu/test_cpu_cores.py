"""npu.cpu_cores: jobs hold cores one each or all at once, first come first served, and a
job that leaves (done or cancelled) gives back every core it took.

Every test is pure Trio: ``wait_all_tasks_blocked`` decides when the tasks started so far
have taken what they could."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from npu.cpu_cores import CoreLease


async def _holder(lease: CoreLease, at_least: int, at_most: int, log: list, name: str,
                  release: trio.Event) -> None:
    async with lease.hold(at_least, at_most) as taken:
        log.append((name, taken))
        await release.wait()
    log.append((name, "out"))


async def test_one_core_jobs_run_side_by_side_and_the_next_waits():
    lease, log = CoreLease(2), []
    a, b, c = trio.Event(), trio.Event(), trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_holder, lease, 1, 1, log, "a", a)
        nursery.start_soon(_holder, lease, 1, 1, log, "b", b)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(_holder, lease, 1, 1, log, "c", c)
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(log) == [("a", 1), ("b", 1)] and lease.free == 0
        a.set()
        await trio.testing.wait_all_tasks_blocked()
        assert log[-2:] == [("a", "out"), ("c", 1)]
        b.set()
        c.set()
    assert lease.free == 2


async def test_a_batch_takes_the_idle_cores_up_to_what_it_asks():
    lease, log = CoreLease(4), []
    a, b = trio.Event(), trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_holder, lease, 1, 1, log, "a", a)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(_holder, lease, 1, 8, log, "b", b)  # 3 idle cores
        await trio.testing.wait_all_tasks_blocked()
        assert log == [("a", 1), ("b", 3)]
        a.set()
        b.set()
    async with lease.hold(1, 2) as taken:
        assert taken == 2  # never more than it asked for
        assert lease.free == 2


async def test_a_job_wanting_every_core_is_not_overtaken():
    """A batch holds one of two cores; a detection asks for both and waits; a batch that
    arrives after it waits behind it, although a core is free for a moment."""
    lease, log = CoreLease(2), []
    a, d, b = trio.Event(), trio.Event(), trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_holder, lease, 1, 1, log, "a", a)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(_holder, lease, 2, 2, log, "detection", d)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(_holder, lease, 1, 1, log, "b", b)
        await trio.testing.wait_all_tasks_blocked()
        assert log == [("a", 1)]
        a.set()
        await trio.testing.wait_all_tasks_blocked()
        assert log == [("a", 1), ("a", "out"), ("detection", 2)]
        d.set()
        await trio.testing.wait_all_tasks_blocked()
        assert log[-2:] == [("detection", "out"), ("b", 1)]
        b.set()


async def test_two_jobs_wanting_every_core_take_turns():
    lease, log = CoreLease(2), []
    a, d1, d2 = trio.Event(), trio.Event(), trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_holder, lease, 1, 1, log, "a", a)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(_holder, lease, 2, 2, log, "d1", d1)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(_holder, lease, 2, 2, log, "d2", d2)
        await trio.testing.wait_all_tasks_blocked()
        a.set()
        await trio.testing.wait_all_tasks_blocked()
        assert log[-1] == ("d1", 2)
        d1.set()
        await trio.testing.wait_all_tasks_blocked()
        assert log[-1] == ("d2", 2)
        d2.set()
    assert lease.free == 2


async def test_a_cancelled_wait_gives_back_the_cores_it_had_taken():
    lease, log = CoreLease(2), []
    a, never = trio.Event(), trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_holder, lease, 1, 1, log, "a", a)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(_holder, lease, 2, 2, log, "detection", never)
        await trio.testing.wait_all_tasks_blocked()
        assert lease.free == 0  # the detection holds one core, waiting for the other
        nursery.cancel_scope.cancel()
    assert log == [("a", 1)]
    assert lease.free == 2


async def test_asking_for_more_cores_than_there_are_takes_them_all():
    lease = CoreLease(2)
    async with lease.hold(8, 8) as taken:
        assert taken == 2 and lease.free == 0


def test_a_lease_needs_a_core():
    with pytest.raises(ValueError):
        CoreLease(0)
