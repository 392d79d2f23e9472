"""The recognition micro-batcher: text-line crops from every request in flight, batched.

One queue per language. When a queue may go is decided by the *policy*, one function
each in the table :data:`POLICY_RULES`:

* ``adaptive`` (the default): at once when it holds a full batch (the model's batch
  size), or as soon as the device has room for another recognition batch. A lone request
  therefore never waits for a window while the device sits idle, and under load the
  crops that arrive while a batch runs collect into the next one, which is what fills
  batches. The window plays no part: while the device is busy, sending a partial batch
  early only queues it behind the running one and leaves the crops that arrive
  meanwhile for another, emptier batch.
* ``window``: when it holds a full batch, or when its oldest crop has waited the batch
  window. Simpler and predictable, but a lone crop always pays the window.

``benchmarks/batch_fill.py`` measures both (fill under 1-8 clients, single-client
latency); adaptive is the default because it is never slower and fills as well. At most
``max_in_flight`` batches are out at once *per device* (packing the next while one runs):
where languages are read on different devices (Chinese on the CPU beside English on the
NPU, :mod:`npu.placement`), a slow CPU batch never holds up an NPU batch. The device room
the adaptive policy looks at is ``min(max_in_flight, jobs the device runs at once)``.
When several languages are due, the one whose oldest crop has waited longest goes first.
The batcher knows a language's model only from the :class:`~actors.routing.ModelTable`
(its input policy, batch size, device) and sends batches through the routing client.

For dynamic-width models a crop comes with the width it is to be padded to (its own,
``ocr.recognition.pad_width``), and a batch takes the oldest crop and the queued crops of
that same width, so a line's text never depends on what else is in flight (crops without
a declared width are batched with those closest to the oldest in width, to limit
padding); fixed-width models take crops in arrival order. Fixed-batch
models get blank frames in the unused slots, whose outputs are dropped. Results go back
to each crop's own caller, tagged with the crop's index in its submission. Crops of a
caller that has gone (cancelled, timed out) are dropped before they are batched, and a
batch whose callers have all gone is not sent.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import attrs
import numpy as np
import trio

from npu.backend import ModelSpec, recognition_id
from npu.errors import InferenceError
from ocr.recognition import (
    REC_NOMINAL_WIDTH,
    batch_width,
    ctc_greedy_decode,
    pack_dynamic,
    pack_fixed_rgb,
)

from .config import POLICIES, BatchPolicy
from .errors import ShuttingDown, fresh_error
from .messages import RecResult, RecSubmission
from .reply import answer, caller_gone
from .routing import DeviceClient, ModelTable

log = logging.getLogger("hailo_ocr.batcher")



@attrs.frozen
class QueueState:
    """What a batching policy sees of one language's queue."""

    oldest: float  # when its oldest crop was queued (Trio clock)
    full: bool  # it holds a whole batch (or its model is unknown: fail it at once)
    device_room: bool  # its device could start another recognition batch now
    window_s: float  # the configured batch window


def _adaptive(q: QueueState) -> float:
    """Go when full or when the device has room; otherwise wait for a change."""
    return -math.inf if q.full or q.device_room else math.inf


def _window(q: QueueState) -> float:
    """Go when full or when the oldest crop has waited the window."""
    return -math.inf if q.full else q.oldest + q.window_s


#: The batching policies by name: each says from when a queue may go (a time on the Trio
#: clock; ``-inf``: now, ``inf``: not until something changes). The module docstring says
#: why each; a new policy is its name in :data:`actors.config.BatchPolicy`, one function
#: and one entry here.
POLICY_RULES: Final[Mapping[BatchPolicy, Callable[[QueueState], float]]] = {
    "adaptive": _adaptive,
    "window": _window,
}
assert set(POLICY_RULES) == set(POLICIES), "every batching policy name needs its rule"


@attrs.frozen
class BatcherStatistics:
    batches: int  # batches run successfully
    slots_filled: int  # crops recognised
    slots_run: int  # batch capacity used by those batches (batches x batch size)
    slots_padded: int  # blank frames sent to fill a fixed-batch model
    crops_dropped: int  # crops of callers that left before their batch
    queued: int
    batches_in_flight: int
    queue_wait_total_s: float  # summed over every crop sent in a batch
    queue_wait_max_s: float
    #: How many batches carried each number of real crops (for the metrics histogram).
    batch_sizes: dict[int, int] = attrs.field(factory=dict)
    batches_failed: int = 0  # batches whose device call (or packing) failed
    crops_waited: int = 0  # crops counted in queue_wait_total_s
    restarts: int = 0  # times the batching loop was restarted after an internal error

    @property
    def fill(self) -> float:
        return self.slots_filled / self.slots_run if self.slots_run else 0.0

    @property
    def queue_wait_mean_s(self) -> float:
        return self.queue_wait_total_s / self.crops_waited if self.crops_waited else 0.0


@attrs.define(eq=False)
class _Pending:
    submission: RecSubmission
    index: int
    width: int
    enqueued: float
    #: ``width`` is the exact padded width this crop is recognised at (dynamic models):
    #: it is batched only with crops of the same width.
    exact: bool = False


@attrs.define
class _Counters:
    batches: int = 0
    batches_failed: int = 0
    slots_filled: int = 0
    slots_run: int = 0
    slots_padded: int = 0
    crops_dropped: int = 0
    crops_waited: int = 0
    queue_wait_total_s: float = 0.0
    queue_wait_max_s: float = 0.0
    restarts: int = 0
    batch_sizes: dict[int, int] = attrs.Factory(dict)


RunSync = Callable[..., Awaitable[Any]]


class Batcher:
    """State and loop of the batcher actor. Other actors send it :class:`RecSubmission` s
    over its inbox, may :meth:`withdraw` a submission they no longer want, and read its
    :meth:`statistics` snapshot.

    ``run_sync`` runs the packing and CTC decoding off the Trio thread
    (``trio.to_thread.run_sync``); tests under a mock clock pass an inline runner so
    that the clock cannot jump while a worker thread computes.
    """

    def __init__(
        self, device: DeviceClient, models: ModelTable, *, policy: BatchPolicy = "adaptive",
        window_s: float = 0.008, max_queued: int = 4096, max_in_flight: int = 2,
        run_sync: RunSync | None = None,
    ) -> None:
        if policy not in POLICIES:
            raise ValueError(
                f"batching policy must be one of {tuple(POLICIES)}, not {policy!r}"
            )
        self._device = device
        self._models = models
        self._policy = policy
        self._goes_at = POLICY_RULES[policy]
        self._window = window_s
        self._max_queued = max(1, max_queued)
        self._max_in_flight = max(1, max_in_flight)
        self._run_sync: RunSync = run_sync or trio.to_thread.run_sync
        self._queues: dict[str, deque[_Pending]] = {}
        self._queued = 0
        self._in_flight: dict[str, int] = {}  # device -> recognition batches on it
        self._changed = trio.Event()
        self._room = trio.Event()
        self._c = _Counters()

    @property
    def policy(self) -> BatchPolicy:
        return self._policy

    def statistics(self) -> BatcherStatistics:
        c = self._c
        return BatcherStatistics(
            batches=c.batches, slots_filled=c.slots_filled, slots_run=c.slots_run,
            slots_padded=c.slots_padded, crops_dropped=c.crops_dropped, queued=self._queued,
            batches_in_flight=sum(self._in_flight.values()),
            queue_wait_total_s=c.queue_wait_total_s, queue_wait_max_s=c.queue_wait_max_s,
            batch_sizes=dict(c.batch_sizes),
            batches_failed=c.batches_failed, crops_waited=c.crops_waited, restarts=c.restarts,
        )

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _freed(self, n: int) -> None:
        """``n`` crops left the queues: let a waiting intake go on."""
        self._queued -= n
        if n:
            self._room.set()

    # -- intake ---------------------------------------------------------------------
    async def _intake(self, inbox: trio.MemoryReceiveChannel) -> None:
        async for sub in inbox:
            while self._queued >= self._max_queued and not caller_gone(sub.reply):
                # Bounded by the callers: each request has a deadline, after which
                # its crops are withdrawn and room appears.
                if self._room.is_set():
                    self._room = trio.Event()
                await self._room.wait()
            if caller_gone(sub.reply):
                self._c.crops_dropped += len(sub.crops)
                continue
            q = self._queues.setdefault(sub.language, deque())
            now = trio.current_time()
            for i, crop in enumerate(sub.crops):
                width = sub.widths[i] if sub.widths is not None else int(crop.shape[1])
                q.append(_Pending(sub, i, width, now, exact=sub.widths is not None))
            self._queued += len(sub.crops)
            self._wake()

    def withdraw(self, reply: trio.MemorySendChannel) -> int:
        """Drop the queued crops answered on ``reply`` (their request ended early).
        Returns how many were dropped. Crops already in a running batch are not recalled;
        their results are discarded."""
        dropped = 0
        for q in self._queues.values():
            if any(p.submission.reply is reply for p in q):
                kept = [p for p in q if p.submission.reply is not reply]
                dropped += len(q) - len(kept)
                q.clear()
                q.extend(kept)
        if dropped:
            self._c.crops_dropped += dropped
            self._freed(dropped)
            self._wake()
        return dropped

    # -- batch forming ----------------------------------------------------------------
    def _drop_gone(self) -> None:
        gone: dict[int, bool] = {}
        dropped = 0
        for q in self._queues.values():
            if not q:
                continue
            keep = []
            for p in q:
                key = id(p.submission)
                if key not in gone:
                    gone[key] = caller_gone(p.submission.reply)
                if not gone[key]:
                    keep.append(p)
            if len(keep) != len(q):
                dropped += len(q) - len(keep)
                q.clear()
                q.extend(keep)
        if dropped:
            self._c.crops_dropped += dropped
            self._freed(dropped)

    def _spec(self, language: str) -> ModelSpec | None:
        return self._models.rec_spec(language)

    def _device_of(self, language: str) -> str | None:
        model_id = recognition_id(language)
        return self._models.device(model_id) if self._models.has(model_id) else None

    def _device_room(self, language: str, device: str) -> bool:
        """True when ``device`` could start another recognition batch right now."""
        slots = self._models.slots(recognition_id(language))
        return self._in_flight.get(device, 0) < min(slots, self._max_in_flight)

    def _due(self, now: float) -> tuple[str | None, float]:
        """The language whose batch should go now (or None), and when to look again."""
        best: tuple[str, float] | None = None
        next_deadline = float("inf")
        for lang, q in self._queues.items():
            if not q:
                continue
            spec = self._spec(lang)
            device = self._device_of(lang)
            if device is not None and self._in_flight.get(device, 0) >= self._max_in_flight:
                continue  # a finishing batch on that device wakes the loop
            head = q[0].enqueued
            goes_at = self._goes_at(QueueState(
                oldest=head, full=spec is None or len(q) >= spec.batch_size,
                device_room=device is not None and self._device_room(lang, device),
                window_s=self._window,
            ))
            ready = goes_at <= now
            if not ready:
                next_deadline = min(next_deadline, goes_at)
            if ready and (best is None or head < best[1]):
                best = (lang, head)
        return (best[0] if best else None), next_deadline

    def _take(self, lang: str, spec: ModelSpec) -> list[_Pending]:
        q = self._queues[lang]
        size = max(1, spec.batch_size)
        if spec.policy != "fixed" and q[0].exact:
            # A dynamic model's text depends on how much padding a line gets: take only
            # crops to be padded to the oldest crop's width (a width each line's own size
            # decides, ocr.recognition.pad_width), so results never depend on what else
            # is in flight.
            first = q[0]
            if not spec.fixed_batch:
                size = min(size, max(1, _columns_budget(spec) // max(1, first.width)))
            batch = [p for p in q if p.exact and p.width == first.width][:size]
            taken = {id(p) for p in batch}
            kept = [p for p in q if id(p) not in taken]
            q.clear()
            q.extend(kept)
        elif len(q) <= size:
            batch = list(q)
            q.clear()
        elif spec.policy == "fixed":
            batch = [q.popleft() for _ in range(size)]
        else:
            first = q.popleft()
            # Closest in width to the oldest crop; ties go to the earlier arrival.
            order = sorted(range(len(q)), key=lambda i: (abs(q[i].width - first.width), i))
            chosen = set(order[: size - 1])
            rest = [p for i, p in enumerate(q) if i in chosen]
            kept = [p for i, p in enumerate(q) if i not in chosen]
            q.clear()
            q.extend(kept)
            batch = [first, *rest]
        self._freed(len(batch))
        return batch

    def _fail_queue(self, lang: str, error: BaseException) -> None:
        q = self._queues.get(lang) or deque()
        n = len(q)
        while q:
            p = q.popleft()
            _deliver(p, RecResult(p.index, error=fresh_error(error)))
        self._freed(n)

    def _fail_all(self, error: BaseException) -> None:
        for lang in list(self._queues):
            self._fail_queue(lang, error)

    async def _dispatch(self, nursery: trio.Nursery) -> None:
        while True:
            self._drop_gone()
            lang, deadline = self._due(trio.current_time())
            if lang is None:
                changed = self._changed
                with trio.move_on_at(deadline):
                    await changed.wait()
                continue
            spec = self._spec(lang)
            if spec is None:  # the service only admits languages it has models for
                self._fail_queue(
                    lang, InferenceError(f"no recognition model is loaded for {lang!r}")
                )
                continue
            batch = self._take(lang, spec)
            device = self._models.device(spec.id)
            self._in_flight[device] = self._in_flight.get(device, 0) + 1
            nursery.start_soon(self._run_batch, spec, batch, device)

    # -- running a batch --------------------------------------------------------------
    async def _run_batch(self, spec: ModelSpec, batch: list[_Pending], device: str) -> None:
        delivered = False
        try:
            now = trio.current_time()
            for p in batch:
                wait = now - p.enqueued
                self._c.queue_wait_total_s += wait
                self._c.queue_wait_max_s = max(self._c.queue_wait_max_s, wait)
            self._c.crops_waited += len(batch)
            try:
                crops = [p.submission.crops[p.index] for p in batch]
                min_width = max((p.width for p in batch if p.exact), default=0)
                tensor, padded = await self._run_sync(_pack, spec, crops, min_width)
                if all(caller_gone(p.submission.reply) for p in batch):
                    self._c.crops_dropped += len(batch)
                    delivered = True
                    return  # everyone left while we packed: spare the device
                probs = await self._device.infer(spec.id, tensor)
                if len(probs) < len(batch):
                    raise InferenceError(
                        f"{spec.id} returned {len(probs)} results for {len(batch)} crops"
                    )
                decoded = await self._run_sync(
                    ctc_greedy_decode, probs[: len(batch)], spec.charset
                )
            except Exception as exc:
                self._c.batches_failed += 1
                for p in batch:
                    _deliver(p, RecResult(p.index, error=fresh_error(exc)))
                delivered = True
                return
            self._c.batches += 1
            self._c.slots_filled += len(batch)
            self._c.slots_run += spec.batch_size
            self._c.slots_padded += padded
            self._c.batch_sizes[len(batch)] = self._c.batch_sizes.get(len(batch), 0) + 1
            for p, (text, conf) in zip(batch, decoded, strict=True):
                _deliver(p, RecResult(p.index, text, conf))
            delivered = True
        finally:
            if not delivered:  # cancelled: the service is stopping
                for p in batch:
                    _deliver(p, RecResult(p.index, error=ShuttingDown("the service is stopping")))
            self._in_flight[device] -= 1
            self._wake()

    async def serve(
        self, inbox: trio.MemoryReceiveChannel,
        *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run the batcher until cancelled. An internal error fails the crops queued and
        in flight (their requests end with ``InferenceError``) and restarts the batching
        loop, so a bug costs some requests, not the service."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._intake, inbox)
                task_status.started()
                while True:
                    try:
                        async with trio.open_nursery() as batches:
                            await self._dispatch(batches)
                    except Exception:
                        log.exception("the recognition batcher failed; restarting it")
                        self._c.restarts += 1
                        self._fail_all(InferenceError("internal error in the recognition batcher"))
                        await trio.sleep(0.05)
        finally:
            self._fail_all(ShuttingDown("the service is stopping"))


def refuse_submissions(inbox: trio.MemoryReceiveChannel, error: BaseException) -> None:
    """Answer every crop of the submissions still buffered in ``inbox`` with ``error``
    (the batcher has stopped; nobody will batch them)."""
    while True:
        try:
            sub = inbox.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
            return
        for i in range(len(sub.crops)):
            if not answer(sub.reply, RecResult(i, error=fresh_error(error))):
                break  # the caller went away


def _columns_budget(spec: ModelSpec) -> int:
    """Most padded columns in one dynamic-width batch: ``batch_size`` crops at twice the
    nominal width. Recognition's working memory grows with the batch's columns (about
    0.55 MB per column at height 48 on the CPU: 420 MB for 8 lines of 1920), so wide lines
    go in smaller batches; a line's text does not depend on its batch's size
    (benchmarks/RESULTS.md)."""
    return max(1, spec.batch_size) * 2 * (spec.width or REC_NOMINAL_WIDTH)


def _pack(
    spec: ModelSpec, crops: list[np.ndarray], min_width: int = 0
) -> tuple[np.ndarray, int]:
    """Build the device tensor for a batch; returns it and how many blank frames it has.
    ``min_width``: the width the batch's crops declared (0: none); a dynamic batch is
    padded to it instead of the model's nominal width."""
    nominal = spec.width or REC_NOMINAL_WIDTH
    if spec.layout == "nhwc_uint8_rgb":
        slots = spec.batch_size if spec.fixed_batch else None
        tensor = pack_fixed_rgb(crops, nominal, pad_value=spec.pad_value, slots=slots)
    else:
        width = nominal
        if spec.policy == "dynamic":
            # Crops with a declared width (ocr.recognition.pad_width) are padded to exactly
            # that, below the nominal width too; others to the widest, at least nominal.
            width = batch_width(crops, min_width or width)
        tensor = pack_dynamic(crops, width)
        if spec.fixed_batch and len(crops) < spec.batch_size:
            pad = np.zeros((spec.batch_size - len(crops), *tensor.shape[1:]), tensor.dtype)
            tensor = np.concatenate([tensor, pad])
    return tensor, tensor.shape[0] - len(crops)


def _deliver(p: _Pending, result: RecResult) -> None:
    answer(p.submission.reply, result)
