"""The recognition micro-batcher: text-line crops from every request in flight, batched.

One queue per language. A batch is sent to the device when it holds the model's batch
size, or when its oldest crop has waited the batch window; under the default *adaptive*
policy a batch is also sent at once whenever no recognition batch is on the device, so
a lone request never waits for a window while the device sits idle. At most
``max_batches_in_flight`` batches are out at once: while one runs, the next is packed
and the queues fill, which is what makes batches full under load.

For dynamic-width models a batch takes the oldest crop and the queued crops closest to
it in width, to limit padding; fixed-width models take crops in arrival order. Results go
back to each crop's own caller, tagged with the crop's index in its submission. Crops of
a caller that has gone (cancelled, timed out) are dropped before they are batched.
"""

from __future__ import annotations

import logging
import time
from collections import deque

import attrs
import numpy as np
import trio

from npu.backend import ModelSpec
from ocr.recognition import batch_width, ctc_greedy_decode, pack_dynamic, pack_fixed_rgb

from .messages import RecResult, RecSubmission
from .npu_owner import DeviceBoard, DeviceClient, caller_gone

log = logging.getLogger("hailo_ocr.batcher")


@attrs.frozen
class BatcherStatistics:
    batches: int
    slots_filled: int  # crops recognised
    slots_run: int  # batch capacity used by those batches (batches x batch size)
    slots_padded: int  # blank frames sent to fill a fixed-batch model
    crops_dropped: int  # crops of callers that left before their batch
    queued: int
    batches_in_flight: int
    queue_wait_total_s: float
    queue_wait_max_s: float

    @property
    def fill(self) -> float:
        return self.slots_filled / self.slots_run if self.slots_run else 0.0


@attrs.define
class _Pending:
    submission: RecSubmission
    index: int
    width: int
    enqueued: float


@attrs.define
class _Counters:
    batches: int = 0
    slots_filled: int = 0
    slots_run: int = 0
    slots_padded: int = 0
    crops_dropped: int = 0
    queue_wait_total_s: float = 0.0
    queue_wait_max_s: float = 0.0


class Batcher:
    """State and loop of the batcher actor. Other actors only send it
    :class:`RecSubmission` s; they read its :meth:`statistics` snapshot."""

    def __init__(
        self, device: DeviceClient, board: DeviceBoard, *, policy: str = "adaptive",
        window_s: float = 0.008, max_queued: int = 4096, max_in_flight: int = 2,
    ) -> None:
        self._device = device
        self._board = board
        self._policy = policy
        self._window = window_s
        self._max_queued = max_queued
        self._queues: dict[str, deque[_Pending]] = {}
        self._queued = 0
        self._in_flight = 0
        self._slots = trio.Semaphore(max_in_flight)
        self._changed = trio.Event()
        self._room = trio.Event()
        self._c = _Counters()

    def statistics(self) -> BatcherStatistics:
        c = self._c
        return BatcherStatistics(
            batches=c.batches, slots_filled=c.slots_filled, slots_run=c.slots_run,
            slots_padded=c.slots_padded, crops_dropped=c.crops_dropped, queued=self._queued,
            batches_in_flight=self._in_flight, queue_wait_total_s=c.queue_wait_total_s,
            queue_wait_max_s=c.queue_wait_max_s,
        )

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # -- intake ---------------------------------------------------------------------
    async def _intake(self, inbox: trio.MemoryReceiveChannel) -> None:
        async for sub in inbox:
            while self._queued >= self._max_queued:
                self._room = trio.Event()
                await self._room.wait()
            q = self._queues.setdefault(sub.language, deque())
            now = time.monotonic()
            for i, crop in enumerate(sub.crops):
                q.append(_Pending(sub, i, int(crop.shape[1]), now))
            self._queued += len(sub.crops)
            self._wake()

    # -- batch forming ----------------------------------------------------------------
    def _drop_gone(self) -> None:
        for q in self._queues.values():
            if q and any(caller_gone(p.submission.reply) for p in q):
                kept = [p for p in q if not caller_gone(p.submission.reply)]
                dropped = len(q) - len(kept)
                q.clear()
                q.extend(kept)
                self._queued -= dropped
                self._c.crops_dropped += dropped

    def _spec(self, language: str) -> ModelSpec | None:
        info = self._board.info
        if info is None:
            return None
        try:
            return info.model(f"recognition_{language}")
        except KeyError:
            return None

    def _due(self, now: float) -> tuple[str | None, float]:
        """The language whose batch should go now (or None), and the next deadline."""
        next_deadline = float("inf")
        oldest_lang, oldest_time = None, float("inf")
        for lang, q in self._queues.items():
            if not q:
                continue
            spec = self._spec(lang)
            size = spec.batch_size if spec else 1
            if len(q) >= size:
                return lang, now
            if q[0].enqueued < oldest_time:
                oldest_lang, oldest_time = lang, q[0].enqueued
            deadline = q[0].enqueued + self._window
            if deadline <= now:
                return lang, now
            next_deadline = min(next_deadline, deadline)
        if oldest_lang is not None and self._policy == "adaptive" and self._in_flight == 0:
            return oldest_lang, now
        return None, next_deadline

    def _take(self, lang: str, spec: ModelSpec) -> list[_Pending]:
        q = self._queues[lang]
        size = spec.batch_size
        if len(q) <= size:
            batch = list(q)
            q.clear()
        elif spec.policy == "fixed":
            batch = [q.popleft() for _ in range(size)]
        else:
            first = q.popleft()
            rest = sorted(q, key=lambda p: abs(p.width - first.width))[: size - 1]
            chosen = {id(p) for p in rest}
            kept = [p for p in q if id(p) not in chosen]
            q.clear()
            q.extend(kept)
            batch = [first, *sorted(rest, key=lambda p: p.enqueued)]
        self._queued -= len(batch)
        self._room.set()
        return batch

    async def _dispatch(self, nursery: trio.Nursery) -> None:
        while True:
            self._drop_gone()
            now = time.monotonic()
            lang, deadline = self._due(now)
            if lang is None:
                changed = self._changed
                with trio.move_on_at(deadline):
                    await changed.wait()
                continue
            spec = self._spec(lang)
            if spec is None:  # device not ready: wait for it, crops keep their deadlines
                with trio.move_on_after(0.05):
                    await self._board.wait_ready()
                if self._spec(lang) is None:
                    self._fail_queue(lang, "no recognition model is loaded for this language")
                continue
            await self._slots.acquire()
            self._drop_gone()
            if not self._queues.get(lang):
                self._slots.release()
                continue
            batch = self._take(lang, spec)
            self._in_flight += 1
            nursery.start_soon(self._run_batch, spec, batch)

    def _fail_queue(self, lang: str, why: str) -> None:
        from npu.errors import InferenceError

        q = self._queues.get(lang) or deque()
        err = InferenceError(why)
        while q:
            p = q.popleft()
            self._queued -= 1
            _deliver(p, RecResult(p.index, error=err))

    # -- running a batch --------------------------------------------------------------
    async def _run_batch(self, spec: ModelSpec, batch: list[_Pending]) -> None:
        try:
            now = time.monotonic()
            for p in batch:
                wait = now - p.enqueued
                self._c.queue_wait_total_s += wait
                self._c.queue_wait_max_s = max(self._c.queue_wait_max_s, wait)
            crops = [p.submission.crops[p.index] for p in batch]
            tensor, padded = await trio.to_thread.run_sync(_pack, spec, crops)
            try:
                probs = await self._device.infer(spec.id, tensor)
                decoded = await trio.to_thread.run_sync(
                    ctc_greedy_decode, probs[: len(batch)], spec.charset
                )
            except Exception as exc:
                for p in batch:
                    _deliver(p, RecResult(p.index, error=exc))
                return
            self._c.batches += 1
            self._c.slots_filled += len(batch)
            self._c.slots_run += spec.batch_size
            self._c.slots_padded += padded
            for p, (text, conf) in zip(batch, decoded, strict=True):
                _deliver(p, RecResult(p.index, text, conf))
        finally:
            self._in_flight -= 1
            self._slots.release()
            self._wake()

    async def serve(
        self, inbox: trio.MemoryReceiveChannel,
        *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._intake, inbox)
            task_status.started()
            await self._dispatch(nursery)


def _pack(spec: ModelSpec, crops: list[np.ndarray]) -> tuple[np.ndarray, int]:
    """Build the device tensor for a batch; returns it and how many blank frames it has."""
    if spec.layout == "nhwc_uint8_rgb":
        slots = spec.batch_size if spec.fixed_batch else None
        tensor = pack_fixed_rgb(crops, spec.width or 320, pad_value=spec.pad_value, slots=slots)
    else:
        width = spec.width or 320
        if spec.policy == "dynamic":
            width = batch_width(crops, width)
        tensor = pack_dynamic(crops, width)
        if spec.fixed_batch and len(crops) < spec.batch_size:
            pad = np.zeros((spec.batch_size - len(crops), *tensor.shape[1:]), tensor.dtype)
            tensor = np.concatenate([tensor, pad])
    return tensor, tensor.shape[0] - len(crops)


def _deliver(p: _Pending, result: RecResult) -> None:
    try:
        p.submission.reply.send_nowait(result)
    except (trio.BrokenResourceError, trio.ClosedResourceError, trio.WouldBlock):
        pass  # the caller went away
