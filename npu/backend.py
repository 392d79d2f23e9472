"""The one small interface every inference backend implements.

A backend loads its models, describes them (:class:`ModelSpec`: input policy, layout,
batch limits, character lists), and runs one model on one batch. Only the NPU owner actor
calls it. ``load`` and ``close`` block and are called from a worker thread; ``infer`` is
async and must never block the Trio thread: a CPU backend runs in a worker thread, an NPU
backend bridges its own asynchronous API into Trio.

Which device runs which model is decided before any backend exists
(:mod:`npu.placement`): a backend is built as ``SomeBackend(config, model_ids)`` and loads
exactly the models named in ``model_ids`` (a ``frozenset`` of the ids below), no more.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Literal, Protocol

import attrs
import numpy as np

#: The model ids: the keys of the routing table, of ``models.placement`` and of /models.
DETECTION: Final = "detection"
CLASSIFIER: Final = "classifier"
RECOGNITION_PREFIX: Final = "recognition_"


def recognition_id(language: str) -> str:
    """The model id of ``language``'s recognition model (``recognition_en``)."""
    return f"{RECOGNITION_PREFIX}{language}"


def language_of(model_id: str) -> str | None:
    """The language a recognition model id names, or None for any other model."""
    if model_id.startswith(RECOGNITION_PREFIX):
        return model_id[len(RECOGNITION_PREFIX):]
    return None


ModelKind = Literal["detection", "recognition", "classifier"]
#: ``dynamic``: any size (multiples of 32 for detection, any width for recognition).
#: ``fixed``: one compiled size; the pipeline letterboxes / pads to it.
InputPolicy = Literal["dynamic", "fixed"]
#: ``nchw_float``: float32 NCHW, BGR, normalised to [-1, 1] on the host (ONNX models).
#: ``nhwc_uint8_rgb``: raw uint8 RGB frames, normalised on the chip (compiled NPU models).
InputLayout = Literal["nchw_float", "nhwc_uint8_rgb"]


@attrs.frozen
class ModelSpec:
    """Facts about one loaded model, published by the NPU owner to the other actors."""

    id: str  # DETECTION, recognition_id(language) or CLASSIFIER
    kind: ModelKind
    name: str  # file name, as shown by /models and hailo_info
    policy: InputPolicy
    layout: InputLayout
    height: int | None  # fixed input height (recognition: always set)
    width: int | None  # fixed input width, or nominal width for dynamic recognition
    batch_size: int  # most frames per call
    fixed_batch: bool = False  # True: a call must carry exactly batch_size frames
    language: str | None = None
    charset: tuple[str, ...] | None = attrs.field(default=None, repr=False)
    output_shape: tuple[int, ...] | None = None
    pad_value: int = 0  # fill for letterbox (detection) or right padding (recognition)
    path: str | None = None  # the file it was loaded from, as /models shows it


@attrs.frozen
class BackendInfo:
    """What a loaded backend tells the service about itself."""

    kind: str  # "onnx" | "hailo"
    device: str | None  # "/dev/hailo0" on an NPU host, None on the CPU
    runtime_version: str
    models: tuple[ModelSpec, ...]
    max_jobs_in_flight: int = 1

    def model(self, model_id: str) -> ModelSpec:
        for m in self.models:
            if m.id == model_id:
                return m
        raise KeyError(model_id)

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(m.language for m in self.models if m.kind == "recognition" and m.language)


class Backend(Protocol):
    def load(self) -> BackendInfo:
        """Open the device and load every model. Blocking; called in a worker thread."""
        ...

    async def infer(self, model_id: str, batch: np.ndarray) -> np.ndarray:
        """Run ``model_id`` on ``batch`` (first axis = frames).

        Returns detection ``(N, H, W)`` probabilities, recognition ``(N, T, C)`` class
        probabilities, or classifier ``(N, 2)`` probabilities. Raises
        :class:`~npu.errors.InferenceError` for a failed job and
        :class:`~npu.errors.DeviceFault` when the device is unusable.
        """
        ...

    def close(self) -> None:
        """Release models and device. Blocking; idempotent."""
        ...


#: Builds one device's backend for the model ids placed on that device.
BackendFactory = Callable[[frozenset[str]], Backend]
