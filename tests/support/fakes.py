"""Fake inference backends for the actor tests.

A :class:`FakeDevice` is the "hardware": it outlives the backends loaded on it (the NPU
owner makes a new :class:`FakeBackend` after every fault), holds the fault plan, and
records every call, load and close so tests can check what really ran.

Identity routing: a crop's colour encodes an integer id (:func:`id_colour`), and the fake
recognition model "reads" that id back from the pixels and outputs CTC probabilities that
decode to its decimal digits. So a test can tell, for every result, which crop it was
computed from: a result that reached the wrong caller, or a padded slot whose output
leaked, shows up as a wrong id. Blank (padding) frames hold no ink and decode to "".

The fake detection model marks every dark pixel as text, so an image of coloured bars on
white (:func:`bars_image`) gives one region per bar through the real DB post-processing.

Delays and hangs use ``trio.sleep`` (so they work under ``trio.testing.MockClock``);
``threaded=True`` runs each call in a worker thread instead, like the ONNX backend does.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence

import attrs
import cv2
import numpy as np
import trio

from npu.backend import DETECTION, BackendInfo, ModelSpec, recognition_id
from npu.errors import DeviceLost, InferenceError, ModelLoadError

#: The fake recogniser's classes: CTC blank, the ten digits, and a space.
CHARSET: tuple[str, ...] = ("", *"0123456789", " ")
#: Time steps of the fake recogniser's output (enough for 8-digit ids).
STEPS = 16
#: Channel values of "ink" stay at or below this; white background and grey padding
#: (127/128) are above it.
INK_MAX = 100


def id_colour(crop_id: int) -> tuple[int, int, int]:
    """The BGR colour that encodes ``crop_id`` (1 .. 999_999): base-100 digits."""
    if not 0 < crop_id < 100**3:
        raise ValueError(f"crop ids run from 1 to {100**3 - 1}, not {crop_id}")
    return (crop_id % 100, crop_id // 100 % 100, crop_id // 10_000 % 100)


def colour_id(bgr: Sequence[int]) -> int:
    b, g, r = (int(v) for v in bgr)
    return b + 100 * g + 10_000 * r


def id_crop(crop_id: int, width: int = 96, height: int = 48) -> np.ndarray:
    """A recognition-ready crop (``height`` rows, BGR uint8) whose pixels encode ``crop_id``."""
    crop = np.empty((height, width, 3), dtype=np.uint8)
    crop[:] = id_colour(crop_id)
    return crop


def bars_image(ids: Sequence[int], *, bar_w: int = 220, bar_h: int = 18, gap: int = 22) -> bytes:
    """A PNG: one horizontal bar per id, top to bottom, on white. Reading order = ``ids``."""
    height = gap + len(ids) * (bar_h + gap)
    img = np.full((max(height, 64), bar_w + 2 * gap, 3), 255, dtype=np.uint8)
    for k, crop_id in enumerate(ids):
        y = gap + k * (bar_h + gap)
        img[y : y + bar_h, gap : gap + bar_w] = id_colour(crop_id)
    ok, png = cv2.imencode(".png", img)
    assert ok
    return png.tobytes()


def _frame_id(frame_bgr: np.ndarray) -> int | None:
    """The id a frame shows (the commonest ink colour on its middle row), or None."""
    row = frame_bgr[frame_bgr.shape[0] // 2]
    ink = row[(row <= INK_MAX).all(axis=1)]
    if len(ink) == 0:
        return None
    colour, _ = Counter(map(tuple, ink.tolist())).most_common(1)[0]
    return colour_id(colour)


def _one_hot_text(text: str) -> np.ndarray:
    """(STEPS, classes) probabilities that greedy CTC decodes to ``text``, confidence 1."""
    out = np.zeros((STEPS, len(CHARSET)), dtype=np.float32)
    out[:, 0] = 1.0  # blank everywhere ...
    for k, ch in enumerate(text[: STEPS // 2]):
        out[2 * k, 0] = 0.0  # ... but a digit on every other step, so repeats survive
        out[2 * k, CHARSET.index(ch)] = 1.0
    return out


@attrs.define
class Call:
    """One ``infer`` call as the device saw it."""

    model_id: str
    frames: int
    ids: list[int | None]  # recognition: the id each frame shows (None = blank frame)
    started: float
    finished: float | None = None
    result: str = "running"  # "ok", "error: <type>", "cancelled"
    shape: tuple[int, ...] = ()  # the batch's shape and dtype, as the device received it
    dtype: str = ""


@attrs.define
class _Rule:
    kind: str | None  # "detection", "recognition", or None for any call
    call_no: int  # triggers on this call number (of that kind), 1-based
    action: str  # "raise" | "hang" | "lose"
    error: BaseException | None = None
    seconds: float = 0.0


@attrs.define(eq=False)
class FakeDevice:
    """The fake hardware and its fault plan. Create backends with :meth:`factory`."""

    rec_batch_size: int = 8
    fixed_batch: bool = False
    #: "nchw_float" (ONNX-style, dynamic width) or "nhwc_uint8_rgb" (NPU-style).
    layout: str = "nchw_float"
    rec_policy: str = "dynamic"
    rec_width: int = 320
    languages: tuple[str, ...] = ("en", "zh")  # as the default configuration
    max_jobs_in_flight: int = 1
    det_delay: float = 0.0
    rec_delay: float = 0.0
    threaded: bool = False
    #: The next this many loads fail with ModelLoadError (a device that stays dead).
    failing_loads: int = 0
    # -- state and records
    lost: bool = False
    calls: list[Call] = attrs.Factory(list)
    loads: int = 0
    closes: int = 0
    open_backends: int = 0
    active_calls: int = 0
    max_active_calls: int = 0
    _counts: Counter = attrs.Factory(Counter)
    _rules: list[_Rule] = attrs.Factory(list)

    def factory(self, device: str = "cpu") -> dict[str, Callable[[frozenset[str]], FakeBackend]]:
        """The backend factories for ``open_ocr_service``: this fake as the one device
        ``device``, building a backend for whatever model ids are placed on it."""
        return {device: lambda model_ids: FakeBackend(self, model_ids)}

    # -- fault plan
    def _calls_of(self, kind: str | None) -> int:
        return self._counts[kind] if kind else sum(self._counts.values())

    def raise_after(self, n: int, error: BaseException, kind: str | None = "recognition") -> None:
        """Let ``n`` more calls of ``kind`` through, then raise ``error`` on the next."""
        self._rules.append(_Rule(kind, self._calls_of(kind) + n + 1, "raise", error))

    def hang_after(self, n: int, seconds: float, kind: str | None = "recognition") -> None:
        """The call after the next ``n`` (of ``kind``) sleeps ``seconds`` before answering."""
        self._rules.append(_Rule(kind, self._calls_of(kind) + n + 1, "hang", seconds=seconds))

    def lose_after(self, n: int, kind: str | None = None) -> None:
        """After ``n`` more calls the device is lost: every call raises ``DeviceLost``
        until a backend is loaded again."""
        self._rules.append(_Rule(kind, self._calls_of(kind) + n + 1, "lose"))

    # -- what ran
    def rec_calls(self) -> list[Call]:
        return [c for c in self.calls if c.model_id.startswith("recognition")]

    def det_calls(self) -> list[Call]:
        return [c for c in self.calls if c.model_id == DETECTION]

    def ids_run(self) -> list[int]:
        """Every crop id the recogniser ran (blank frames excluded)."""
        return [i for c in self.rec_calls() for i in c.ids if i is not None]

    def info(self, model_ids: frozenset[str] | None = None) -> BackendInfo:
        """The models this fake loads: detection and one recogniser per language, or only
        ``model_ids`` of those."""
        specs = [
            ModelSpec(
                id=DETECTION, kind="detection", name="fake_det", policy="dynamic",
                layout=self.layout, height=None, width=None, batch_size=1,  # type: ignore[arg-type]
            )
        ]
        for lang in self.languages:
            specs.append(
                ModelSpec(
                    id=recognition_id(lang), kind="recognition", name=f"fake_rec_{lang}",
                    policy=self.rec_policy, layout=self.layout,  # type: ignore[arg-type]
                    height=48, width=self.rec_width, batch_size=self.rec_batch_size,
                    fixed_batch=self.fixed_batch, language=lang, charset=CHARSET,
                    pad_value=128 if self.layout == "nhwc_uint8_rgb" else 0,
                )
            )
        if model_ids is not None:
            specs = [s for s in specs if s.id in model_ids]
        return BackendInfo(
            kind="fake", device=None, runtime_version="fake 1", models=tuple(specs),
            max_jobs_in_flight=self.max_jobs_in_flight,
        )


class FakeBackend:
    """A :class:`npu.backend.Backend` running on a :class:`FakeDevice`."""

    def __init__(self, device: FakeDevice, model_ids: frozenset[str] | None = None) -> None:
        self.device = device
        self.model_ids = model_ids
        self.loaded = False

    def load(self) -> BackendInfo:
        d = self.device
        d.loads += 1
        if d.failing_loads > 0:
            d.failing_loads -= 1
            raise ModelLoadError("the fake device does not answer")
        d.lost = False
        d.open_backends += 1
        self.loaded = True
        return d.info(self.model_ids)

    def close(self) -> None:
        if self.loaded:
            self.loaded = False
            self.device.open_backends -= 1
            self.device.closes += 1

    async def infer(self, model_id: str, batch: np.ndarray) -> np.ndarray:
        d = self.device
        if self.model_ids is not None and model_id not in self.model_ids:
            # As a real backend does; here it also catches a job routed to the wrong device.
            raise InferenceError(f"model {model_id} is not loaded on this fake device")
        kind = "detection" if model_id == DETECTION else "recognition"
        d._counts[kind] += 1
        rules = [
            r for r in d._rules
            if r.call_no == (d._counts[r.kind] if r.kind else sum(d._counts.values()))
            and (r.kind is None or r.kind == kind)
        ]
        for r in rules:
            d._rules.remove(r)
        call = Call(model_id, int(batch.shape[0]), [], trio.current_time(),
                    shape=tuple(batch.shape), dtype=str(batch.dtype))
        d.calls.append(call)
        d.active_calls += 1
        d.max_active_calls = max(d.max_active_calls, d.active_calls)
        try:
            if d.lost or any(r.action == "lose" for r in rules):
                d.lost = True
                raise DeviceLost("the fake device went away")
            for r in rules:
                if r.action == "raise":
                    assert r.error is not None
                    raise r.error
            delay = d.det_delay if kind == "detection" else d.rec_delay
            delay += sum(r.seconds for r in rules if r.action == "hang")
            if d.threaded:
                out, ids = await trio.to_thread.run_sync(
                    self._blocking, model_id, batch, delay, abandon_on_cancel=True
                )
            else:
                if delay:
                    await trio.sleep(delay)
                out, ids = self._compute(model_id, batch)
            call.ids = ids
            call.result = "ok"
            return out
        except trio.Cancelled:
            call.result = "cancelled"
            raise
        except BaseException as exc:
            call.result = f"error: {type(exc).__name__}"
            raise
        finally:
            call.finished = trio.current_time()
            d.active_calls -= 1

    # -- the fake models
    def _blocking(
        self, model_id: str, batch: np.ndarray, delay: float
    ) -> tuple[np.ndarray, list[int | None]]:
        time.sleep(delay)
        return self._compute(model_id, batch)

    def _frames(self, batch: np.ndarray) -> list[np.ndarray]:
        """Each frame as HWC BGR uint8, whatever the layout."""
        if self.device.layout == "nhwc_uint8_rgb":
            return [f[:, :, ::-1] for f in batch]
        return [
            np.clip(np.rint((f.transpose(1, 2, 0) + 1.0) * 127.5), 0, 255).astype(np.uint8)
            for f in batch
        ]

    def _compute(
        self, model_id: str, batch: np.ndarray
    ) -> tuple[np.ndarray, list[int | None]]:
        """The model output and, for recognition, the id each frame shows."""
        frames = self._frames(batch)
        if model_id == DETECTION:
            ink = [(f <= INK_MAX).all(axis=2).astype(np.float32) for f in frames]
            return np.stack(ink), []
        ids = [_frame_id(f) for f in frames]
        return np.stack([_one_hot_text(str(i) if i is not None else "") for i in ids]), ids
