"""The Hailo backend, on the HailoRT stand-in (tests/hailo_standin).

The stand-in mirrors HailoRT's InferModel API and runs the PP-OCRv6 ONNX models in place
of compiled HEFs, so these tests exercise the backend's real code paths: the shared
VDevice and its group id, shapes read from the model, the callback bridged into Trio,
bounded waits, and the classification of HailoRT statuses.
"""

from __future__ import annotations

import logging
import sys

import attrs
import cv2
import numpy as np
import pytest
import trio

from tests.support.paths import STANDIN

sys.path.insert(0, str(STANDIN))

import hailo_platform  # noqa: E402  (the stand-in: put on sys.path just above)
from hailo_platform import _standin  # noqa: E402
from hailo_platform.pyhailort.pyhailort import (  # noqa: E402
    ExceptionWrapper,
    HailoRTException,
    HailoRTTimeout,
)
from hailo_testing import DET_SHAPE, hailo_config, write_models  # noqa: E402

from npu import hailo_backend, hailo_vdevice  # noqa: E402
from npu.errors import (  # noqa: E402
    BackendUnavailable,
    DeviceAccessDenied,
    DeviceBusy,
    DeviceFault,
    DeviceLost,
    DeviceNotFound,
    DeviceTimeout,
    InferenceError,
    ModelLoadError,
)
from npu.hailo_backend import HailoBackend  # noqa: E402
from npu.hailo_charsets import ENGLISH_97  # noqa: E402
from npu.hailo_errors import classify, status_of  # noqa: E402
from ocr.recognition import ctc_greedy_decode, pack_fixed_rgb, resize_for_rec  # noqa: E402

assert getattr(hailo_platform, "STANDIN", False), "the HailoRT stand-in must be the one imported"


pytestmark = pytest.mark.usefixtures("hailo_standin")


@pytest.fixture
def hcfg(config, hailo_files):
    return hailo_config(config, hailo_files, timeout_ms=20000)


def word_crop(word: str) -> np.ndarray:
    """A BGR line crop with ``word`` in black on white."""
    img = np.full((48, 26 * len(word) + 24, 3), 255, np.uint8)
    cv2.putText(img, word, (10, 36), cv2.FONT_HERSHEY_SIMPLEX, 1.1, (0, 0, 0), 2, cv2.LINE_AA)
    return img


WORDS = ["HELLO", "WORLD", "INVOICE", "TOTAL", "AMOUNT", "NUMBER", "ORANGE", "PURPLE",
         "GARDEN", "WINDOW", "SILVER", "MARKET", "CASTLE", "RIVER", "FOREST"]


def rec_batch(words: list[str]) -> np.ndarray:
    return pack_fixed_rgb([resize_for_rec(word_crop(w), 48, 320) for w in words], 320)


# --- without HailoRT ------------------------------------------------------------------------


def test_without_hailo_platform_load_says_how_to_install(config, monkeypatch):
    monkeypatch.setitem(sys.modules, "hailo_platform", None)  # import -> ImportError
    backend = HailoBackend(attrs.evolve(config, backend=attrs.evolve(config.backend, type="hailo")))
    with pytest.raises(BackendUnavailable) as info:
        backend.load()
    msg = str(info.value)
    assert "hailo-h10-all" in msg and "python3-hailort" in msg and "--backend onnx" in msg


# --- loading --------------------------------------------------------------------------------


def test_load_reads_shapes_and_publishes_fixed_specs(hcfg, caplog):
    caplog.set_level(logging.INFO, logger="hailo_ocr.hailo")
    backend = HailoBackend(hcfg)
    try:
        info = backend.load()
    finally:
        backend.close()
    assert info.kind == "hailo"
    assert info.device == "0000:01:00.0"
    assert info.runtime_version == "HailoRT 5.2.0"
    assert info.max_jobs_in_flight == 2
    det = info.model("detection")
    assert (det.policy, det.layout, det.height, det.width) == ("fixed", "nhwc_uint8_rgb", 544, 960)
    assert (det.pad_value, det.fixed_batch, det.output_shape) == (114, False, (544, 960))
    rec = info.model("recognition_en")
    assert (rec.policy, rec.layout, rec.height, rec.width) == ("fixed", "nhwc_uint8_rgb", 48, 320)
    assert (rec.pad_value, rec.batch_size, rec.fixed_batch) == (128, 8, False)
    assert len(rec.charset) == 18710 and rec.charset[0] == "" and rec.output_shape == (40, 18710)
    assert info.languages == ("en",)
    text = caplog.text
    assert "HailoRT 5.2.0" in text and "group id 'SHARED'" in text
    assert "input (544, 960, 3) UINT8/NHWC" in text and "output (1, 40, 18710) FLOAT32" in text


def test_shapes_come_from_the_model_not_constants(config, hailo_model_dir):
    files = write_models(
        hailo_model_dir / "other", det_shape=(480, 640, 3), rec_shape=(48, 256, 3)
    )
    backend = HailoBackend(hailo_config(config, files))
    try:
        info = backend.load()
    finally:
        backend.close()
    det, rec = info.model("detection"), info.model("recognition_en")
    assert (det.height, det.width, rec.width) == (480, 640, 256)
    assert rec.output_shape == (32, 18710)


def test_character_list_must_match_the_class_count(config, hailo_files, tmp_path):
    short = tmp_path / "short.txt"
    chars = hailo_files.charset.read_text(encoding="utf-8").splitlines()
    short.write_text("\n".join(chars[:-1]) + "\n")
    bad = hailo_config(config, attrs.evolve(hailo_files, charset=short))
    with pytest.raises(ModelLoadError, match="18710 classes but its character list has 18709"):
        HailoBackend(bad).load()
    # No list: English falls back to the built-in 97 classes of Hailo's ocr.hef.
    builtin = attrs.evolve(bad, hailo_models=attrs.evolve(bad.hailo_models, character_lists={}))
    with pytest.raises(ModelLoadError, match="character_lists.en"):
        HailoBackend(builtin).load()


def test_builtin_english_list_is_hailos_order():
    c = ENGLISH_97
    assert len(c) == 97 and c[0] == ""
    assert (c[1], c[10], c[11], c[17], c[18], c[43]) == ("0", "9", ":", "@", "A", "Z")
    assert (c[44], c[49], c[50], c[75], c[76], c[79]) == ("[", "`", "a", "z", "{", "~")
    assert (c[80], c[94], c[95], c[96]) == ("!", "/", " ", " ")


def test_missing_hef_names_every_place_tried(hcfg, tmp_path):
    cfg = attrs.evolve(hcfg, hailo_models=attrs.evolve(
        hcfg.hailo_models, detection_hef="nowhere.hef", search_paths=(str(tmp_path),)))
    with pytest.raises(ModelLoadError, match="nowhere.hef not found; looked in: .*"):
        HailoBackend(cfg).load()


def test_a_file_that_is_no_hef_is_a_model_error(hcfg, tmp_path):
    junk = tmp_path / "junk.hef"
    junk.write_bytes(b"\x00not a hef")
    cfg = attrs.evolve(hcfg, hailo_models=attrs.evolve(hcfg.hailo_models, detection_hef=str(junk)))
    with pytest.raises(ModelLoadError, match="status 26"):
        HailoBackend(cfg).load()


# --- inference ------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 8, 15])
async def test_recognition_batches_read_the_words(hcfg, hailo_files, n):
    backend = HailoBackend(hcfg)
    info = await trio.to_thread.run_sync(backend.load)
    try:
        words = WORDS[:n]
        before = _standin.jobs_run(str(hailo_files.rec))
        probs = await backend.infer("recognition_en", rec_batch(words))
        assert probs.shape == (n, 40, 18710) and probs.dtype == np.float32
        assert np.allclose(probs.sum(axis=2), 1.0, atol=1e-3)
        texts = [t for t, _ in ctc_greedy_decode(probs, info.model("recognition_en").charset)]
        assert texts == words
        # 15 crops with batch size 8 are two jobs (8 + 7): no blank frames are added.
        assert _standin.jobs_run(str(hailo_files.rec)) - before == (n + 7) // 8
    finally:
        backend.close()


async def test_detection_map_and_concurrent_jobs(hcfg):
    backend = HailoBackend(hcfg)
    await trio.to_thread.run_sync(backend.load)
    try:
        frame = np.full((1, *DET_SHAPE), 114, np.uint8)
        cv2.putText(frame[0], "HELLO WORLD", (100, 300), cv2.FONT_HERSHEY_SIMPLEX, 3,
                    (0, 0, 0), 6)
        results = {}

        async def det(i):
            results[i] = await backend.infer("detection", frame)

        async def rec():
            results["rec"] = await backend.infer("recognition_en", rec_batch(WORDS[:4]))

        async with trio.open_nursery() as nursery:  # detection and recognition overlap
            nursery.start_soon(det, 0)
            nursery.start_soon(rec)
            nursery.start_soon(det, 1)
        prob = results[0]
        assert prob.shape == (1, 544, 960)
        assert prob[0, 240:300, 120:700].max() > 0.9 and prob[0, 450:, :].max() < 0.3
        assert np.array_equal(results[0], results[1])
    finally:
        backend.close()


async def test_wrong_input_is_the_jobs_error_not_the_devices(hcfg):
    backend = HailoBackend(hcfg)
    await trio.to_thread.run_sync(backend.load)
    try:
        with pytest.raises(InferenceError, match="uint8 frames of"):
            await backend.infer("recognition_en", np.zeros((1, 48, 300, 3), np.uint8))
        assert (await backend.infer("recognition_en", rec_batch(["RIVER"]))).shape[0] == 1
    finally:
        backend.close()


async def test_logits_get_a_softmax(config, hailo_model_dir):
    plain = write_models(hailo_model_dir / "p")
    logits = write_models(hailo_model_dir / "l", rec={"output": "logits"})
    outs = []
    for hailo_files in (plain, logits):
        backend = HailoBackend(hailo_config(config, hailo_files))
        await trio.to_thread.run_sync(backend.load)
        try:
            outs.append(await backend.infer("recognition_en", rec_batch(["GARDEN", "MARKET"])))
        finally:
            backend.close()
    assert np.allclose(outs[0], outs[1], atol=1e-4)


async def test_detection_logits_get_a_sigmoid_in_a_worker_thread(
    config, hailo_model_dir, monkeypatch
):
    import threading

    import npu.hailo_backend as hb

    threads = []
    sigmoid = hb.sigmoid

    def recording_sigmoid(x):
        threads.append(threading.current_thread())
        return sigmoid(x)

    monkeypatch.setattr(hb, "sigmoid", recording_sigmoid)
    plain = write_models(hailo_model_dir / "p")
    logits = write_models(hailo_model_dir / "l", det={"output": "logits"})
    frame = np.full((1, 544, 960, 3), 255, np.uint8)
    frame[0, 200:240, 100:600] = 0  # a dark bar: text-like
    outs = []
    for hailo_files in (plain, logits):
        backend = HailoBackend(hailo_config(config, hailo_files))
        await trio.to_thread.run_sync(backend.load)
        try:
            outs.append(await backend.infer("detection", frame))
        finally:
            backend.close()
    assert np.allclose(outs[0], outs[1], atol=1e-4)
    assert threads and threading.main_thread() not in threads


# --- sharing the device ----------------------------------------------------------------------


def test_second_unique_vdevice_fails_with_74_while_shared_ones_coexist(hcfg):
    backend = HailoBackend(hcfg)
    backend.load()
    try:
        with pytest.raises(HailoRTException) as info:
            hailo_platform.VDevice()  # HailoRT's default group id, "UNIQUE"
        assert "libhailort failed with error: 74 (HAILO_OUT_OF_PHYSICAL_DEVICES)" in str(info.value)
        assert status_of(info.value) == 74
        params = hailo_platform.VDevice.create_params()
        params.group_id = "SHARED"
        other = hailo_platform.VDevice(params)  # another service with the same group id
        try:
            assert _standin.held_by()["0000:01:00.0"] == ("SHARED", 2)
        finally:
            other.release()
    finally:
        backend.close()


def test_device_held_by_a_unique_vdevice_is_device_busy_naming_the_group(hcfg):
    squatter = hailo_platform.VDevice()  # e.g. another NPU service on HailoRT's default
    try:
        with pytest.raises(DeviceBusy) as info:
            HailoBackend(hcfg).load()
    finally:
        squatter.release()
    msg = str(info.value)
    assert "group id 'SHARED'" in msg and "hailo_models.group_id" in msg
    assert "status 74, HAILO_OUT_OF_PHYSICAL_DEVICES" in msg


def test_backends_in_one_process_share_one_vdevice(hcfg):
    a, b = HailoBackend(hcfg), HailoBackend(hcfg)
    a.load()
    try:
        b.load()
        assert _standin.held_by()["0000:01:00.0"] == ("SHARED", 1)
        b.close()
    finally:
        a.close()


def test_multi_process_service_is_refused_on_hailo10h_with_advice(hcfg):
    models = attrs.evolve(hcfg.hailo_models, multi_process_service=True)
    cfg = attrs.evolve(hcfg, hailo_models=models)
    with pytest.raises(DeviceFault, match="Hailo-10H rejects it"):
        HailoBackend(cfg).load()


# --- faults ----------------------------------------------------------------------------------


async def _loaded(cfg) -> HailoBackend:
    backend = HailoBackend(cfg)
    await trio.to_thread.run_sync(backend.load)
    return backend


async def test_a_timeout_is_retried_once(hcfg, hailo_files, caplog):
    cfg = attrs.evolve(hcfg, hailo_models=attrs.evolve(hcfg.hailo_models, timeout_ms=1000))
    backend = await _loaded(cfg)
    try:
        _standin.inject(str(hailo_files.rec), "not_ready", times=1)
        out = await backend.infer("recognition_en", rec_batch(["SILVER"]))
        assert out.shape[0] == 1
        assert "retrying once" in caplog.text
        _standin.inject(str(hailo_files.rec), "not_ready", times=2)
        with pytest.raises(DeviceTimeout, match="twice"):
            await backend.infer("recognition_en", rec_batch(["SILVER"]))
    finally:
        backend.close()


async def test_a_job_that_never_completes_is_bounded(hcfg, hailo_files):
    cfg = attrs.evolve(hcfg, hailo_models=attrs.evolve(hcfg.hailo_models, timeout_ms=300))
    backend = await _loaded(cfg)
    try:
        _standin.inject(str(hailo_files.det), "hang")
        with trio.fail_after(5):
            with pytest.raises(DeviceTimeout, match="did not complete within 300 ms"):
                await backend.infer("detection", np.zeros((1, *DET_SHAPE), np.uint8))
    finally:
        backend.close()


async def test_failed_job_is_a_device_fault_and_a_lost_device_is_device_lost(hcfg, hailo_files):
    backend = await _loaded(hcfg)
    try:
        _standin.inject(str(hailo_files.rec), "error", status=8)
        with pytest.raises(DeviceFault, match="HAILO_INTERNAL_FAILURE") as info:
            await backend.infer("recognition_en", rec_batch(["RIVER"]))
        assert not isinstance(info.value, DeviceLost)
    finally:
        backend.close()

    backend = await _loaded(hcfg)  # a reload works
    try:
        _standin.inject(str(hailo_files.rec), "lost")
        with pytest.raises(DeviceLost, match="status 62, HAILO_COMMUNICATION_CLOSED"):
            await backend.infer("recognition_en", rec_batch(["RIVER"]))
        # The dead VDevice is not handed out again, even while this backend holds it.
        assert hailo_vdevice._current is None
    finally:
        backend.close()
    backend = await _loaded(hcfg)  # and after the loss, a fresh VDevice works
    try:
        out = await backend.infer("recognition_en", rec_batch(["RIVER"]))
        assert out.shape[0] == 1
    finally:
        backend.close()


def test_classification_of_statuses():
    def exc(code):
        try:
            with ExceptionWrapper():
                raise hailo_platform.pyhailort._pyhailort.HailoRTStatusException(str(code))
        except Exception as e:  # noqa: BLE001
            return e

    assert isinstance(exc(4), HailoRTTimeout) and status_of(exc(4)) == 4
    # As a callback gets it: built from the status, no chained cause.
    bare = ExceptionWrapper.create_exception_from_status(97)
    assert status_of(bare) == 97 and bare.__cause__ is None
    assert status_of(ExceptionWrapper.create_exception_from_status(62)) == 62
    assert isinstance(classify(exc(73), phase="open"), DeviceBusy)
    assert isinstance(classify(bare, phase="complete"), DeviceLost)
    assert isinstance(classify(exc(87), phase="launch"), DeviceLost)
    assert isinstance(classify(exc(4), phase="complete"), DeviceTimeout)
    assert isinstance(classify(exc(93), phase="load"), ModelLoadError)
    assert type(classify(exc(6), phase="launch")).__name__ == "InferenceError"
    assert type(classify(exc(8), phase="complete")) is DeviceFault
    assert type(classify(ValueError("x"), phase="launch")).__name__ == "InferenceError"


# --- first contact: what HailoRT answers at start-up, and run_async ---------------------------


def test_no_device_at_all_is_not_called_busy(hcfg, hailo_standin):
    hailo_standin.set_devices([])  # HailoRT answers 74, as for a busy device
    with pytest.raises(DeviceNotFound) as info:
        HailoBackend(hcfg).load()
    msg = str(info.value)
    assert not isinstance(info.value, DeviceBusy)
    assert "no Hailo device found" in msg and "hailo-h10-all" in msg and "status 74" in msg


def test_a_node_this_user_cannot_open_is_access_denied(hcfg, hailo_standin):
    hailo_standin.set_node_openable(False)
    with pytest.raises(DeviceAccessDenied) as info:
        HailoBackend(hcfg).load()
    msg = str(info.value)
    assert "usermod -aG" in msg and "status 36, HAILO_DRIVER_OPERATION_FAILED" in msg
    assert "went away" not in msg


def test_an_unknown_device_id_lists_the_ones_present(hcfg):
    cfg = attrs.evolve(hcfg, hailo_models=attrs.evolve(hcfg.hailo_models, device="0000:09:00.0"))
    with pytest.raises(DeviceNotFound, match=r"hailo_models.device.*0000:01:00.0.*status 2"):
        HailoBackend(cfg).load()


def test_multi_process_service_works_on_hailo8(hcfg, monkeypatch):
    monkeypatch.setenv("HAILO_STANDIN_ARCH", "HAILO8")
    cfg = attrs.evolve(hcfg, hailo_models=attrs.evolve(
        hcfg.hailo_models, multi_process_service=True))
    backend = HailoBackend(cfg)
    try:
        assert backend.load().kind == "hailo"
    finally:
        backend.close()


def test_a_hef_with_two_outputs_says_so(config, hailo_model_dir):
    files = write_models(hailo_model_dir / "two", rec={"extra_outputs": ["ocr/second"]})
    with pytest.raises(ModelLoadError, match=r"ocr.hef has 2 outputs .*exactly one input and one"):
        HailoBackend(hailo_config(config, files)).load()


async def test_run_async_failing_is_a_fault_and_never_retried(hcfg, hailo_files, caplog):
    backend = await _loaded(hcfg)
    try:
        # 82 (queue full) used to be retried: on a model HailoRT has already shut down.
        _standin.inject(str(hailo_files.rec), "refuse", status=82)
        with pytest.raises(DeviceFault, match="run_async failed and HailoRT shut the model"
                           ) as info:
            await backend.infer("recognition_en", rec_batch(["RIVER"]))
        assert not isinstance(info.value, DeviceLost | DeviceTimeout)
        assert "retrying" not in caplog.text
    finally:
        backend.close()
    assert hailo_vdevice._current is None  # after a fault the next load opens afresh
    backend = await _loaded(hcfg)  # the reload the NPU owner does works
    try:
        assert (await backend.infer("recognition_en", rec_batch(["RIVER"]))).shape[0] == 1
    finally:
        backend.close()


async def test_a_failure_inside_the_completion_callback_fails_only_that_job(
    hcfg, monkeypatch
):
    from hailo_platform.pyhailort import pyhailort

    backend = await _loaded(hcfg)
    reads = []

    def unreadable(self):  # the first completion read on HailoRT's thread fails
        reads.append(1)
        if len(reads) == 1:
            raise RuntimeError("completion unreadable")
        return self._exception

    try:
        monkeypatch.setattr(pyhailort.AsyncInferCompletionInfo, "exception", property(unreadable))
        with pytest.raises(InferenceError, match="completion lost: completion unreadable"):
            await backend.infer("recognition_en", rec_batch(["RIVER"]))
        assert (await backend.infer("recognition_en", rec_batch(["RIVER"]))).shape[0] == 1
    finally:
        backend.close()
    # Nothing escaped to HailoRT's thread: the hailo_standin fixture fails the test if so.


def test_pyhailort_classes_without_a_status_code_are_classified():
    make = ExceptionWrapper.create_exception_from_status
    expected = {
        15: ("InvalidProtocolVersionException", DeviceFault, "same version"),
        48: ("HailoRTUnsupportedOpcodeException", DeviceFault, "same version"),
        18: ("HailoRTFirmwareControlFailedException", DeviceLost, "went away"),
        19: ("HailoRTEthException", DeviceLost, "went away"),
        25: ("HailoRTInvalidFrameException", DeviceFault, ""),
        69: ("HailoRTNetworkGroupNotActivatedException", DeviceFault, ""),
    }
    for code, (name, kind, words) in expected.items():
        exc = make(code)
        assert type(exc).__name__ == name and str(code) not in str(exc)
        assert status_of(exc) == code
        err = classify(exc, phase="complete")
        assert type(err) is kind and words in str(err), (code, err)


def test_missing_parts_name_what_would_stop_the_npu(hcfg, hailo_standin, monkeypatch, tmp_path):
    assert hailo_backend.missing_parts(hcfg) == []
    # One HEF missing moves only its model to the CPU (npu.placement): the NPU still serves.
    no_det = attrs.evolve(hcfg, hailo_models=attrs.evolve(
        hcfg.hailo_models, detection_hef="ocr_det_missing.hef", search_paths=(str(tmp_path),)))
    assert hailo_backend.missing_parts(no_det) == []
    no_hef = attrs.evolve(no_det, hailo_models=attrs.evolve(
        no_det.hailo_models, recognition_hefs={"en": "ocr_missing.hef"}))
    misses = hailo_backend.missing_parts(no_hef)
    assert [m.split(" (")[0] for m in misses] == [
        "ocr_det_missing.hef is missing", "ocr_missing.hef is missing"]
    # A model placed on the CPU needs no HEF: the one left decides.
    en_on_cpu = attrs.evolve(no_det, models=attrs.evolve(
        no_det.models, placement={"recognition_en": "cpu"}))
    assert len(hailo_backend.missing_parts(en_on_cpu)) == 1
    hailo_standin.set_devices([])
    assert hailo_backend.missing_parts(hcfg) == ["no Hailo device is present"]
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert "hailo_platform) are not installed" in hailo_backend.missing_parts(hcfg)[0]
