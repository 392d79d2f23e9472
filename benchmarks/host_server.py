"""The real server on the replay device, for ``benchmarks/host_cost.py`` only.

    python -m benchmarks.host_server --store DIR [--record] [--latency instant|hailo10h]
        [--config FILE] [--port P]

Runs ``web.server.serve`` (Hypercorn, Quart-Trio, the whole actor tree) with its backend
replaced by :class:`benchmarks.replay_device.ReplayBackend` through the app factory's
``backends`` hook (the factory of the one device the configuration's placement uses),
times the pipeline's stages (:mod:`benchmarks.stage_profile`), and adds one route for the
benchmark: ``GET /bench/stats``, the process's CPU time (every thread, live or ended:
``time.process_time``) and the Trio thread's, the stages' CPU time and the replay device's
counters. Nothing here is reachable from ``hailo-ocr serve``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import trio

from npu.backend import DETECTION, language_of, recognition_id
from npu.errors import ModelLoadError
from npu.placement import plan_placement
from web.settings import load_config

from .replay_device import LATENCY_MODELS, ReplayBackend
from .stage_profile import StageClock

STATS_PATH = "/bench/stats"


@attrs.define
class _Devices:
    """The replay device the service is using (it builds a new one after a fault)."""

    current: ReplayBackend | None = None

    def factory(self, **kwargs: Any) -> Callable[[frozenset[str]], ReplayBackend]:
        """A backend factory for the device the placement gives every model (the CPU, as
        for the default ONNX configuration): the replay device serves detection and the
        recognition of each language placed on it, nothing else."""

        def make(model_ids: frozenset[str]) -> ReplayBackend:
            languages = tuple(sorted(lang for m in model_ids if (lang := language_of(m))))
            unsupported = model_ids - {DETECTION, *(recognition_id(lang) for lang in languages)}
            if unsupported or DETECTION not in model_ids:
                what = ", ".join(sorted(unsupported)) or "recognition without detection"
                raise ModelLoadError(f"the replay device serves detection and recognition, "
                                     f"not {what}")
            self.current = ReplayBackend(**kwargs, languages=languages)
            return self.current

        return make


def install_bench_app(clock: StageClock, devices: _Devices) -> None:
    """Make ``web.server.serve`` build its app with the stage clock and the stats route.

    ``serve`` builds its own app (``create_app``); wrapping the factory it calls is the
    only way in without a benchmark hook in the service itself."""
    import web.server
    from web.app import create_app

    def bench_create_app(config, backends=None):
        app = create_app(config, backends)
        clock.install(app)

        @app.get(STATS_PATH)
        async def bench_stats() -> dict[str, Any]:
            device = devices.current.statistics() if devices.current is not None else None
            return {
                "process_cpu_s": time.process_time(),
                # This handler runs on the Trio thread: its clock is that thread's.
                "trio_thread_cpu_s": time.thread_time(),
                "stages_on_trio_thread_s": clock.on_main_thread(),
                "stages": clock.snapshot(),
                "device": attrs.asdict(device) if device is not None else None,
            }

        return app

    web.server.create_app = bench_create_app


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", type=Path, required=True, help="the recording's directory")
    ap.add_argument("--record", action="store_true",
                    help="compute what is not recorded yet with the ONNX models, and keep it")
    ap.add_argument("--latency", choices=sorted(LATENCY_MODELS), default="instant")
    ap.add_argument("--config", help="YAML configuration (server, batching, ...)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--cprofile", type=Path,
                    help="profile the Trio thread's Python calls (cProfile) into this file")
    args = ap.parse_args(argv)

    config = load_config(args.config, env={}, overrides={
        "server": {"host": args.host, "port": args.port or 1, "log_level": "warning"},
    })
    if not args.port:
        config = attrs.evolve(config, server=attrs.evolve(config.server, port=0))
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    devices = _Devices()
    make = devices.factory(store=args.store, latency=LATENCY_MODELS[args.latency],
                           record=args.record)
    devices_used = plan_placement(config).devices
    if len(devices_used) != 1:  # one replay device stands for the one the config uses
        raise SystemExit(f"the replay device stands for one device, not {devices_used}")
    backends = {devices_used[0]: make}
    clock = StageClock()
    install_bench_app(clock, devices)
    from web.server import serve

    if args.cprofile is None:
        trio.run(serve, config, backends)
        return 0
    import cProfile

    with cProfile.Profile() as profile:  # this thread only: the Trio thread
        trio.run(serve, config, backends)
    profile.dump_stats(args.cprofile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
