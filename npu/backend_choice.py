"""Which backend runs the models, and why (``backend.type``, ``auto`` resolved).

``auto`` picks by what the host has, in this order: hailo-device-manager's socket (on a
Pi whose NPU the manager holds for every service, opening the device ourselves would
compete with it), else the NPU node ``/dev/hailo0`` (opened directly, in HailoRT's shared
group), else the CPU. The reason is logged at start and shown by ``/health``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Final

import attrs

from .config import NpuConfig
from .hef_specs import DEVICE_NODE
from .manager_protocol import UNIT, socket_path

#: Names of the backends as ``BackendInfo.kind`` reports them.
ONNX: Final = "onnx"
HAILO: Final = "hailo"
DEVICE_MANAGER: Final = "device-manager"
#: The backends that run the models on the NPU.
NPU_BACKENDS: Final = (HAILO, DEVICE_MANAGER)


@attrs.frozen
class BackendChoice:
    kind: str  # "onnx", "hailo" or "device-manager"
    reason: str


def choose_backend(
    config: NpuConfig, *, environ: Mapping[str, str] | None = None, root: str = ""
) -> BackendChoice:
    """The backend ``config`` asks for; for ``auto``, the one this host calls for.
    ``root`` looks at a system mounted there (``hailo-ocr verify --root``)."""
    kind = config.backend.type
    if kind != "auto":
        return BackendChoice(kind, f"backend.type is {kind}")
    sock = socket_path(config.device_manager.socket, environ)
    device_node = DEVICE_NODE
    if os.path.exists(root + sock):
        return BackendChoice(
            DEVICE_MANAGER,
            f"backend auto: {UNIT}'s socket {sock} exists, so the manager holds the NPU "
            f"and runs the models for every service",
        )
    if os.path.exists(root + device_node):
        return BackendChoice(
            HAILO,
            f"backend auto: {device_node} exists and no {UNIT} socket ({sock}): opening "
            f"the NPU directly",
        )
    return BackendChoice(
        ONNX, f"backend auto: no Hailo NPU ({device_node}) and no {UNIT} socket ({sock}): "
        f"running on the CPU",
    )
