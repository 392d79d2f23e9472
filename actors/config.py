"""The actors' section of the configuration, ``batching``, and the view of the whole
configuration the actor tree reads (:class:`ServiceConfig`).

The whole file is composed and loaded at the top (:mod:`web.settings`); actors/ never
imports it, it names only the sections it reads.
"""

from __future__ import annotations

import typing
from typing import Final, Literal, Protocol

import attrs

from npu.config import NpuConfig
from ocr.config import ProcessingConfig
from ocr.tiling import TilingParams

#: When the batcher sends a language's queued crops (actors/batcher.py, ``_due``).
BatchPolicy = Literal["adaptive", "window"]
POLICIES: Final[tuple[BatchPolicy, ...]] = typing.get_args(BatchPolicy)


@attrs.frozen
class BatchingConfig:
    #: "adaptive": send a batch when it is full or as soon as the device has room for it
    #: (a lone request never waits while the device is idle; under load the crops that
    #: arrive while a batch runs fill the next). "window": send when full or when the
    #: oldest crop has waited window_ms. See benchmarks/batch_fill.py for the numbers.
    policy: BatchPolicy = "adaptive"
    #: Window policy: longest a crop waits for companions before its batch is sent, ms.
    window_ms: float = 8.0
    #: Crops queued in the batcher at once (all languages); beyond it callers wait.
    max_queued_crops: int = 4096
    #: Recognition batches sent to the device and not yet answered.
    max_batches_in_flight: int = 2


class RequestLimits(Protocol):
    """The request limits the service enforces (keys of the ``server`` section)."""

    max_in_flight: int
    request_timeout_s: float


class ServiceConfig(NpuConfig, Protocol):
    """What :func:`actors.service.open_ocr_service` reads of the configuration: the device
    sections it hands to the backends, and the pipeline, batching and request limits.
    :class:`web.settings.Config` is one."""

    server: RequestLimits
    processing: ProcessingConfig
    batching: BatchingConfig
    tiling: TilingParams
