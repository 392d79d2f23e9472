"""The HailoRT stand-in answers as HailoRT 5.2 does where the backend depends on it.

Each expectation is taken from HailoRT's source (``hailo-ai/hailort``, v5.2.0):
``VDevice::create`` / ``VDeviceBase::validate_params`` / ``get_accelerator_type`` /
``create_devices`` in ``vdevice.cpp``, ``open_device_file`` in the Linux driver glue,
``ConfiguredInferModel::run_async`` and ``InferModelBase::output()`` in
``infer_model.cpp``, and the Python ``ExceptionWrapper``. A test double that drifted from
those would let the backend's handling of them go untested.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from tests.support.paths import STANDIN

sys.path.insert(0, str(STANDIN))

import hailo_platform  # noqa: E402  (the stand-in: put on sys.path just above)
from hailo_platform.pyhailort.pyhailort import (  # noqa: E402
    HailoRTDriverOperationFailedException,
    HailoRTException,
    HailoRTInvalidArgumentException,
    HailoRTInvalidOperationException,
)
from hailo_testing import write_models  # noqa: E402

from npu.hailo_errors import status_of  # noqa: E402

assert getattr(hailo_platform, "STANDIN", False), "the HailoRT stand-in must be the one imported"


def _params(**kw):
    params = hailo_platform.VDevice.create_params()
    params.scheduling_algorithm = hailo_platform.HailoSchedulingAlgorithm.ROUND_ROBIN
    params.group_id = "SHARED"
    for key, value in kw.items():
        setattr(params, key, value)
    return params


def _open(**kw):
    return hailo_platform.VDevice(_params(**kw))


def test_multi_process_service_on_hailo10h_is_6_and_accepted_on_hailo8(
    hailo_standin, monkeypatch
):
    with pytest.raises(HailoRTInvalidOperationException) as info:
        _open(multi_process_service=True)
    assert status_of(info.value) == 6
    monkeypatch.setenv("HAILO_STANDIN_ARCH", "HAILO8")
    _open(multi_process_service=True).release()


def test_an_unknown_device_id_is_2(hailo_standin):
    with pytest.raises(HailoRTInvalidArgumentException) as info:
        _open(device_ids=["0000:09:00.0"])
    assert status_of(info.value) == 2


def test_no_device_is_74_and_an_empty_scan(hailo_standin):
    hailo_standin.set_devices([])
    assert hailo_platform.Device.scan() == []
    with pytest.raises(HailoRTException) as info:
        _open()
    assert status_of(info.value) == 74


def test_a_node_that_cannot_be_opened_is_36(hailo_standin):
    hailo_standin.set_node_openable(False)
    with pytest.raises(HailoRTDriverOperationFailedException) as info:
        _open()
    assert status_of(info.value) == 36
    assert hailo_platform.Device.scan() == ["0000:01:00.0"]  # the device is there


@pytest.fixture
def configured(hailo_standin, hailo_model_dir):
    files = write_models(hailo_model_dir / "standin")
    vdevice = _open()
    model = vdevice.create_infer_model(str(files.rec))
    model.set_batch_size(1)
    model.output().set_format_type(hailo_platform.FormatType.FLOAT32)
    configured = model.configure()
    yield files, model, configured
    configured.shutdown()
    vdevice.release()


def _bindings(model, configured):
    b = configured.create_bindings()
    b.input().set_buffer(np.zeros(model.input().shape, np.uint8))
    b.output().set_buffer(np.empty(model.output().shape, np.float32))
    return [b]


def test_a_failed_run_async_leaves_the_model_shut_down(configured, hailo_standin):
    files, model, cim = configured
    cim.run_async(_bindings(model, cim)).wait(10000)  # works before
    hailo_standin.inject(str(files.rec), "refuse", status=82, times=1)
    with pytest.raises(HailoRTException) as info:
        cim.run_async(_bindings(model, cim))
    assert status_of(info.value) == 82
    with pytest.raises(HailoRTException) as info:  # the fault fired once; the model is gone
        cim.run_async(_bindings(model, cim))
    assert status_of(info.value) == 63


def test_a_raising_callback_is_recorded_not_swallowed(configured, hailo_standin):
    _, model, cim = configured

    def bad(completion_info):
        raise RuntimeError("bug in a callback")

    cim.run_async(_bindings(model, cim), bad).wait(10000)
    assert [type(e) for e in hailo_standin.callback_failures] == [RuntimeError]
    hailo_standin.callback_failures.clear()  # seen: the fixture would fail the test otherwise


def test_output_without_a_name_is_6_when_there_are_several(hailo_standin, hailo_model_dir):
    files = write_models(hailo_model_dir / "two_outputs", rec={"extra_outputs": ["ocr/out2"]})
    vdevice = _open()
    try:
        model = vdevice.create_infer_model(str(files.rec))
        assert len(model.output_names) == 2
        with pytest.raises(HailoRTInvalidOperationException) as info:
            model.output()
        assert status_of(info.value) == 6
        assert model.output("ocr/out2").name == "ocr/out2"
    finally:
        vdevice.release()
