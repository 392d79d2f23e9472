"""hailo-device-manager's wire protocol, as its client sees it.

The manager (``device_manager/hailo_device_manager.py`` of the original services
repository) listens on a Unix socket. Every message, either way, is one JSON object
preceded by its length as 4 bytes, big-endian. A request names an ``action`` (``ping``,
``status``, ``load_model``, ``infer``, ``unload_model``) and may carry a ``request_id``,
which the reply echoes. A reply is ``{"status": "ok", ...}`` or ``{"error": "<text>"}``;
an error caused by the framing itself (a message over the manager's size limit, a body
that is not JSON) comes back without the ``request_id`` and the manager then closes the
connection. Tensors travel as ``{"dtype", "shape", "data_b64"}`` (raw bytes, base64).

The manager answers a connection's requests one at a time, in order: it reads the next
request only after writing the last reply. Its error replies are the text of the Python
exception it caught, so what went wrong has to be read from that text: a HailoRT status
(``libhailort failed with error: 62 (HAILO_COMMUNICATION_CLOSED)``, or pyhailort's fixed
message for the statuses that have their own exception class), or the manager's own
words when it has lost its device context.

Pure and synchronous: building and reading messages, no I/O.
"""

from __future__ import annotations

import base64
import json
import os
import re
import struct
from collections.abc import Mapping
from typing import Any, Final

import numpy as np

from .errors import (
    BackendError,
    DeviceBusy,
    DeviceLost,
    InferenceError,
    ModelLoadError,
)
from .hailo_errors import BUSY, LOST, STATUS_NAMES

UNIT: Final = "hailo-device-manager"
DEFAULT_SOCKET: Final = "/run/hailo/device.sock"
#: The manager's own variable for its socket; honoured here too, so one setting (its
#: environment file, /etc/hailo/device-manager.env) serves both sides.
SOCKET_ENV: Final = "HAILO_DEVICE_SOCKET"
HEADER: Final = struct.Struct(">I")
#: The manager's variable for its limit on one message, either way: a request above it is
#: answered with an error, a reply above it is not sent. Its installer's environment file
#: sets none.
MESSAGE_LIMIT_ENV: Final = "HAILO_DEVICE_MAX_MESSAGE_BYTES"
#: The limit without that variable: ``DEFAULT_MAX_MESSAGE_BYTES`` in the daemon's source.
#: (Its API_SPEC says 8 MiB, which is the limit of its own client library, not the
#: daemon's.)
DEFAULT_MESSAGE_LIMIT: Final = 64 * 1024 * 1024


class ProtocolError(Exception):
    """A reply that does not follow the protocol (bad length, not JSON, wrong id)."""


def message_limit(environ: Mapping[str, str] | None = None) -> int:
    """The manager's message limit, read from ``$HAILO_DEVICE_MAX_MESSAGE_BYTES`` as the
    daemon reads it (``int(value, 0)``; a value it cannot parse means its default). Our
    unit reads the daemon's environment file, so both sides see the same setting."""
    environ = os.environ if environ is None else environ
    value = environ.get(MESSAGE_LIMIT_ENV)
    if value is None:
        return DEFAULT_MESSAGE_LIMIT
    try:
        return int(value, 0)
    except ValueError:
        return DEFAULT_MESSAGE_LIMIT


def socket_path(configured: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The manager's socket: the configured path, else ``$HAILO_DEVICE_SOCKET``, else
    /run/hailo/device.sock."""
    environ = os.environ if environ is None else environ
    return configured or environ.get(SOCKET_ENV) or DEFAULT_SOCKET


# --- messages ----------------------------------------------------------------------------


class _Base64:
    """Base64 text bound for a message: spliced into the JSON as it is (its alphabet needs
    no escaping), because ``json.dumps`` escaping 2 MB of it character by character costs
    more than the encoding itself."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


_SPLICE = "\x00base64\x00"  # what json.dumps writes for a _Base64 before it is spliced
_SPLICE_JSON = json.dumps(_SPLICE).encode("ascii")


def tensor(array: np.ndarray) -> dict[str, Any]:
    """``array`` as the manager's tensor object, for :func:`frame`."""
    array = np.ascontiguousarray(array)
    return {
        "dtype": str(array.dtype),
        "shape": list(array.shape),
        "data_b64": _Base64(base64.b64encode(array.data)),
    }


def array_from(payload: Any) -> np.ndarray:
    """A tensor object from a reply as an array; :class:`ProtocolError` if malformed."""
    if not isinstance(payload, Mapping):
        raise ProtocolError(f"expected a tensor object, got {type(payload).__name__}")
    try:
        dtype = np.dtype(payload["dtype"])
        shape = tuple(int(d) for d in payload["shape"])
        raw = base64.b64decode(payload["data_b64"], validate=True)
        return np.frombuffer(raw, dtype=dtype).reshape(shape)
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(f"malformed tensor in the reply: {exc}") from None


def frame(message: Mapping[str, Any]) -> bytes:
    """One message on the wire: its length, then its JSON."""
    blobs: list[bytes] = []

    def splice(obj: Any) -> str:
        if not isinstance(obj, _Base64):
            raise TypeError(f"{type(obj).__name__} is not JSON serialisable")
        blobs.append(obj.data)
        return _SPLICE

    text = json.dumps(message, separators=(",", ":"), default=splice).encode("utf-8")
    parts = text.split(_SPLICE_JSON)  # the marker cannot occur anywhere else
    pieces = [parts[0]]
    for blob, part in zip(blobs, parts[1:], strict=True):
        pieces += (b'"', blob, b'"', part)
    body = b"".join(pieces)
    return HEADER.pack(len(body)) + body


def body_length(header: bytes, limit: int = DEFAULT_MESSAGE_LIMIT) -> int:
    """The length a 4-byte header announces; :class:`ProtocolError` beyond ``limit``
    (the manager sends nothing longer than its own)."""
    (length,) = HEADER.unpack(header)
    if length > limit:
        raise ProtocolError(f"a reply of {length} bytes announced (limit {limit})")
    return length


def parse_reply(body: bytes | bytearray) -> dict[str, Any]:
    try:
        reply = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"the reply is not JSON: {exc}") from None
    if not isinstance(reply, dict):
        raise ProtocolError(f"the reply is a JSON {type(reply).__name__}, not an object")
    return reply


def check_reply_id(reply: Mapping[str, Any], request_id: str) -> None:
    """The reply must be this request's. A reply without an id is the manager's answer
    to a framing error (it echoes no id then); one with another id is a protocol fault."""
    got = reply.get("request_id")
    if got is None and "error" in reply:
        return
    if got != request_id:
        raise ProtocolError(f"request {request_id} was answered with the reply to {got!r}")


# --- errors ------------------------------------------------------------------------------

_CODE_IN_TEXT = re.compile(r"error:\s*(\d+)")
_NAME_TO_STATUS = {name: code for code, name in STATUS_NAMES.items()}
_NAME_IN_TEXT = re.compile(r"\b(HAILO_[A-Z_]+)\b")
#: pyhailort's messages for the statuses that raise their own exception class (and so
#: carry no code in the text the manager forwards).
_PYHAILORT_MESSAGES = {
    "Communication closed failure": 62,
    "Failure in hailort driver ioctl": 36,
    "Stream was aborted": 63,
    "Received a timeout - hailort has failed": 4,
    "Invalid HEF.": 26,
    "HEF file is not compatible with device": 93,
}
#: The manager's own words when it has no usable device context.
_MANAGER_LOST = ("Device manager runtime unavailable", "runtime context reset failed",
                 "Device not initialized")


def status_in(text: str) -> int | None:
    """The HailoRT status named in an error text, if any."""
    m = _CODE_IN_TEXT.search(text)
    if m:
        return int(m.group(1))
    for name in _NAME_IN_TEXT.findall(text):
        if name in _NAME_TO_STATUS:
            return _NAME_TO_STATUS[name]
    for message, code in _PYHAILORT_MESSAGES.items():
        if message in text:
            return code
    return None


def device_gone(text: str) -> bool:
    """True when an error text says the manager's device (or its context) is gone."""
    return status_in(text) in LOST or any(words in text for words in _MANAGER_LOST)


def error_from_reply(text: str, *, phase: str, what: str) -> BackendError:
    """The typed error for the manager's ``error`` text on a ``load`` or ``infer``.

    A failed job is only that job's failure (:class:`InferenceError`) unless the text says
    the device is gone (:class:`DeviceLost`: the NPU owner reloads us, which unloads and
    loads the models afresh). At load, a missing or bad HEF is a
    :class:`ModelLoadError`; a device held by another process, :class:`DeviceBusy`."""
    where = f"{what}: {UNIT} answered: {text}"
    if device_gone(text):
        return DeviceLost(f"{where} (the manager's NPU or its driver went away; if this "
                          f"persists, restart it: `sudo systemctl restart {UNIT}`)")
    code = status_in(text)
    if phase == "load":
        if code in BUSY:
            return DeviceBusy(f"{where} (the manager could not open the NPU: another "
                              f"process holds it)")
        if "RESOURCE_EXHAUSTED" in text:
            return ModelLoadError(f"{where} (the NPU's memory is full of other services' "
                                  f"models, even after the manager evicted what it could)")
        return ModelLoadError(where)
    return InferenceError(where)
