"""``backend.type: device-manager``: the OCR models run by hailo-device-manager.

Against a protocol-faithful TEST DOUBLE of the daemon (``tests/support/fake_device_manager.py``:
its framing, actions, reply shapes and error strings, its OCR handler on the HailoRT
stand-in), so the text read is real. The direct Hailo backend on the same stand-in is the
reference: the two must read the same text from the same images.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import struct
import sys
from pathlib import Path

import attrs
import httpx
import pytest
import trio

from tests.support import textgen
from tests.support.paths import REPO, STANDIN

sys.path.insert(0, str(STANDIN))

from hailo_platform import _standin  # noqa: E402  (the stand-in)
from hailo_testing import hailo_config, write_config_file  # noqa: E402

from actors.messages import OcrRequest  # noqa: E402
from actors.service import open_ocr_service  # noqa: E402
from npu.device_manager_backend import DeviceManagerBackend  # noqa: E402
from npu.errors import (  # noqa: E402
    BackendUnavailable,
    DeviceBusy,
    DeviceLost,
    DeviceTimeout,
    InferenceError,
)
from tests.support.images import text_image
from tests.support.server import WORDS, serve_subprocess, wait_until  # noqa: E402

pytestmark = pytest.mark.usefixtures("hailo_standin")


def _fast_restarts(cfg):
    return attrs.evolve(
        cfg, backend=attrs.evolve(cfg.backend, restart_backoff_s=0.05, restart_backoff_max_s=0.3)
    )


@pytest.fixture
def direct_cfg(config, hailo_files):
    return _fast_restarts(hailo_config(config, hailo_files, timeout_ms=30000))


@pytest.fixture
def dmcfg(direct_cfg, device_manager):
    return attrs.evolve(
        direct_cfg,
        backend=attrs.evolve(direct_cfg.backend, type="device-manager"),
        device_manager=attrs.evolve(direct_cfg.device_manager, socket=device_manager.socket_path,
                                    timeout_s=60.0),
    )


def images() -> list[bytes]:
    return [
        text_image(["HELLO WORLD", "INVOICE TOTAL"]),
        text_image([WORDS[2], WORDS[5], WORDS[8]], fmt=".jpg"),
        text_image(["ORANGE 42", "PURPLE GARDEN 7"], scale=1.6),
    ]


async def read_all(cfg, data: list[bytes], specs: list | None = None) -> list[list[str]]:
    """Each image's region texts; the models' specs appended to ``specs`` if given."""
    async with open_ocr_service(cfg) as service:
        if specs is not None:
            specs.append(service.info.models)
        out = []
        for d in data:
            r = await service.extract(OcrRequest(d, ("en",)))
            out.append([reg.text for reg in r.regions])
        return out


# --- the same text as the direct backend ------------------------------------------------------


async def test_reads_the_same_text_as_the_direct_hailo_backend(direct_cfg, hailo_files):
    from tests.support.fake_device_manager import FakeDeviceManager

    data = images()
    specs: list = []
    direct = await read_all(direct_cfg, data, specs)  # before the manager holds the device
    sock = Path(f"/tmp/hdm-same-{os.getpid()}.sock")
    with FakeDeviceManager(sock, job_wait_ms=30000) as manager:
        cfg = attrs.evolve(
            direct_cfg, backend=attrs.evolve(direct_cfg.backend, type="device-manager"),
            device_manager=attrs.evolve(direct_cfg.device_manager, socket=str(sock)),
        )
        through = await read_all(cfg, data, specs)
        asked = list(manager.requests)
    # The pipeline is told the same: fixed shapes, layout, pads, batch sizes, charsets.
    assert specs[0] == specs[1]
    assert through == direct
    assert all(direct) and any("HELLO" in " ".join(t) for t in direct)
    # One model batch per call, and its size named, so the manager neither splits nor pads.
    rec = [q for q in asked if q["mode"] == "recognition"]
    assert rec and all(1 <= q["crops"] <= 8 and q["batch_size"] == q["crops"] for q in rec)
    assert all(q["has_model_params"] for q in asked if q["action"] == "infer")
    assert {q["model_path"] for q in asked if q["model_type"]} == {str(hailo_files.det)}


@pytest.mark.devdata
@pytest.mark.slow
async def test_real_images_read_the_same_through_the_manager(devdata, direct_cfg, device_manager,
                                                             dmcfg):
    paths = [devdata / "rapidocr_tests" / "en.jpg", devdata / "sroie_dev" / "images" / "006.jpg"]
    data = [p.read_bytes() for p in paths]
    through = await read_all(dmcfg, data)
    device_manager.stop()  # it holds the device, as the real daemon does
    direct = await read_all(direct_cfg, data)
    assert through == direct
    assert sum(len(t) for t in direct) > 20


# --- the service on the manager -----------------------------------------------------------------


async def test_health_facts_and_a_clean_unload_at_shutdown(dmcfg, device_manager, hailo_files,
                                                            caplog):
    caplog.set_level(logging.WARNING, "hailo_ocr.device_manager")
    async with open_ocr_service(dmcfg) as service:
        info = service.info
        assert info.kind == "device-manager" and info.device == "0000:01:00.0"
        assert info.runtime_version == f"hailo-device-manager at {device_manager.socket_path}"
        specs = {m.id: m for m in info.models}
        # The same shapes, layout and pads the direct backend publishes.
        assert (specs["detection"].height, specs["detection"].width) == (544, 960)
        assert specs["detection"].layout == "nhwc_uint8_rgb" and specs["detection"].pad_value == 114
        assert (specs["recognition_en"].height, specs["recognition_en"].width) == (48, 320)
        assert specs["recognition_en"].pad_value == 128 and specs["recognition_en"].batch_size == 8
        assert service.backend_choice.reason == "backend.type is device-manager"
        assert len(device_manager.loaded_models) == 1
        # The stand-in's recogniser has 18 710 classes: a batch of 8 is ~32 MB of JSON,
        # under the daemon's default message limit (64 MiB).
        assert "batch_size_rec" not in caplog.text
    assert device_manager.loaded_models == {}
    assert device_manager.requests[-1]["action"] == "unload_model"
    assert device_manager.requests[-1]["model_path"] == str(hailo_files.det)


async def test_concurrent_requests_each_get_their_own_text(dmcfg, device_manager):
    data = [text_image([w]) for w in WORDS[:6]]
    async with open_ocr_service(dmcfg) as service:
        started = len(device_manager.requests)
        results: dict[int, str] = {}

        async def one(i: int) -> None:
            r = await service.extract(OcrRequest(data[i], ("en",)))
            results[i] = r.text

        async with trio.open_nursery() as nursery:
            for i in range(len(data)):
                nursery.start_soon(one, i)
        assert results == {i: w for i, w in enumerate(WORDS[:6])}
        stats = service.statistics()
    rec = [q for q in device_manager.requests[started:] if q["mode"] == "recognition"]
    assert sum(q["crops"] for q in rec) == 6
    assert stats.devices["npu"].jobs_failed == 0


async def test_the_manager_restarting_mid_run_fails_the_jobs_in_flight_then_recovers(
    dmcfg, device_manager
):
    image = text_image(["MARKET"])
    async with open_ocr_service(dmcfg) as service:
        assert (await service.extract(OcrRequest(image, ("en",)))).text == "MARKET"
        device_manager.hold()  # our next job waits in the manager's queue ...
        async with trio.open_nursery() as nursery:
            failures: list[BaseException] = []

            async def request() -> None:
                try:
                    await service.extract(OcrRequest(image, ("en",)))
                except Exception as exc:
                    failures.append(exc)

            nursery.start_soon(request)
            await wait_until(lambda: device_manager.queue_depth >= 1, within_s=30)
            device_manager.stop()  # ... when the daemon goes away (systemctl restart)
        assert len(failures) == 1 and isinstance(failures[0], DeviceLost), failures
        assert "closed the connection" in str(failures[0])
        assert not service.ready
        await trio.sleep(0.5)  # a few reload attempts find no socket
        assert not service.ready
        before = len(device_manager.requests)
        device_manager.start()
        await wait_until(lambda: service.ready, within_s=60)
        assert (await service.extract(OcrRequest(image, ("en",)))).text == "MARKET"
        stats = service.statistics().devices["npu"]
    # One fault; the reloads that found no socket were retried with the backoff.
    assert stats.restarts == 1 and "does not exist" in (stats.last_fault or "")
    # Reconnected, and the models loaded again in the fresh daemon.
    actions = [q["action"] for q in device_manager.requests[before:]]
    assert actions[:2] == ["ping", "load_model"]


async def test_a_reply_that_never_comes_is_a_device_timeout(dmcfg, device_manager):
    cfg = attrs.evolve(dmcfg, device_manager=attrs.evolve(dmcfg.device_manager, timeout_s=1.0))
    image = text_image(["RIVER"])
    async with open_ocr_service(cfg) as service:
        device_manager.hold()  # another service's long job ahead of ours
        t0 = trio.current_time()
        with pytest.raises(DeviceTimeout) as info:
            await service.extract(OcrRequest(image, ("en",)))
        assert trio.current_time() - t0 < 10
        assert "device_manager.timeout_s" in str(info.value)
        device_manager.release()
        await wait_until(lambda: service.ready, within_s=60)
        assert (await service.extract(OcrRequest(image, ("en",)))).text == "RIVER"
        assert service.statistics().devices["npu"].restarts == 1


def _hailort_timeout():
    from hailo_platform.pyhailort.pyhailort import HailoRTTimeout

    return HailoRTTimeout("Received a timeout - hailort has failed because a timeout had occurred")


def _communication_closed():
    from hailo_platform import HailoCommunicationClosedException

    return HailoCommunicationClosedException(
        "Communication closed failure. Check server-client connection")


@pytest.mark.parametrize(
    "mode, make_exc, error, restarts",
    [
        # HailoRT times out inside the daemon's handler (another process keeps the device
        # busy): "Inference failed: Received a timeout ...", that job's failure only.
        ("recognition", _hailort_timeout, InferenceError, 0),
        # The daemon's device is gone: our models are reloaded (unloaded, loaded afresh).
        ("detection", _communication_closed, DeviceLost, 1),
    ],
)
async def test_an_error_reply_fails_its_job_unless_the_device_is_gone(
    dmcfg, device_manager, mode, make_exc, error, restarts
):
    image = text_image(["CASTLE"])
    async with open_ocr_service(dmcfg) as service:
        exc = make_exc()
        device_manager.fail_next(mode, exc)
        with pytest.raises(error) as info:
            await service.extract(OcrRequest(image, ("en",)))
        assert type(info.value) is error and f"Inference failed: {exc}" in str(info.value)
        await wait_until(lambda: service.ready, within_s=60)
        assert (await service.extract(OcrRequest(image, ("en",)))).text == "CASTLE"
        assert service.statistics().devices["npu"].restarts == restarts
    actions = [q["action"] for q in device_manager.requests]
    assert actions.count("load_model") == actions.count("unload_model") == 1 + restarts


async def test_a_lost_device_in_the_manager_reloads_and_waits_for_the_manager(
    dmcfg, device_manager, hailo_files
):
    image = text_image(["FOREST"])
    async with open_ocr_service(dmcfg) as service:
        assert (await service.extract(OcrRequest(image, ("en",)))).text == "FOREST"
        _standin.inject(str(hailo_files.det), "lost")
        # The job that meets the loss comes back unchecked by the manager; the next one
        # is told "Communication closed failure": the device is gone.
        for _ in range(3):
            try:
                await service.extract(OcrRequest(image, ("en",)))
            except DeviceLost as exc:
                assert "Communication closed failure" in str(exc)
                break
            except InferenceError:
                continue
        else:
            pytest.fail("the lost device was never reported")
        await trio.sleep(0.5)
        assert not service.ready  # the daemon does not rebuild a lost context by itself
        device_manager.restart()
        await wait_until(lambda: service.ready, within_s=60)
        assert (await service.extract(OcrRequest(image, ("en",)))).text == "FOREST"


async def test_a_failed_job_on_the_npu_is_caught_and_the_models_are_reloaded(
    dmcfg, device_manager, hailo_files
):
    image = text_image(["PLANET"])
    async with open_ocr_service(dmcfg) as service:
        # The job fails on the chip; the manager does not look at its status and returns
        # the output buffer as it was, and HailoRT shuts the model down after it.
        _standin.inject(str(hailo_files.rec), "error")
        with pytest.raises((InferenceError, DeviceLost)):
            await service.extract(OcrRequest(image, ("en",)))
        await wait_until(lambda: service.ready, within_s=60)
        texts = []
        for _ in range(2):  # at most one more job meets the shut-down model
            try:
                texts.append((await service.extract(OcrRequest(image, ("en",)))).text)
                break
            except DeviceLost:
                await wait_until(lambda: service.ready, within_s=60)
        assert texts == ["PLANET"]


async def test_missing_socket_at_start_names_the_unit(direct_cfg, tmp_path):
    cfg = attrs.evolve(
        direct_cfg, backend=attrs.evolve(direct_cfg.backend, type="device-manager"),
        device_manager=attrs.evolve(direct_cfg.device_manager, socket=str(tmp_path / "no.sock")),
    )
    with pytest.raises(BackendUnavailable) as info:
        async with open_ocr_service(cfg):
            pytest.fail("the service must not start")  # pragma: no cover
    msg = str(info.value)
    assert "hailo-device-manager" in msg and str(tmp_path / "no.sock") in msg
    assert "systemctl status hailo-device-manager" in msg


async def test_a_stale_socket_with_nobody_listening(direct_cfg, tmp_path):
    path = Path(f"/tmp/hdm-stale-{os.getpid()}.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()  # the file stays, as after a crash
    try:
        cfg = attrs.evolve(
            direct_cfg, backend=attrs.evolve(direct_cfg.backend, type="device-manager"),
            device_manager=attrs.evolve(direct_cfg.device_manager, socket=str(path)),
        )
        with pytest.raises(BackendUnavailable) as info:
            async with open_ocr_service(cfg):
                pytest.fail("the service must not start")  # pragma: no cover
        assert "is the hailo-device-manager service running" in str(info.value)
    finally:
        os.unlink(path)


async def test_the_direct_backend_competes_with_the_manager_this_one_does_not(
    direct_cfg, dmcfg, device_manager
):
    # The daemon holds the NPU (on HailoRT's default group id, as without hailo-apps).
    with pytest.raises(DeviceBusy):
        async with open_ocr_service(direct_cfg):
            pytest.fail("the direct backend must not get the device")  # pragma: no cover
    async with open_ocr_service(dmcfg) as service:
        assert (await service.extract(OcrRequest(text_image(["SILVER"]), ("en",)))).text == "SILVER"


async def test_backend_auto_takes_the_manager_when_its_socket_exists(direct_cfg, device_manager):
    cfg = attrs.evolve(
        direct_cfg, backend=attrs.evolve(direct_cfg.backend, type="auto"),
        device_manager=attrs.evolve(direct_cfg.device_manager, socket=device_manager.socket_path),
    )
    async with open_ocr_service(cfg) as service:
        assert service.info.kind == "device-manager"
        assert f"socket {device_manager.socket_path} exists" in service.backend_choice.reason


# --- placement ----------------------------------------------------------------------------------


async def test_a_pi_with_only_the_english_hefs_beside_the_manager(dmcfg, device_manager,
                                                                 hailo_files):
    # As on a Pi: backend auto, English and Chinese, a HEF for English only. Detection and
    # English go to the manager; Chinese is read on the CPU, after detection through it.
    cfg = attrs.evolve(
        dmcfg, backend=attrs.evolve(dmcfg.backend, type="auto"),
        ocr=attrs.evolve(dmcfg.ocr, languages=("en", "zh"), default_language="en"),
    )
    async with open_ocr_service(cfg) as service:
        assert service.info.kind == "device-manager"
        assert {m: p.device for m, p in service.models.models.items()} == {
            "detection": "npu", "recognition_en": "npu", "recognition_zh": "cpu"}
        assert (await service.extract(OcrRequest(text_image(["HARBOUR"]), ("en",)))).text \
            == "HARBOUR"
        fonts = textgen.cjk_fonts()
        if fonts:  # (without a CJK font, Chinese on the CPU is tested in test_hailo_placement)
            page = textgen.lines_image(["欢迎光临北京"], fonts[0], size=30)
            before = len(device_manager.requests)
            r = await service.extract(OcrRequest(textgen.encode(page.image), ("zh",)))
            assert r.text == "欢迎光临北京"
            # Detection went through the manager, recognition did not.
            assert [q["mode"] for q in device_manager.requests[before:]] == ["detection"]
    loads = [q for q in device_manager.requests if q["action"] == "load_model"]
    assert [q["recognition_hefs"] for q in loads] == [{"en": str(hailo_files.rec)}]
    assert device_manager.loaded_models == {}


# --- protocol details ---------------------------------------------------------------------------


async def test_a_request_over_the_managers_size_limit(dmcfg, device_manager):
    async with open_ocr_service(dmcfg) as service:
        # The manager answers a message over its limit with an error and no request id,
        # then closes the connection: that job fails, the next one reconnects.
        device_manager.max_message_bytes = 1_000_000  # under one 544x960 detection frame
        with pytest.raises(InferenceError) as info:
            await service.extract(OcrRequest(text_image(["BRIDGE"]), ("en",)))
        assert "Message too large" in str(info.value)
        device_manager.max_message_bytes = 64 * 1024 * 1024
        assert service.ready
        r = await service.extract(OcrRequest(text_image(["BRIDGE"]), ("en",)))
        assert r.text == "BRIDGE"


def _raw_call(path: str, message: object) -> dict | None:
    """One request as any client sends it; the reply, or None if the connection closed."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)
        body = json.dumps(message).encode()
        s.sendall(struct.pack(">I", len(body)) + body)
        header = s.recv(4, socket.MSG_WAITALL)
        if not header:
            return None
        (n,) = struct.unpack(">I", header)
        return json.loads(s.recv(n, socket.MSG_WAITALL))


async def test_the_doubles_replies_to_malformed_requests(device_manager):
    # As the daemon: an error with the request's id, or no reply at all.
    path = device_manager.socket_path
    assert await trio.to_thread.run_sync(_raw_call, path, {"action": "x", "request_id": 7}) == \
        {"error": "Unknown action: x", "request_id": 7}
    assert await trio.to_thread.run_sync(_raw_call, path, {"action": "infer"}) == \
        {"error": "model_path and input_data required"}
    assert await trio.to_thread.run_sync(_raw_call, path, ["not", "an", "object"]) is None
    reply = await trio.to_thread.run_sync(_raw_call, path, {
        "action": "infer", "model_type": "vlm", "model_path": __file__, "input_data": {}})
    assert reply == {"error": "Failed to load model: Unsupported model_type: vlm"}
    ping = await trio.to_thread.run_sync(_raw_call, path, {"action": "ping"})
    # The daemon counts a request in its queue until it is answered: the ping itself.
    assert ping["status"] == "ok" and ping["loaded_models"] == [] and ping["queue_depth"] == 1


async def test_models_evicted_by_the_manager_are_loaded_again_by_the_next_job(
    dmcfg, device_manager, hailo_files
):
    image = text_image(["MARKET"])
    async with open_ocr_service(dmcfg) as service:
        assert (await service.extract(OcrRequest(image, ("en",)))).text == "MARKET"
        # Another service's load filled the NPU's memory: the daemon evicted ours.
        assert device_manager.evict_lru() == f"ocr:{hailo_files.det}"
        before = len(device_manager.requests)
        assert (await service.extract(OcrRequest(image, ("en",)))).text == "MARKET"
        # Each infer carries the load parameters: the daemon loaded ours again by itself,
        # and no fault was seen.
        assert {q["action"] for q in device_manager.requests[before:]} == {"infer"}
        assert len(device_manager.loaded_models) == 1
        assert service.statistics().devices["npu"].restarts == 0
        status = await trio.to_thread.run_sync(
            _raw_call, device_manager.socket_path, {"action": "status"})
        assert status["total_lru_evictions"] == 1
        assert status["last_capacity_event_model"] == str(hailo_files.det)


async def test_models_held_with_other_languages_are_reloaded_with_ours(
    dmcfg, device_manager, hailo_files
):
    # Another client loaded the same detection HEF key with another language set.
    reply = await trio.to_thread.run_sync(_raw_call, device_manager.socket_path, {
        "action": "load_model", "model_path": str(hailo_files.det), "model_type": "ocr",
        "model_params": {"detection_hef_path": str(hailo_files.det),
                         "recognition_hefs": {"xx": str(hailo_files.rec)}},
        "request_id": "other",
    })
    assert reply["message"] == "Model loaded" and reply["request_id"] == "other"
    async with open_ocr_service(dmcfg) as service:
        assert (await service.extract(OcrRequest(text_image(["ROCKET"]), ("en",)))).text == "ROCKET"
    actions = [q["action"] for q in device_manager.requests]
    # Ours: ping, load ("already loaded"), detection warm-up, recognition warm-up refused
    # ("Unsupported language"), unload, load with our parameters.
    assert actions[:7] == ["load_model", "ping", "load_model", "infer", "infer", "unload_model",
                           "load_model"]


async def test_only_the_given_models_are_served(dmcfg, device_manager, hailo_files, caplog,
                                               monkeypatch):
    # The daemon's environment file (which our unit reads too) lowers its message limit.
    monkeypatch.setenv("HAILO_DEVICE_MAX_MESSAGE_BYTES", "0x800000")
    caplog.set_level(logging.WARNING, "hailo_ocr.device_manager")
    backend = DeviceManagerBackend(dmcfg, frozenset({"recognition_en"}))
    info = await trio.to_thread.run_sync(backend.load)
    try:
        assert [m.id for m in info.models] == ["recognition_en"]
        # A batch of 8 of the stand-in's 18 710 classes is ~32 MB of JSON.
        assert "over hailo-device-manager's message limit of 8 MiB" in caplog.text
        assert "set hailo_models.batch_size_rec to 2" in caplog.text
        with pytest.raises(InferenceError):
            await backend.infer("detection", _blank((1, 544, 960, 3)))
        out = await backend.infer("recognition_en", _blank((3, 48, 320, 3)))
        assert out.shape[0] == 3
    finally:
        await trio.to_thread.run_sync(backend.close)
    # The manager's OCR handler needs a detection HEF in every model set ...
    loads = [q for q in device_manager.requests if q["action"] == "load_model"]
    assert loads[0]["detection_hef_path"] == str(hailo_files.det)
    assert loads[0]["recognition_hefs"] == {"en": str(hailo_files.rec)}

    backend = DeviceManagerBackend(dmcfg, frozenset({"detection"}))
    info = await trio.to_thread.run_sync(backend.load)
    try:
        assert [m.id for m in info.models] == ["detection"]
    finally:
        await trio.to_thread.run_sync(backend.close)
    # ... and at least one recognition HEF.
    loads = [q for q in device_manager.requests if q["action"] == "load_model"]
    assert loads[-1]["recognition_hefs"] == {"en": str(hailo_files.rec)}
    assert device_manager.loaded_models == {}


def _blank(shape):
    import numpy as np

    return np.full(shape, 255, np.uint8)


# --- the real server ----------------------------------------------------------------------------


@pytest.mark.slow
def test_hailo_ocr_serve_through_the_manager(hailo_files, device_manager, tmp_path):
    config = write_config_file(tmp_path / "hailo-ocr.yaml", hailo_files)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAILO_OCR_")}
    env.update(PYTHONPATH=os.pathsep.join([str(STANDIN), str(REPO)]),
               HAILO_DEVICE_SOCKET=device_manager.socket_path)
    with serve_subprocess(["--backend", "device-manager", "--config", str(config)], env=env,
                          cwd=tmp_path) as served:
        health = httpx.get(f"{served.base}/health", timeout=5).json()
        assert health["backend"] == "device-manager"
        assert health["backend_reason"] == "backend.type is device-manager"
        assert [(d["device"], d["state"]) for d in health["devices"]] == [("npu", "ready")]
        models = httpx.get(f"{served.base}/models", timeout=5).json()["data"]
        assert {(m["name"], m["device"], m["file"]) for m in models} == {
            ("ocr_det.hef", "npu", str(hailo_files.det)), ("ocr.hef", "npu", str(hailo_files.rec))}
        texts = []
        for data in images():
            r = httpx.post(f"{served.base}/v1/ocr/extract", timeout=60,
                           data={"languages": "en"},
                           files={"image": ("page.png", data, "image/png")})
            body = r.json()
            assert r.status_code == 200 and body["success"], body
            assert body["hailo_info"]["backend"] == "device-manager"
            texts.append([reg["text"] for reg in body["regions"]])
        served_requests = len(device_manager.requests)
    assert served.returncode == 0, served.log[-3000:]
    assert served_requests > 3 and device_manager.loaded_models == {}, served.log[-3000:]
    # The start-up log says which backend and why.
    assert "backend device-manager (backend.type is device-manager)" in served.log
    assert "unloaded the OCR models from hailo-device-manager" in served.log
    # The same text as the direct backend on the same images (the manager stands aside).
    device_manager.stop()
    assert texts == trio.run(_direct_texts, hailo_files)


async def _direct_texts(hailo_files) -> list[list[str]]:
    from web.settings import load_config

    cfg = hailo_config(load_config(env={}), hailo_files, timeout_ms=30000)
    return await read_all(cfg, images())
