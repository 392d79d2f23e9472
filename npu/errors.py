"""Typed device errors the actors act on.

``DeviceFault`` and its subclasses mean the device (or its runtime) is unusable until the
backend is reloaded: the NPU owner fails the jobs in flight and its supervisor restarts
it. ``InferenceError`` is a failure of one job that leaves the device healthy.
"""

from __future__ import annotations


class BackendError(Exception):
    code = "backend_error"


class BackendUnavailable(BackendError):
    """The backend's runtime is not installed on this host (e.g. no ``hailo_platform``)."""

    code = "backend_unavailable"


class ModelLoadError(BackendError):
    """A model file is missing, unreadable, or does not match its configuration."""

    code = "model_load_failed"


class InferenceError(BackendError):
    """One inference job failed; the device itself is still fine."""

    code = "inference_failed"


class DeviceFault(BackendError):
    """The device is unusable until the backend is reloaded."""

    code = "device_fault"


class DeviceBusy(DeviceFault):
    """Another process holds the device (HailoRT status 73/74 at start-up)."""

    code = "device_busy"


class DeviceTimeout(DeviceFault):
    """The device did not answer within the job timeout."""

    code = "device_timeout"


class DeviceLost(DeviceFault):
    """The device or its driver went away (communication closed, RPC failed, unplugged)."""

    code = "device_lost"


class DeviceNotFound(DeviceFault):
    """No Hailo device on this host, or none with the configured id (HailoRT status 74
    or 2 at start-up while its scan finds nothing to open)."""

    code = "device_not_found"


class DeviceAccessDenied(DeviceFault):
    """The device node exists but this process may not open it (status 36 at start-up)."""

    code = "device_access_denied"
