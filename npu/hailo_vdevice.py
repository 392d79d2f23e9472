"""The process's one VDevice, shared by every Hailo backend instance in it.

The VDevice is opened with the round-robin scheduler and the configured group id
(``hailo_models.group_id``). A second VDevice in the same process (with HailoRT's default
group ``"UNIQUE"``, or with other parameters) would fail with
``HAILO_OUT_OF_PHYSICAL_DEVICES``, so this small registry hands the same one to every
backend (a reload runs its new backend beside the closing one). It is released when its
last user closes, and a VDevice that saw a device fault is never handed out again: the
reload after a lost device opens a fresh one. Thread-safe: backends load and close in
worker threads.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import attrs

from . import hailo_devices
from .config import HailoModelsConfig
from .errors import DeviceBusy, DeviceFault, DeviceNotFound
from .hailo_errors import HAILO_INVALID_OPERATION, classify, describe, is_hailort_error, status_of

log = logging.getLogger("hailo_ocr.hailo")


@attrs.define(eq=False)
class SharedVDevice:
    """The process's VDevice and who uses it."""

    vdevice: Any
    key: tuple[str, str | None, bool]  # (group id, device id, multi-process service)
    device_ids: tuple[str, ...]
    users: int = 0
    broken: bool = False


_vdevice_lock = threading.Lock()
_current: SharedVDevice | None = None


def acquire_vdevice(hp: Any, cfg: HailoModelsConfig) -> SharedVDevice:
    """The process's VDevice, opened on first use (or after the last one broke)."""
    global _current
    key = (cfg.group_id, cfg.device, cfg.multi_process_service)
    with _vdevice_lock:
        cur = _current
        if cur is not None and not cur.broken:
            if cur.key != key:
                raise DeviceFault(
                    f"this process already holds a VDevice opened with {cur.key}; "
                    f"cannot open another with {key}"
                )
            cur.users += 1
            return cur
        params = hp.VDevice.create_params()
        params.scheduling_algorithm = hp.HailoSchedulingAlgorithm.ROUND_ROBIN
        params.group_id = cfg.group_id
        if cfg.multi_process_service:
            params.multi_process_service = True
        if cfg.device:
            # Through the params, not VDevice(device_ids=...): that argument replaces the
            # params (and with them the scheduler and group id).
            params.device_ids = [cfg.device]
        try:
            vdevice = hp.VDevice(params)
        except Exception as exc:
            if not is_hailort_error(exc):
                raise
            err = classify(
                exc, phase="open", group_id=cfg.group_id, what="opening the NPU",
                devices=hailo_devices.probe(hp),
            )
            if cfg.multi_process_service and status_of(exc) == HAILO_INVALID_OPERATION:
                # VDeviceBase::validate_params: a Hailo-10H needs no service.
                raise DeviceFault(
                    f"{err}. hailo_models.multi_process_service is true, which only Hailo-8 "
                    f"uses (there processes share the device through the hailort service); "
                    f"Hailo-10H rejects it: set it to false and share through the group id"
                ) from exc
            if cfg.multi_process_service and not isinstance(err, DeviceNotFound | DeviceBusy):
                raise DeviceFault(
                    f"{err}. hailo_models.multi_process_service is true: the HailoRT "
                    f"multi-process service must be running (`sudo systemctl enable --now "
                    f"hailort.service`) and reachable at /tmp/hailort_uds.sock, which a unit "
                    f"with PrivateTmp=yes cannot see (deploy/hailo-ocr.service.d/hailo8.conf)"
                ) from exc
            raise err from exc
        try:
            ids = tuple(str(i) for i in vdevice.get_physical_devices_ids())
        except Exception:  # informational only (and not offered through every service)
            ids = (cfg.device,) if cfg.device else ()
        shared = SharedVDevice(vdevice=vdevice, key=key, device_ids=ids, users=1)
        _current = shared
        return shared


def mark_broken(shared: SharedVDevice) -> None:
    """The device behind ``shared`` is gone: from now on nobody is handed this VDevice."""
    global _current
    with _vdevice_lock:
        shared.broken = True
        if _current is shared:
            _current = None


def release_vdevice(shared: SharedVDevice, *, broken: bool) -> None:
    """Drop one use; release the VDevice when unused, and never reuse a broken one."""
    global _current
    with _vdevice_lock:
        shared.users -= 1
        shared.broken = shared.broken or broken
        if _current is shared and (shared.broken or shared.users <= 0):
            _current = None
        if shared.users <= 0:
            try:
                shared.vdevice.release()
            except Exception as exc:  # a lost device may fail to release: nothing to do
                log.warning("releasing the VDevice failed: %s", describe(exc))


__all__ = ["SharedVDevice", "acquire_vdevice", "mark_broken", "release_vdevice"]
