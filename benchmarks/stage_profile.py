"""CPU time per pipeline stage inside a running server, for ``benchmarks/host_cost.py``.

Each stage is one or more synchronous functions of the service, looked up where the
service calls them (``actors.orchestrator.decode_image``, not ``ocr.decode``), and
replaced in this process by a wrapper that adds the calling thread's CPU time
(``time.thread_time``) to the stage's total. The stages run either in a worker thread or,
briefly, on the Trio thread without awaiting, so a thread's CPU clock measures exactly
their own work, whatever else the process does at the time. A wrapper costs about a
microsecond per call.

What no stage covers (Hypercorn and h11, Quart's request and response handling, Trio's
scheduling and thread hand-offs, reading the body, garbage collection) is what is left of
the process's CPU time; the benchmark reports it as "HTTP and framework".
"""

from __future__ import annotations

import functools
import gc
import importlib
import threading
import time
import types
from collections.abc import Callable
from typing import Any, Final

#: Stage -> the functions it times, as ``module:attribute``.
STAGES: Final = {
    "parse (JSON, base64)": ("web.inputs:_b64decode", "web.inputs:json.loads"),
    "decode": ("actors.orchestrator:decode_image", "actors.orchestrator:limit_dimension"),
    "detection pre": (
        "actors.orchestrator:plan_tiles",
        "actors.orchestrator:_prepare_detection",
        "actors.orchestrator:_prepare_tiles",
    ),
    "DB post": ("actors.orchestrator:db_boxes",),
    "tile merge": ("actors.orchestrator:merge_tile_boxes",),
    "crops": ("actors.orchestrator:crop_quad",),
    "rec resize, split": ("actors.orchestrator:_rec_inputs",),
    "packing": ("actors.batcher:_pack",),
    "CTC decode": ("actors.batcher:ctc_greedy_decode",),
    "order, assembly": (
        "actors.orchestrator:reading_order",
        "actors.orchestrator:line_texts",
        "actors.orchestrator:detect_languages",
    ),
    "JSON response": ("web.routes:extract_json", "app:json.dumps"),
    "garbage collection": (),  # timed through gc.callbacks, see StageClock.install
}


class StageClock:
    """Per-stage CPU seconds and calls, summed over every thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cpu = dict.fromkeys(STAGES, 0.0)
        self._calls = dict.fromkeys(STAGES, 0)
        self._on_main = 0.0  # the part spent on the main (Trio) thread
        self._main = threading.main_thread()

    def timed(self, stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                spent = time.thread_time() - t0
                with self._lock:
                    self._cpu[stage] += spent
                    self._calls[stage] += 1
                    if threading.current_thread() is self._main:
                        self._on_main += spent

        return wrapper

    def _gc(self, phase: str, info: dict[str, Any]) -> None:
        """``gc.callbacks`` hook: a collection runs in whichever thread triggered it."""
        if phase == "start":
            self._gc_start.value = time.thread_time()
            return
        spent = time.thread_time() - getattr(self._gc_start, "value", time.thread_time())
        with self._lock:
            self._cpu["garbage collection"] += spent
            self._calls["garbage collection"] += 1
            if threading.current_thread() is self._main:
                self._on_main += spent

    def install(self, app: Any = None) -> None:
        """Wrap every stage's functions; ``app`` is the Quart app (for ``app:`` targets).
        A target that does not exist is an error: a silently missing stage would move
        its cost into "HTTP and framework"."""
        self._gc_start = threading.local()
        gc.callbacks.append(self._gc)
        for stage, targets in STAGES.items():
            for target in targets:
                owner_name, _, path = target.partition(":")
                if owner_name == "app":
                    if app is None:
                        continue
                    owner: Any = app
                else:
                    owner = importlib.import_module(owner_name)
                *parents, attr = path.split(".")
                for p in parents:
                    parent = getattr(owner, p)
                    if isinstance(parent, types.ModuleType):
                        # e.g. web.inputs' ``json``: a private copy of the module's
                        # namespace, so that only this caller's json.loads is timed.
                        shim = types.SimpleNamespace(**vars(parent))
                        setattr(owner, p, shim)
                        parent = shim
                    owner = parent
                fn = getattr(owner, attr)
                setattr(owner, attr, self.timed(stage, fn))

    def snapshot(self) -> dict[str, dict[str, float]]:
        with self._lock:
            return {s: {"cpu_s": self._cpu[s], "calls": self._calls[s]} for s in STAGES}

    def on_main_thread(self) -> float:
        """CPU seconds the stages spent on the main (Trio) thread."""
        with self._lock:
            return self._on_main
