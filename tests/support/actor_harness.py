"""A batcher on its own, wired to a fake backend without the NPU owner, for tests that
need exact control of time (``trio.testing.MockClock``) and of what reaches the device."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import attrs
import numpy as np
import trio

from actors.batcher import Batcher
from actors.messages import RecResult, RecSubmission
from actors.routing import ModelTable
from tests.support.fakes import FakeBackend, FakeDevice, id_crop


async def inline_run_sync(fn, *args):
    """Run ``fn`` on the Trio thread: under a mock clock a worker thread would let the
    clock jump while it computes."""
    return fn(*args)


class DirectClient:
    """Calls the backend directly, at most ``max_jobs_in_flight`` at a time, like a
    device owner does (without its fault handling)."""

    def __init__(self, backend: FakeBackend, slots: int) -> None:
        self._backend = backend
        self._slots = trio.Semaphore(slots)

    async def infer(self, model_id: str, batch: np.ndarray) -> np.ndarray:
        async with self._slots:
            return await self._backend.infer(model_id, batch)


@attrs.define
class BatcherHarness:
    batcher: Batcher
    device: FakeDevice
    inbox: trio.MemorySendChannel

    async def recognise(
        self, ids: Sequence[int], *, language: str = "en", widths: Sequence[int] | None = None,
        withdraw: bool = True,
    ) -> list[str]:
        """What the orchestrator does: submit crops showing ``ids``, collect every result
        by its index, and return the texts in the caller's order. ``withdraw=False``
        leaves it to the batcher to notice a caller that was cancelled."""
        widths = widths or [96] * len(ids)
        crops = tuple(id_crop(i, w) for i, w in zip(ids, widths, strict=True))
        send, recv = trio.open_memory_channel[RecResult](len(crops))
        texts: list[str | None] = [None] * len(crops)
        got = 0
        try:
            async with recv:
                await self.inbox.send(RecSubmission(language, crops, send))
                while got < len(crops):
                    res = await recv.receive()
                    if res.error is not None:
                        raise res.error
                    assert texts[res.index] is None, f"crop {res.index} answered twice"
                    texts[res.index] = res.text
                    got += 1
        finally:
            if got < len(crops) and withdraw:
                self.batcher.withdraw(send)
        return [t for t in texts if t is not None]


@asynccontextmanager
async def running_batcher(
    device: FakeDevice, *, policy: str = "adaptive", window_s: float = 0.008,
    max_in_flight: int = 2, max_queued: int = 4096, threads: bool = False,
) -> AsyncIterator[BatcherHarness]:
    backend = FakeBackend(device)
    info = backend.load()
    send, recv = trio.open_memory_channel[RecSubmission](256)
    batcher = Batcher(
        DirectClient(backend, info.max_jobs_in_flight), ModelTable.from_backends({"cpu": info}),
        policy=policy,
        window_s=window_s, max_queued=max_queued, max_in_flight=max_in_flight,
        run_sync=None if threads else inline_run_sync,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(batcher.serve, recv)
        yield BatcherHarness(batcher, device, send)
        nursery.cancel_scope.cancel()
