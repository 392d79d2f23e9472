"""The routing table: which device owner serves which model, and the client that sends a
job to it.

Built once at start from the placement (:mod:`npu.placement`) and what each owner's
backend reported when it loaded. The batcher and the orchestrator address models by id
only, through :class:`DeviceClient`; where a model runs is this module's business. The
facts they need to shape their work (a model's input policy, batch size, how many jobs its
device runs at once) are in the immutable :class:`ModelTable`, never read from an owner.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs
import numpy as np
import outcome
import trio

from npu.backend import BackendInfo, ModelSpec, recognition_id
from npu.errors import DeviceFault, InferenceError

from .errors import ShuttingDown
from .messages import InferJob


@attrs.frozen
class PlacedModel:
    """One model as the service runs it."""

    spec: ModelSpec
    device: str  # the owner serving it: "npu" or "cpu"
    slots: int  # jobs that device runs at once (its backend's max_jobs_in_flight)


@attrs.frozen
class ModelTable:
    """Every loaded model by id, in the order the owners reported them, and each device's
    backend facts."""

    models: Mapping[str, PlacedModel]
    backends: Mapping[str, BackendInfo]  # device -> what its backend reported at start

    @classmethod
    def from_backends(cls, backends: Mapping[str, BackendInfo]) -> ModelTable:
        models: dict[str, PlacedModel] = {}
        for device, info in backends.items():
            for spec in info.models:
                if spec.id in models:
                    raise ValueError(f"model {spec.id} is served by two devices")
                models[spec.id] = PlacedModel(spec, device, max(1, info.max_jobs_in_flight))
        return cls(models, dict(backends))

    def spec(self, model_id: str) -> ModelSpec:
        """The model's facts; KeyError when no device serves it."""
        return self.models[model_id].spec

    def has(self, model_id: str) -> bool:
        return model_id in self.models

    def device(self, model_id: str) -> str:
        return self.models[model_id].device

    def slots(self, model_id: str) -> int:
        return self.models[model_id].slots

    def rec_spec(self, language: str) -> ModelSpec | None:
        placed = self.models.get(recognition_id(language))
        return placed.spec if placed is not None else None

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(
            p.spec.language for p in self.models.values()
            if p.spec.kind == "recognition" and p.spec.language
        )

    def devices_for(self, model_ids: tuple[str, ...]) -> tuple[str, ...]:
        """The devices ``model_ids`` run on (each once, in table order)."""
        found: list[str] = []
        for model_id in model_ids:
            placed = self.models.get(model_id)
            if placed is not None and placed.device not in found:
                found.append(placed.device)
        return tuple(found)

    def backend_info(self) -> BackendInfo:
        """The service's backends seen as one (``/health``, ``hailo_info``, the log): the
        NPU's kind and device when any model runs there, every runtime's version, every
        model."""
        infos = list(self.backends.values())
        npu = next((i for i in infos if i.device is not None), None)
        main = npu or infos[0]
        versions = ", ".join(dict.fromkeys(i.runtime_version for i in infos))
        return BackendInfo(
            kind=main.kind, device=main.device, runtime_version=versions,
            models=tuple(p.spec for p in self.models.values()),
            max_jobs_in_flight=main.max_jobs_in_flight,
        )


class DeviceClient:
    """The orchestrator's and batcher's handle on the device owners: sends a job to the
    inbox of the owner serving its model and awaits the reply. Cancelling the caller closes
    its reply channel, which the owner sees."""

    def __init__(self, inboxes: Mapping[str, trio.MemorySendChannel]) -> None:
        self._inboxes = dict(inboxes)  # model id -> its owner's inbox

    async def infer(self, model_id: str, batch: np.ndarray) -> np.ndarray:
        inbox = self._inboxes.get(model_id)
        if inbox is None:
            raise InferenceError(f"no device serves model {model_id}")
        reply_send, reply_recv = trio.open_memory_channel[outcome.Outcome](1)
        async with reply_recv:
            job = InferJob(model_id, batch, reply_send, trio.current_time())
            try:
                await inbox.send(job)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                raise ShuttingDown("the device owner has stopped") from None
            try:
                result = await reply_recv.receive()
            except trio.EndOfChannel:  # pragma: no cover - the owner always answers
                raise DeviceFault("the device owner dropped the job") from None
            return result.unwrap()
