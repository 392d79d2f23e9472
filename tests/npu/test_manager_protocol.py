"""hailo-device-manager's wire protocol as the client reads it (npu/manager_protocol.py):
framing, tensors, reply ids, and what each of the daemon's error texts means for us."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from npu import manager_protocol as mp
from npu.errors import DeviceBusy, DeviceLost, InferenceError, ModelLoadError


def test_a_message_is_its_big_endian_length_then_its_json():
    wire = mp.frame({"action": "ping", "request_id": "r1"})
    (n,) = struct.unpack(">I", wire[:4])
    assert n == len(wire) - 4 and json.loads(wire[4:]) == {"action": "ping", "request_id": "r1"}
    assert mp.body_length(wire[:4]) == n


def test_an_absurd_length_is_a_protocol_error():
    with pytest.raises(mp.ProtocolError):
        mp.body_length(struct.pack(">I", mp.DEFAULT_MESSAGE_LIMIT + 1))
    assert mp.body_length(struct.pack(">I", 100 << 20), limit=128 << 20) == 100 << 20


@pytest.mark.parametrize("value, limit", [
    (None, 64 * 1024 * 1024),  # the daemon's default (its source; not its API_SPEC's 8 MiB)
    ("8388608", 8 * 1024 * 1024),
    ("0x800000", 8 * 1024 * 1024),  # the daemon reads it with int(value, 0)
    ("8M", 64 * 1024 * 1024),  # which it cannot parse: its default
])
def test_the_message_limit_is_read_as_the_daemon_reads_it(value, limit):
    environ = {} if value is None else {"HAILO_DEVICE_MAX_MESSAGE_BYTES": value}
    assert mp.message_limit(environ) == limit


@pytest.mark.parametrize("array", [
    np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3),
    np.linspace(0, 1, 40 * 97, dtype=np.float32).reshape(1, 40, 97),
    np.zeros((4, 5), np.float32)[:, ::2],  # not contiguous
])
def test_tensors_survive_the_trip(array):
    wire = mp.frame({"status": "ok", "result": [mp.tensor(array), mp.tensor(array[:1])],
                     "request_id": "r"})
    reply = json.loads(wire[4:])  # plain JSON, as the manager reads it
    assert reply["request_id"] == "r" and set(reply["result"][0]) == {"dtype", "shape",
                                                                        "data_b64"}
    back = mp.array_from(reply["result"][0])
    assert back.dtype == array.dtype and np.array_equal(back, array)
    assert np.array_equal(mp.array_from(reply["result"][1]), array[:1])


@pytest.mark.parametrize("payload", [
    None, [], {"dtype": "float32", "shape": [2]}, {"dtype": "nope", "shape": [1], "data_b64": ""},
    {"dtype": "float32", "shape": [3], "data_b64": "AAAA"},  # 3 bytes for 12
    {"dtype": "uint8", "shape": [1], "data_b64": "!!"},
])
def test_a_malformed_tensor_is_a_protocol_error(payload):
    with pytest.raises(mp.ProtocolError):
        mp.array_from(payload)


def test_replies_must_be_json_objects():
    assert mp.parse_reply(b'{"status": "ok"}') == {"status": "ok"}
    for body in (b"", b"[1]", b"\xff", b'{"status": '):
        with pytest.raises(mp.ProtocolError):
            mp.parse_reply(body)


def test_a_reply_must_carry_its_request_id():
    mp.check_reply_id({"status": "ok", "request_id": "a"}, "a")
    # The daemon's answer to a framing error carries no id.
    mp.check_reply_id({"error": "Message too large: 9999999 bytes"}, "a")
    for reply in ({"status": "ok", "request_id": "b"}, {"status": "ok"},
                  {"error": "x", "request_id": "b"}):
        with pytest.raises(mp.ProtocolError):
            mp.check_reply_id(reply, "a")


def test_the_socket_path_configured_then_the_daemons_variable_then_the_default():
    assert mp.socket_path("/x.sock", {"HAILO_DEVICE_SOCKET": "/y.sock"}) == "/x.sock"
    assert mp.socket_path(None, {"HAILO_DEVICE_SOCKET": "/y.sock"}) == "/y.sock"
    assert mp.socket_path(None, {}) == "/run/hailo/device.sock"


# The daemon's error texts: its own words, and pyhailort's exception messages inside them.
@pytest.mark.parametrize("text, phase, error", [
    ("Inference failed: Received a timeout - hailort has failed because a timeout had "
     "occurred", "infer", InferenceError),
    ("Inference failed: Unsupported language: zh. Available: ['en']", "infer", InferenceError),
    ("Inference failed: could not broadcast input array from shape (48,640,3) into shape "
     "(48,320,3)", "infer", InferenceError),
    ("Inference failed: Communication closed failure. Check server-client connection",
     "infer", DeviceLost),
    ("Inference failed: Stream was aborted", "infer", DeviceLost),
    ("Inference failed: Failure in hailort driver ioctl. run 'dmesg | grep hailo' for more "
     "information", "infer", DeviceLost),
    ("Inference failed: libhailort failed with error: 77 (HAILO_RPC_FAILED)", "infer",
     DeviceLost),
    ("Device manager runtime unavailable. Details: runtime context unavailable: boom",
     "load", DeviceLost),
    ("Model file not found: /var/lib/hailo-ocr/models/ocr_det.hef", "load", ModelLoadError),
    ("Failed to load model: Detection HEF not found: /x.hef", "load", ModelLoadError),
    ("Failed to load model: Invalid HEF. See hailort.log for more information", "load",
     ModelLoadError),
    ("Failed to load model: libhailort failed with error: 74 (HAILO_OUT_OF_PHYSICAL_DEVICES)",
     "load", DeviceBusy),
    ("RESOURCE_EXHAUSTED and no models available to evict: HAILO_OUT_OF_HOST_CMA_MEMORY",
     "load", ModelLoadError),
])
def test_each_error_text_maps_to_what_the_actor_tree_does(text, phase, error):
    err = mp.error_from_reply(text, phase=phase, what="detection")
    assert type(err) is error
    assert text in str(err) and "hailo-device-manager" in str(err)
    if error is DeviceLost:
        assert "systemctl restart hailo-device-manager" in str(err)
