"""Which device runs which model: decided once, at start, from the configuration and the
model files on disk, before any backend is built.

Each model id (``detection``, ``recognition_<language>``, and ``classifier`` when the line
classifier is on) goes to the NPU or the CPU:

* ``backend.type: onnx``: everything on the CPU (the ONNX models shipped in the
  ``rapidocr`` wheel, or those named in ``onnx_models``).
* an NPU backend (``backend.type: hailo`` or ``device-manager``, or ``auto`` choosing one
  of them: :mod:`npu.backend_choice`): each model as ``models.placement`` says, ``auto``
  by default. ``auto`` is the NPU when the model's HEF is configured and found (an
  absolute path, or a relative one next to the config file, then in
  ``hailo_models.search_paths``), else the CPU: a Pi with only ``ocr_det.hef`` and
  ``ocr.hef`` detects on the NPU, reads English on the NPU and Chinese on the CPU. ``npu``
  refuses to start without the HEF; ``cpu`` always takes the ONNX model. The classifier
  has no compiled model and always runs on the CPU. Which NPU backend does not change the
  placement: the same HEFs run either way.

The decision looks at files, not at the device: a HEF that is found but then does not load
(runtime missing, device held by another process, wrong character list) stops the start-up
with that error rather than quietly moving the model to the CPU, so a Pi never serves
from its CPU for a reason nobody reads. Set the model's placement to ``cpu`` to run
without it. With an NPU backend at least one model must land on the NPU.

The result, :class:`Placement`, says for each model where it runs and why (logged at start),
which model ids each device's backend loads, and how many threads the CPU owner's ONNX
Runtime sessions use: all cores when the CPU serves everything, fewer when it shares the
host's cores with the pipeline work of an NPU (``onnx_models.intra_op_threads_with_npu``).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Final, Literal

import attrs

from ocr.config import ConfigError

from .backend import CLASSIFIER, DETECTION, language_of, recognition_id
from .backend_choice import NPU_BACKENDS, BackendChoice, choose_backend
from .config import NpuConfig
from .errors import ModelLoadError
from .models import resolve_model_path

Device = Literal["npu", "cpu"]
NPU: Final = "npu"
CPU: Final = "cpu"
#: Every device, in the order their owners start: the NPU first, so that a HEF that does
#: not load stops the start-up before the CPU models are loaded for nothing.
DEVICES: Final[tuple[Device, ...]] = (NPU, CPU)

#: Finds a HEF by its configured name; raises ModelLoadError naming every place tried.
FindFile = Callable[[str], Path]


@attrs.frozen
class ModelPlacement:
    """Where one model runs, and why."""

    model_id: str
    device: Device
    reason: str
    #: The HEF found for a model on the NPU (None on the CPU: its backend finds its files).
    hef: str | None = None
    #: True when ``auto`` wanted the NPU but its HEF was missing: worth a warning.
    fallback: bool = False


@attrs.frozen
class Placement:
    models: tuple[ModelPlacement, ...]
    #: ONNX Runtime threads per session of the CPU owner; 0 = one per core.
    cpu_threads: int = 0

    def device_of(self, model_id: str) -> Device:
        for m in self.models:
            if m.model_id == model_id:
                return m.device
        raise KeyError(model_id)

    def model_ids(self, device: Device) -> frozenset[str]:
        """What the backend of ``device`` loads."""
        return frozenset(m.model_id for m in self.models if m.device == device)

    @property
    def devices(self) -> tuple[Device, ...]:
        """The devices that serve at least one model, in start order."""
        used = {m.device for m in self.models}
        return tuple(d for d in DEVICES if d in used)


def wanted_model_ids(config: NpuConfig) -> tuple[str, ...]:
    """Every model the configuration asks for: detection, one recogniser per language,
    and the line classifier when it is on."""
    ids = [DETECTION, *(recognition_id(lang) for lang in config.ocr.languages)]
    if config.ocr.use_angle_cls:
        ids.append(CLASSIFIER)
    return tuple(ids)


def all_on(device: Device, config: NpuConfig, reason: str) -> Placement:
    """Every wanted model on one device (a CPU-only host, or a test)."""
    return Placement(
        tuple(ModelPlacement(m, device, reason) for m in wanted_model_ids(config)),
        cpu_threads=config.onnx_models.intra_op_threads,
    )


def _hef_name(config: NpuConfig, model_id: str) -> str | None:
    if model_id == DETECTION:
        return config.hailo_models.detection_hef or None
    language = language_of(model_id)
    return config.hailo_models.recognition_hefs.get(language) if language else None


def _where(config: NpuConfig, model_id: str) -> str:
    if model_id == DETECTION:
        return "hailo_models.detection_hef"
    return f"hailo_models.recognition_hefs.{language_of(model_id)}"


def _place_on_hailo_host(config: NpuConfig, model_id: str, find: FindFile) -> ModelPlacement:
    choice = config.models.placement.get(model_id, "auto")
    key = f"models.placement.{model_id}"
    if choice == "cpu":
        return ModelPlacement(model_id, CPU, f"{key} is cpu")
    if model_id == CLASSIFIER:
        if choice == "npu":
            raise ConfigError(f"{key} is npu, but the line classifier has no compiled model; "
                              "it runs on the CPU")
        return ModelPlacement(model_id, CPU, "the line classifier has no compiled model")
    name = _hef_name(config, model_id)
    if name is None:
        if choice == "npu":
            raise ModelLoadError(f"{key} is npu, but {_where(config, model_id)} names no HEF")
        return ModelPlacement(model_id, CPU, f"no HEF configured in {_where(config, model_id)}")
    try:
        path = find(name)
    except ModelLoadError as exc:
        if choice == "npu":
            raise ModelLoadError(f"{key} is npu, but {exc}") from exc
        return ModelPlacement(model_id, CPU, f"auto: {exc}", fallback=True)
    return ModelPlacement(model_id, NPU, f"{choice}: {path}", hef=str(path))


def plan_placement(
    config: NpuConfig, find: FindFile | None = None, backend: BackendChoice | None = None
) -> Placement:
    """Where each model of ``config`` runs. ``find`` locates a HEF (by default as the Hailo
    backend does: :func:`npu.models.resolve_model_path` over ``hailo_models.search_paths``);
    ``backend`` is the backend chosen for this host (default:
    :func:`npu.backend_choice.choose_backend`, which resolves ``auto``).

    Raises :class:`~ocr.config.ConfigError` for a placement that cannot be (an unknown
    model id, ``npu`` with ``backend.type: onnx``) and
    :class:`~npu.errors.ModelLoadError` when ``npu`` is asked for and the HEF is missing,
    or when an NPU backend would be left with nothing to run."""
    wanted = wanted_model_ids(config)
    placement = config.models.placement
    allowed = [*wanted, *([] if CLASSIFIER in wanted else [CLASSIFIER])]
    unknown = sorted(set(placement) - set(allowed))
    if unknown:
        raise ConfigError(
            f"unknown model id(s) in models.placement: {', '.join(unknown)}; "
            f"the models of this configuration are {', '.join(allowed)}"
        )
    backend = backend or choose_backend(config)
    if backend.kind not in NPU_BACKENDS:
        on_npu = sorted(m for m in wanted if placement.get(m) == "npu")
        if on_npu:
            raise ConfigError(
                f"models.placement puts {', '.join(on_npu)} on the NPU, but the backend is "
                f"{backend.kind} ({backend.reason}): set backend.type to hailo or "
                "device-manager"
            )
        return all_on(CPU, config, backend.reason)

    if find is None:
        find = partial(
            resolve_model_path, base_dir=config.base_dir,
            search_paths=config.hailo_models.search_paths,
        )
    models = tuple(_place_on_hailo_host(config, m, find) for m in wanted)
    if not any(m.device == NPU for m in models):
        reasons = "; ".join(f"{m.model_id}: {m.reason}" for m in models)
        raise ModelLoadError(
            f"the {backend.kind} backend runs models on the NPU ({backend.reason}), but no "
            f"model can run on the NPU ({reasons}). Put the HEF files where hailo_models "
            "points, or set backend.type: onnx to run on the CPU"
        )
    return Placement(models, cpu_threads=config.onnx_models.intra_op_threads_with_npu)
