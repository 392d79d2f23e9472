"""Turning HailoRT exceptions into the typed errors the actors act on.

HailoRT's Python bindings raise :class:`HailoRTException` subclasses. Most statuses come
as the base class with the message ``libhailort failed with error: <code> (<NAME>)``; a
few have their own class whose message does *not* carry the code (``HailoRTTimeout``
for 4, ``HailoCommunicationClosedException`` for 62, ``HailoRTEthException`` for 19, ...:
every class of ``ExceptionWrapper.create_exception_from_status`` in HailoRT 4.23 and 5.2
is mapped here). Synchronous calls also chain the raw ``HailoRTStatusException``
(``args[0]`` = the code) as ``__cause__``, but the exceptions handed to an inference
callback (``completion_info.exception``) are built from the status alone. So the code is
recovered from, in order: the chained cause, the message, and the class name. None of
this imports ``hailo_platform``: classification works on any exception, and the module
loads on hosts without HailoRT.

What each status means for the service, by phase ("open" the VDevice, "load" a model,
"launch" bind buffers and wait for room, "run" the ``run_async`` call itself, "complete"
the status a finished job reported):

* at open, 74 (out of physical devices) or 73 (in use) while a device is present:
  another process holds the NPU under a different VDevice group →
  :class:`~npu.errors.DeviceBusy`, with the fix; 74 with no device at all, or 2 for a
  device id the scan does not list → :class:`~npu.errors.DeviceNotFound`; 36 (the node
  could not be opened) → :class:`~npu.errors.DeviceAccessDenied`, naming the group;
* HailoRT, driver and firmware of different versions (15, 16, 48, 76, 78) →
  :class:`~npu.errors.DeviceFault` saying to upgrade them together;
* timeout (4) while waiting for room: retried once by the backend, then
  :class:`~npu.errors.DeviceTimeout`;
* any failure of ``run_async``: HailoRT shuts that configured model down before raising
  (``ConfiguredInferModel::run_async``), so it is a :class:`~npu.errors.DeviceFault`
  and the backend reloads, never a retry;
* lost (62 communication closed, 77 RPC failed, 87 driver timeout, 96 not connected,
  97 temporarily unavailable, 36 driver operation failed after open, ...) →
  :class:`~npu.errors.DeviceLost`: the NPU owner reloads the backend on a fresh VDevice;
* bad model file (13, 26, 91-94) → :class:`~npu.errors.ModelLoadError`.
"""

from __future__ import annotations

import re

from .errors import (
    BackendError,
    DeviceAccessDenied,
    DeviceBusy,
    DeviceFault,
    DeviceLost,
    DeviceNotFound,
    DeviceTimeout,
    InferenceError,
    ModelLoadError,
)
from .hailo_devices import DevicePresence, access_message, no_device_message

HAILO_INVALID_ARGUMENT = 2
HAILO_TIMEOUT = 4
HAILO_INVALID_OPERATION = 6
HAILO_OPEN_FILE_FAILURE = 13
HAILO_UNSUPPORTED_CONTROL_PROTOCOL_VERSION = 15
HAILO_UNSUPPORTED_FW_VERSION = 16
HAILO_FW_CONTROL_FAILURE = 18
HAILO_ETH_FAILURE = 19
HAILO_INVALID_FRAME = 25
HAILO_INVALID_HEF = 26
HAILO_DRIVER_OPERATION_FAILED = 36
HAILO_UNSUPPORTED_OPCODE = 48
HAILO_SHUTDOWN_EVENT_SIGNALED = 57
HAILO_NOT_FOUND = 61
HAILO_COMMUNICATION_CLOSED = 62
HAILO_STREAM_ABORT = 63
HAILO_DRIVER_NOT_INSTALLED = 64
HAILO_NETWORK_GROUP_NOT_ACTIVATED = 69
HAILO_DEVICE_IN_USE = 73
HAILO_OUT_OF_PHYSICAL_DEVICES = 74
HAILO_INVALID_DRIVER_VERSION = 76
HAILO_RPC_FAILED = 77
HAILO_INVALID_SERVICE_VERSION = 78
HAILO_NOT_SUPPORTED = 79
HAILO_OUT_OF_HOST_CMA_MEMORY = 81
HAILO_QUEUE_IS_FULL = 82
HAILO_DRIVER_TIMEOUT = 87
HAILO_DRIVER_INTERRUPTED = 88
HAILO_CONNECTION_REFUSED = 89
HAILO_DRIVER_WAIT_CANCELED = 90
HAILO_HEF_FILE_CORRUPTED = 91
HAILO_HEF_NOT_SUPPORTED = 92
HAILO_HEF_NOT_COMPATIBLE_WITH_DEVICE = 93
HAILO_INVALID_HEF_USE = 94
HAILO_OPERATION_ABORTED = 95
HAILO_DEVICE_NOT_CONNECTED = 96
HAILO_DEVICE_TEMPORARILY_UNAVAILABLE = 97

#: Status names, for messages (from ``hailo/hailort.h``; only the ones we act on).
STATUS_NAMES = {
    HAILO_INVALID_ARGUMENT: "HAILO_INVALID_ARGUMENT",
    HAILO_TIMEOUT: "HAILO_TIMEOUT",
    HAILO_INVALID_OPERATION: "HAILO_INVALID_OPERATION",
    HAILO_OPEN_FILE_FAILURE: "HAILO_OPEN_FILE_FAILURE",
    HAILO_UNSUPPORTED_CONTROL_PROTOCOL_VERSION: "HAILO_UNSUPPORTED_CONTROL_PROTOCOL_VERSION",
    HAILO_UNSUPPORTED_FW_VERSION: "HAILO_UNSUPPORTED_FW_VERSION",
    HAILO_FW_CONTROL_FAILURE: "HAILO_FW_CONTROL_FAILURE",
    HAILO_ETH_FAILURE: "HAILO_ETH_FAILURE",
    HAILO_INVALID_FRAME: "HAILO_INVALID_FRAME",
    HAILO_INVALID_HEF: "HAILO_INVALID_HEF",
    HAILO_DRIVER_OPERATION_FAILED: "HAILO_DRIVER_OPERATION_FAILED",
    HAILO_UNSUPPORTED_OPCODE: "HAILO_UNSUPPORTED_OPCODE",
    HAILO_SHUTDOWN_EVENT_SIGNALED: "HAILO_SHUTDOWN_EVENT_SIGNALED",
    HAILO_NOT_FOUND: "HAILO_NOT_FOUND",
    HAILO_COMMUNICATION_CLOSED: "HAILO_COMMUNICATION_CLOSED",
    HAILO_STREAM_ABORT: "HAILO_STREAM_ABORT",
    HAILO_DRIVER_NOT_INSTALLED: "HAILO_DRIVER_NOT_INSTALLED",
    HAILO_NETWORK_GROUP_NOT_ACTIVATED: "HAILO_NETWORK_GROUP_NOT_ACTIVATED",
    HAILO_DEVICE_IN_USE: "HAILO_DEVICE_IN_USE",
    HAILO_OUT_OF_PHYSICAL_DEVICES: "HAILO_OUT_OF_PHYSICAL_DEVICES",
    HAILO_INVALID_DRIVER_VERSION: "HAILO_INVALID_DRIVER_VERSION",
    HAILO_RPC_FAILED: "HAILO_RPC_FAILED",
    HAILO_INVALID_SERVICE_VERSION: "HAILO_INVALID_SERVICE_VERSION",
    HAILO_NOT_SUPPORTED: "HAILO_NOT_SUPPORTED",
    HAILO_OUT_OF_HOST_CMA_MEMORY: "HAILO_OUT_OF_HOST_CMA_MEMORY",
    HAILO_QUEUE_IS_FULL: "HAILO_QUEUE_IS_FULL",
    HAILO_DRIVER_TIMEOUT: "HAILO_DRIVER_TIMEOUT",
    HAILO_DRIVER_INTERRUPTED: "HAILO_DRIVER_INTERRUPTED",
    HAILO_CONNECTION_REFUSED: "HAILO_CONNECTION_REFUSED",
    HAILO_DRIVER_WAIT_CANCELED: "HAILO_DRIVER_WAIT_CANCELED",
    HAILO_HEF_FILE_CORRUPTED: "HAILO_HEF_FILE_CORRUPTED",
    HAILO_HEF_NOT_SUPPORTED: "HAILO_HEF_NOT_SUPPORTED",
    HAILO_HEF_NOT_COMPATIBLE_WITH_DEVICE: "HAILO_HEF_NOT_COMPATIBLE_WITH_DEVICE",
    HAILO_INVALID_HEF_USE: "HAILO_INVALID_HEF_USE",
    HAILO_OPERATION_ABORTED: "HAILO_OPERATION_ABORTED",
    HAILO_DEVICE_NOT_CONNECTED: "HAILO_DEVICE_NOT_CONNECTED",
    HAILO_DEVICE_TEMPORARILY_UNAVAILABLE: "HAILO_DEVICE_TEMPORARILY_UNAVAILABLE",
}

#: The exception classes pyhailort raises for a status without putting the code in the
#: message (``ExceptionWrapper.create_exception_from_status``).
_CLASS_STATUS = {
    "HailoRTTimeout": HAILO_TIMEOUT,
    "HailoRTInvalidArgumentException": HAILO_INVALID_ARGUMENT,
    "HailoRTInvalidOperationException": HAILO_INVALID_OPERATION,
    "HailoRTNotFoundException": HAILO_NOT_FOUND,
    "HailoRTInvalidHEFException": HAILO_INVALID_HEF,
    "HailoRTHEFNotCompatibleWithDevice": HAILO_HEF_NOT_COMPATIBLE_WITH_DEVICE,
    "HailoRTDriverOperationFailedException": HAILO_DRIVER_OPERATION_FAILED,
    "HailoCommunicationClosedException": HAILO_COMMUNICATION_CLOSED,
    "HailoRTStreamAborted": HAILO_STREAM_ABORT,
    "HailoRTStreamAbortedByUser": HAILO_STREAM_ABORT,
    "InvalidProtocolVersionException": HAILO_UNSUPPORTED_CONTROL_PROTOCOL_VERSION,
    "HailoRTFirmwareControlFailedException": HAILO_FW_CONTROL_FAILURE,
    "HailoRTEthException": HAILO_ETH_FAILURE,
    "HailoRTInvalidFrameException": HAILO_INVALID_FRAME,
    "HailoRTUnsupportedOpcodeException": HAILO_UNSUPPORTED_OPCODE,
    "HailoRTNetworkGroupNotActivatedException": HAILO_NETWORK_GROUP_NOT_ACTIVATED,
}

#: The device or its driver/service is gone: reload the backend (and its VDevice).
LOST = frozenset({
    HAILO_FW_CONTROL_FAILURE, HAILO_ETH_FAILURE,
    HAILO_DRIVER_OPERATION_FAILED, HAILO_SHUTDOWN_EVENT_SIGNALED, HAILO_COMMUNICATION_CLOSED,
    HAILO_STREAM_ABORT, HAILO_DRIVER_NOT_INSTALLED, HAILO_RPC_FAILED, HAILO_DRIVER_TIMEOUT,
    HAILO_DRIVER_INTERRUPTED, HAILO_CONNECTION_REFUSED, HAILO_DRIVER_WAIT_CANCELED,
    HAILO_OPERATION_ABORTED, HAILO_DEVICE_NOT_CONNECTED, HAILO_DEVICE_TEMPORARILY_UNAVAILABLE,
})
#: Another process holds the NPU.
BUSY = frozenset({HAILO_DEVICE_IN_USE, HAILO_OUT_OF_PHYSICAL_DEVICES})
#: The model file is missing, unreadable, corrupt or built for another chip.
BAD_MODEL = frozenset({
    HAILO_OPEN_FILE_FAILURE, HAILO_INVALID_HEF, HAILO_HEF_FILE_CORRUPTED,
    HAILO_HEF_NOT_SUPPORTED, HAILO_HEF_NOT_COMPATIBLE_WITH_DEVICE, HAILO_INVALID_HEF_USE,
})
#: HailoRT, its driver, the firmware (or the Hailo-8 service) are of different versions.
VERSION_MISMATCH = frozenset({
    HAILO_UNSUPPORTED_CONTROL_PROTOCOL_VERSION, HAILO_UNSUPPORTED_FW_VERSION,
    HAILO_UNSUPPORTED_OPCODE, HAILO_INVALID_DRIVER_VERSION, HAILO_INVALID_SERVICE_VERSION,
})

_CODE_IN_MESSAGE = re.compile(r"error:\s*(\d+)")


def status_of(exc: BaseException) -> int | None:
    """The HailoRT status code behind ``exc``, or None if it is not a HailoRT error."""
    cause = exc.__cause__
    if cause is not None and type(cause).__name__ == "HailoRTStatusException" and cause.args:
        try:
            return int(cause.args[0])
        except (TypeError, ValueError):
            pass
    match = _CODE_IN_MESSAGE.search(str(exc))
    if match and is_hailort_error(exc):
        return int(match.group(1))
    for cls in type(exc).__mro__:
        if cls.__name__ in _CLASS_STATUS:
            return _CLASS_STATUS[cls.__name__]
    return None


_HAILORT_BASES = frozenset({"HailoRTException", "HailoRTStatusException", "HailoRTCustomException"})


def is_hailort_error(exc: BaseException) -> bool:
    """True for pyhailort's exceptions. By class name: in HailoRT 4.23 the binding's own
    ``_pyhailort.HailoRT*Exception`` classes do not derive from the Python-level
    ``HailoRTException``, and nothing here may import ``hailo_platform``."""
    return any(cls.__name__ in _HAILORT_BASES for cls in type(exc).__mro__)


def describe(exc: BaseException) -> str:
    """``exc`` with its status name, e.g. ``HailoRTTimeout (status 4, HAILO_TIMEOUT): ...``."""
    code = status_of(exc)
    if code is None:
        return f"{type(exc).__name__}: {exc}"
    name = STATUS_NAMES.get(code, "")
    return f"{type(exc).__name__} (status {code}{', ' + name if name else ''}): {exc}"


def busy_message(group_id: str, detail: str) -> str:
    """What an operator reads when the NPU is held by another process."""
    return (
        f"the Hailo NPU is held by another process ({detail}). This service opens its "
        f"VDevice with group id {group_id!r}; processes share the NPU only when they all "
        f"use the same group id (HailoRT's default, 'UNIQUE', takes the whole device). "
        f"Fix: give every NPU service on this host the same group id (here "
        f"hailo_models.group_id or HAILO_OCR_GROUP_ID; Hailo's examples use 'SHARED'), or "
        f"stop the process that holds the device (see `hailortcli scan` and "
        f"`lsof /dev/hailo0`). On Hailo-8, services can instead share through the HailoRT "
        f"multi-process service (hailo_models.multi_process_service: true)."
    )


def classify(exc: BaseException, *, phase: str, group_id: str = "SHARED",
             what: str = "", devices: DevicePresence | None = None) -> BackendError:
    """The typed error for a HailoRT exception raised while ``phase``: "open" (the
    VDevice; ``devices`` says what the host shows), "load" (a model), "launch" (binding
    buffers and waiting for room), "run" (``run_async`` itself) or "complete" (the status
    a finished job reported)."""
    if isinstance(exc, BackendError):
        return exc
    code = status_of(exc)
    text = describe(exc)
    where = f"{what}: " if what else ""
    if phase == "open":
        if code == HAILO_OUT_OF_PHYSICAL_DEVICES and devices is not None and not devices.present:
            return DeviceNotFound(f"{no_device_message(devices)} ({text})")
        if code == HAILO_INVALID_ARGUMENT and devices is not None and devices.scanned is not None:
            listed = ", ".join(devices.scanned) or "none"
            return DeviceNotFound(
                f"{where}HailoRT does not know the device id asked for (hailo_models.device); "
                f"its scan lists: {listed} ({text})"
            )
        if code == HAILO_DRIVER_OPERATION_FAILED:
            presence = devices or DevicePresence((), None, "this user")
            return DeviceAccessDenied(f"{access_message(presence)} ({text})")
    if code in BUSY:
        return DeviceBusy(busy_message(group_id, text))
    if code in VERSION_MISMATCH:
        return DeviceFault(
            f"{where}HailoRT, the Hailo driver and the device firmware are not the same "
            f"version ({text}): upgrade them together (`sudo apt full-upgrade`, keeping "
            f"Hailo's packages at one release), reboot, and check with `hailortcli "
            f"fw-control identify`"
        )
    if phase == "run":
        # ConfiguredInferModel::run_async shuts the configured model down before it
        # returns an error, so nothing more can run on it: reload, do not retry.
        if code in LOST:
            return DeviceLost(f"{where}the NPU or its driver went away ({text})")
        return DeviceFault(f"{where}run_async failed and HailoRT shut the model down ({text})")
    if code == HAILO_TIMEOUT:
        return DeviceTimeout(f"{where}the NPU did not answer in time ({text})")
    if code in LOST:
        return DeviceLost(f"{where}the NPU or its driver went away ({text})")
    if code in BAD_MODEL:
        return ModelLoadError(f"{where}cannot load the model ({text})")
    if code == HAILO_OUT_OF_HOST_CMA_MEMORY:
        return DeviceFault(
            f"{where}the host ran out of CMA memory for NPU buffers ({text}); other NPU "
            f"services may be holding it, or the kernel's cma= size is too small"
        )
    if phase in ("open", "load"):
        if code is None or phase == "load":
            return ModelLoadError(f"{where}{text}")
        return DeviceFault(f"{where}{text}")
    if phase == "launch" and code in (
        None, HAILO_INVALID_ARGUMENT, HAILO_INVALID_OPERATION, HAILO_NOT_FOUND
    ):
        # Refused before anything reached the device (``set_buffer`` refuses a
        # non-contiguous array without a status): this job's fault, the device is fine.
        return InferenceError(f"{where}{text}")
    if code is None:
        return InferenceError(f"{where}{text}")
    # An error status from the device or a finished job: HailoRT shuts the model's
    # pipeline down after a failed job, so the backend needs a reload, not a retry.
    return DeviceFault(f"{where}{text}")
