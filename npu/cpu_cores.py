"""The CPU's cores, shared out among the CPU backend's jobs (:class:`CoreLease`).

The CPU owner runs as many jobs at once as the backend has ONNX Runtime threads (one per
core by default), and each job first takes cores here:

* a detection is one large input whose operators ONNX Runtime splits over every thread
  of its session: it takes every core;
* a recognition or classifier batch runs on single-threaded sessions: it takes one core,
  plus the cores idle at that moment, and its lines are split into one share per core.

So two recognition batches run side by side, one core each, with no synchronisation
between them, while a lone batch still has every core; and no job's threads ever compete
with another job's for a core. A PP-OCR line crop is too small an input for its
operators to split well over cores: on a receipt's 32 batches two at once on one core
each took 0.43 s against 0.64 s one at a time over both cores, and on a form whose lines
are each a batch of one 0.41 s against 0.70 s (benchmarks/RESULTS.md, row 42).

Cores go first come, first served (Trio's semaphore wakes its waiters in order): a
detection waiting for every core is not overtaken by batches that arrive after it. Only
one job at a time may wait for more than one core, so two of them can never each hold a
part of what the other needs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio


class CoreLease:
    """``cores`` CPU cores, held by jobs for the length of their computation."""

    def __init__(self, cores: int) -> None:
        if cores < 1:
            raise ValueError(f"a lease needs at least one core, got {cores}")
        self.cores = cores
        self._free = trio.Semaphore(cores)
        self._gathering = trio.Lock()  # held by the one job waiting for more than one core

    @asynccontextmanager
    async def hold(self, at_least: int, at_most: int) -> AsyncIterator[int]:
        """Wait (cancellably) until ``at_least`` cores are free, take them and as many
        more as are free right now up to ``at_most``; yields how many were taken and
        gives them back on exit."""
        at_least = max(1, min(at_least, self.cores))
        at_most = max(at_least, min(at_most, self.cores))
        taken = 0
        try:
            if at_least == 1:
                await self._free.acquire()
                taken = 1
            else:
                async with self._gathering:
                    for _ in range(at_least):
                        await self._free.acquire()
                        taken += 1
            while taken < at_most:
                try:
                    self._free.acquire_nowait()
                except trio.WouldBlock:
                    break
                taken += 1
            yield taken
        finally:
            for _ in range(taken):
                self._free.release()

    @property
    def free(self) -> int:
        """Cores no job holds now."""
        return self._free.value
