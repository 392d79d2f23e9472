"""TEST DOUBLE of ``hailo_platform.pyhailort.pyhailort`` (HailoRT 5.2's Python API).

Not HailoRT and not affiliated with Hailo. It reproduces the *surface* of the InferModel
API that hailo-ocr uses -- class and method names, argument names, the keyword-only
``completion_info`` callback, per-frame shapes, format types, the C-contiguity check, the
async queue, timeouts, the exception classes and their messages -- and runs ONNX models
on the CPU in place of a chip. A "HEF" here is a small JSON descriptor (see
:mod:`hailo_platform._standin`). Where the real behaviour is not documented, the choice
made is marked "GUESS".
"""

from __future__ import annotations

import gc
import os
import threading
import time
from collections import deque
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

from .. import _standin
from . import _pyhailort
from ._pyhailort import (  # noqa: F401
    FormatFlags,
    FormatOrder,
    FormatType,
    HailoRTException,
    get_status_message as _status_name,
)

HAILO_UNIQUE_VDEVICE_GROUP_ID = _pyhailort.HAILO_UNIQUE_VDEVICE_GROUP_ID
DEFAULT_VSTREAM_TIMEOUT_MS = 10000


#: The real class subclasses the binding's enum; an IntEnum with members cannot be
#: subclassed, so here it is the enum itself (NONE, ROUND_ROBIN).
HailoSchedulingAlgorithm = _pyhailort.SchedulingAlgorithm


class InvalidProtocolVersionException(HailoRTException):
    pass


class HailoRTFirmwareControlFailedException(HailoRTException):
    pass


class HailoRTInvalidFrameException(HailoRTException):
    pass


class HailoRTUnsupportedOpcodeException(HailoRTException):
    pass


class HailoRTTimeout(HailoRTException):
    pass


class HailoRTStreamAborted(HailoRTException):
    pass


class HailoRTStreamAbortedByUser(HailoRTException):
    pass


class HailoRTInvalidOperationException(HailoRTException):
    pass


class HailoRTInvalidArgumentException(HailoRTException):
    pass


class HailoRTNotFoundException(HailoRTException):
    pass


class HailoRTInvalidHEFException(HailoRTException):
    pass


class HailoRTHEFNotCompatibleWithDevice(HailoRTException):
    pass


class HailoRTEthException(HailoRTException):
    pass


class HailoRTDriverOperationFailedException(HailoRTException):
    pass


HailoRTPCIeDriverException = HailoRTDriverOperationFailedException


class HailoRTNetworkGroupNotActivatedException(HailoRTException):
    pass


class HailoCommunicationClosedException(HailoRTException):
    pass


class HailoStatusInvalidValueException(Exception):
    pass


def get_status_message(status_code: int) -> str:
    name = _status_name(status_code)
    if name == "":
        raise HailoStatusInvalidValueException(f"Value {status_code} is not a valid status")
    return name


_SPECIFIC = {
    "HAILO_UNSUPPORTED_CONTROL_PROTOCOL_VERSION": (
        InvalidProtocolVersionException,
        "HailoRT has failed because an invalid protocol version was received from device",
    ),
    "HAILO_FW_CONTROL_FAILURE": (
        HailoRTFirmwareControlFailedException, "libhailort control operation failed"),
    "HAILO_UNSUPPORTED_OPCODE": (
        HailoRTUnsupportedOpcodeException,
        "HailoRT has failed because an unsupported opcode was sent to device",
    ),
    "HAILO_INVALID_FRAME": (HailoRTInvalidFrameException, "An invalid frame was received"),
    "HAILO_TIMEOUT": (
        HailoRTTimeout, "Received a timeout - hailort has failed because a timeout had occurred"),
    "HAILO_STREAM_ABORT": (HailoRTStreamAborted, "Stream was aborted"),
    "HAILO_INVALID_OPERATION": (
        HailoRTInvalidOperationException, "Invalid operation. See hailort.log for more information"),
    "HAILO_INVALID_ARGUMENT": (
        HailoRTInvalidArgumentException, "Invalid argument. See hailort.log for more information"),
    "HAILO_NOT_FOUND": (
        HailoRTNotFoundException, "Item not found. See hailort.log for more information"),
    "HAILO_INVALID_HEF": (
        HailoRTInvalidHEFException, "Invalid HEF. See hailort.log for more information"),
    "HAILO_HEF_NOT_COMPATIBLE_WITH_DEVICE": (
        HailoRTHEFNotCompatibleWithDevice,
        "HEF file is not compatible with device. See hailort.log for more information",
    ),
    "HAILO_ETH_FAILURE": (HailoRTEthException, "Ethernet failure. See hailort.log for more information"),
    "HAILO_DRIVER_OPERATION_FAILED": (
        HailoRTDriverOperationFailedException,
        "Failure in hailort driver ioctl. run 'dmesg | grep hailo' for more information",
    ),
    "HAILO_COMMUNICATION_CLOSED": (
        HailoCommunicationClosedException,
        "Communication closed failure. Check server-client connection",
    ),
    "HAILO_NETWORK_GROUP_NOT_ACTIVATED": (
        HailoRTNetworkGroupNotActivatedException, "Network group is not activated"),
}


class ExceptionWrapper:
    """Turns a raw status exception into the indicative class, as pyhailort does."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exception_type, value, traceback):
        if value is not None and exception_type is _pyhailort.HailoRTStatusException:
            raise self.create_exception_from_status(int(value.args[0])) from value
        return False

    @staticmethod
    def create_exception_from_status(error_code: int) -> HailoRTException:
        name = get_status_message(error_code)
        if name in _SPECIFIC:
            cls, message = _SPECIFIC[name]
            return cls(message)
        return HailoRTException(f"libhailort failed with error: {error_code} ({name})")


def _status(code: int) -> _pyhailort.HailoRTStatusException:
    return _pyhailort.HailoRTStatusException(str(code))


def _raise_status(code: int) -> None:
    """Raise ``code`` the way a wrapped pyhailort call does (indicative class, raw cause)."""
    with ExceptionWrapper():
        raise _status(code)


# --- device -----------------------------------------------------------------------------


class _VDeviceParams:
    """``_pyhailort.VDeviceParams``."""

    def __init__(self) -> None:
        self.device_ids: list[str] = []
        self.device_count = 1
        self.scheduling_algorithm = HailoSchedulingAlgorithm.ROUND_ROBIN
        self.group_id = HAILO_UNIQUE_VDEVICE_GROUP_ID
        self.multi_process_service = False

    @staticmethod
    def default() -> _VDeviceParams:
        return _VDeviceParams()


class Device:
    """Only what a service asks of it: the ids of the devices present."""

    @classmethod
    def scan(cls) -> list[str]:
        return _standin.present_devices()

    def __init__(self, device_id: str | None = None) -> None:
        ids = self.scan()
        if not ids:
            raise HailoRTException("HailoRT device not found in the system")
        self._device_id = device_id or ids[0]

    @property
    def device_id(self) -> str:
        return self._device_id

    def release(self) -> None:
        pass


class VDevice:
    """Hailo virtual device representation."""

    def __init__(self, params: _VDeviceParams | None = None, *, device_ids: list[str] | None = None):
        gc.collect()
        self._vdevice = None
        self._params = params
        self._creation_pid = os.getpid()
        self._device_ids = device_ids
        self._loaded_network_groups: list = []
        self._open_vdevice()

    def _open_vdevice(self) -> None:
        if self._params is None:
            self._params = VDevice.create_params()
        if self._device_ids and self._params.device_ids:
            _raise_status(6)  # both ways of naming devices: HAILO_INVALID_OPERATION
        if self._device_ids:
            # The binding then builds fresh default params from the ids alone.
            params = _VDeviceParams.default()
            params.device_ids = list(self._device_ids)
        else:
            params = self._params
        with ExceptionWrapper():
            self._vdevice = _standin.open_vdevice(params)

    def __enter__(self) -> VDevice:
        return self

    def release(self) -> None:
        if self._vdevice is not None:
            self._vdevice.release()
            self._vdevice = None

    def __exit__(self, *args) -> bool:
        self.release()
        return False

    def __del__(self) -> None:
        try:
            self.release()
        except Exception:
            pass

    @staticmethod
    def create_params() -> _VDeviceParams:
        return _VDeviceParams.default()

    def get_physical_devices_ids(self) -> list[str]:
        with ExceptionWrapper():
            return self._live().physical_ids()

    def get_physical_devices(self) -> list[Device]:
        return [Device(i) for i in self.get_physical_devices_ids()]

    def _live(self):
        if self._vdevice is None:
            raise HailoRTException("VDevice was released")
        return self._vdevice

    def create_infer_model(self, hef_source, name: str = "") -> InferModel:
        if os.getpid() != self._creation_pid:
            raise HailoRTException("InferModel can be created only from the process VDevice was created in.")
        if isinstance(hef_source, bytes):
            raise HailoRTException("the stand-in reads descriptor files only")
        if not isinstance(hef_source, str):
            raise TypeError(
                "create_infer_model_from_file(): incompatible function arguments. The following "
                "argument types are supported: (self, hef_path: str, network_name: str)"
            )
        with ExceptionWrapper():
            handle = self._live()
            handle.check_alive()
            descriptor = _standin.load_descriptor(hef_source)
        return InferModel(_InferModelImpl(handle, descriptor), hef_source)

    @property
    def loaded_network_groups(self) -> list:
        return self._loaded_network_groups


# --- models -----------------------------------------------------------------------------


class _Format:
    """``_pyhailort.HailoFormat``."""

    def __init__(self, type_: FormatType, order: FormatOrder) -> None:
        self.type = type_
        self.order = order
        self.flags = FormatFlags.NONE

    def __repr__(self) -> str:
        return f"HailoFormat(type={self.type.name}, order={self.order.name})"


class _QuantInfo:
    def __init__(self, scale: float, zp: float = 0.0) -> None:
        self.qp_scale = scale
        self.qp_zp = zp
        self.limvals_min = 0.0
        self.limvals_max = 1.0


class _Edge:
    """One input or output of a model: shape (per frame) and user format."""

    def __init__(self, name: str, shape: tuple[int, ...], fmt: _Format, quant: _QuantInfo) -> None:
        self.name = name
        self.shape = shape
        self.format = fmt
        self.quant = quant

    def frame_bytes(self) -> int:
        itemsize = {FormatType.UINT8: 1, FormatType.AUTO: 1, FormatType.UINT16: 2,
                    FormatType.FLOAT32: 4}[self.format.type]
        return int(np.prod(self.shape)) * itemsize


class _InferModelImpl:
    def __init__(self, vdevice, descriptor: _standin.Descriptor) -> None:
        self.vdevice = vdevice
        self.descriptor = descriptor
        self.batch_size = 0
        self.input = _Edge(
            descriptor.input_name, descriptor.input_shape,
            _Format(FormatType.UINT8, FormatOrder.NHWC), _QuantInfo(1.0),
        )
        self.output = _Edge(
            descriptor.output_name, descriptor.output_shape,
            _Format(FormatType.UINT8, FormatOrder.NHWC),
            _QuantInfo(descriptor.output_scale),
        )


class InferModel:
    """Contains all of the necessary information for configuring the network for inference."""

    class InferStream:
        def __init__(self, infer_stream: _Edge) -> None:
            self._infer_stream = infer_stream

        @property
        def name(self) -> str:
            return self._infer_stream.name

        @property
        def shape(self) -> list[int]:
            return list(self._infer_stream.shape)

        @property
        def format(self) -> _Format:
            return self._infer_stream.format

        def set_format_type(self, type) -> None:  # noqa: A002 - the real argument name
            self._infer_stream.format.type = FormatType(type)

        def set_format_order(self, order) -> None:
            self._infer_stream.format.order = FormatOrder(order)

        @property
        def quant_infos(self) -> list[_QuantInfo]:
            return [self._infer_stream.quant]

        @property
        def is_nms(self) -> bool:
            return False

    def __init__(self, infer_model: _InferModelImpl, hef_path: str) -> None:
        self._infer_model = infer_model
        self._hef_path = hef_path

    def set_batch_size(self, batch_size: int) -> None:
        self._infer_model.batch_size = int(batch_size)

    def set_power_mode(self, power_mode) -> None:
        pass

    def configure(self) -> ConfiguredInferModel:
        impl = self._infer_model
        with ExceptionWrapper():
            impl.vdevice.check_alive()
            if impl.batch_size > impl.descriptor.async_queue_size:
                raise _status(6)  # batch larger than the model's queue: HAILO_INVALID_OPERATION
        return ConfiguredInferModel(_ConfiguredImpl(impl), self)

    @property
    def input_names(self) -> list[str]:
        return [self._infer_model.input.name]

    @property
    def output_names(self) -> list[str]:
        return [e.name for e in self._outputs()]

    @property
    def inputs(self) -> list[InferModel.InferStream]:
        return [self.InferStream(self._infer_model.input)]

    @property
    def outputs(self) -> list[InferModel.InferStream]:
        return [self.InferStream(e) for e in self._outputs()]

    def _edge(self, edges: list[_Edge], name: str) -> _Edge:
        if name == "":
            if len(edges) != 1:
                _raise_status(6)  # "Model has more than one input!" / "... output!"
            return edges[0]
        for e in edges:
            if e.name == name:
                return e
        _raise_status(61)
        raise AssertionError

    def _outputs(self) -> list[_Edge]:
        impl = self._infer_model
        extra = [_Edge(n, impl.output.shape, impl.output.format, impl.output.quant)
                 for n in impl.descriptor.extra_outputs]
        return [impl.output, *extra]

    def input(self, name: str = "") -> InferModel.InferStream:
        return self.InferStream(self._edge([self._infer_model.input], name))

    def output(self, name: str = "") -> InferModel.InferStream:
        return self.InferStream(self._edge(self._outputs(), name))


class AsyncInferCompletionInfo:
    """Holds information about the async infer job."""

    def __init__(self, exception) -> None:
        self._exception = exception

    @property
    def exception(self):
        return self._exception


class AsyncInferJob:
    """Hailo Asynchronous Inference Job Wrapper."""

    MILLISECOND = 1 / 1000

    def __init__(self, job) -> None:
        self._job = job

    def wait(self, timeout_ms: int) -> None:
        with ExceptionWrapper():
            # The real job waits for the job and then for its callback, each up to the
            # timeout; one wait on "callback returned" is the same bound or better.
            if not self._job.callback_done.wait(timedelta(milliseconds=timeout_ms).total_seconds()):
                raise _status(4)


class _ConfiguredImpl:
    """The configured model: async queue accounting and the job intake."""

    def __init__(self, model: _InferModelImpl) -> None:
        self.model = model
        self.capacity = model.descriptor.async_queue_size
        self.cond = threading.Condition()
        self.frames_in_flight = 0
        self.shut = False
        self.failed = False
        self.pending: deque = deque()


class ConfiguredInferModel:
    """Configured InferModel that can be used to perform an asynchronous inference."""

    class Bindings:
        """Represents an asynchronous infer request: the buffers of one frame."""

        class InferStream:
            def __init__(self, edge: _Edge) -> None:
                self._edge = edge
                self._buffer = None

            @staticmethod
            def _validate_c_contiguous(buffer) -> None:
                if not buffer.flags.c_contiguous:
                    raise HailoRTException("Buffer must be C_CONTIGUOUS")

            def set_buffer(self, buffer) -> None:
                self._validate_c_contiguous(buffer)
                if not buffer.flags.writeable:
                    raise ValueError("array is not writeable")
                self._buffer = buffer

            def get_buffer(self, tf_format=False):
                return self._buffer

        def __init__(self, model: _InferModelImpl) -> None:
            self._model = model
            self._inputs: dict[str, ConfiguredInferModel.Bindings.InferStream] = {}
            self._outputs: dict[str, ConfiguredInferModel.Bindings.InferStream] = {}

        def input(self, name: str = "") -> ConfiguredInferModel.Bindings.InferStream:
            edge = self._model.input
            if name not in ("", edge.name):
                _raise_status(61)
            return self._inputs.setdefault(edge.name, self.InferStream(edge))

        def output(self, name: str = "") -> ConfiguredInferModel.Bindings.InferStream:
            edge = self._model.output
            if name not in ("", edge.name):
                _raise_status(61)
            return self._outputs.setdefault(edge.name, self.InferStream(edge))

        def get(self):
            return self

    def __init__(self, configured_infer_model: _ConfiguredImpl, infer_model: InferModel) -> None:
        self._configured_infer_model = configured_infer_model
        self._infer_model = infer_model
        self._buffer_guards: deque = deque()

    def __enter__(self) -> ConfiguredInferModel:
        return self

    def __exit__(self, exc_type, exc_value, traceback) -> None:
        self._configured_infer_model = None

    def _impl(self) -> _ConfiguredImpl:
        if self._configured_infer_model is None:
            raise HailoRTException("ConfiguredInferModel was released")
        return self._configured_infer_model

    def activate(self) -> None:
        _raise_status(6)  # only without the scheduler; the service always uses it

    def deactivate(self) -> None:
        _raise_status(6)

    def create_bindings(self, input_buffers=None, output_buffers=None) -> Bindings:
        impl = self._impl()
        bindings = self.Bindings(impl.model)
        for name, buffer in (input_buffers or {}).items():
            bindings.input(name).set_buffer(buffer)
        for name, buffer in (output_buffers or {}).items():
            bindings.output(name).set_buffer(buffer)
        return bindings

    def get_async_queue_size(self) -> int:
        return self._impl().capacity

    def wait_for_async_ready(self, timeout_ms: int = 1000, frames_count: int = 1) -> None:
        impl = self._impl()
        timeout = timedelta(milliseconds=timeout_ms).total_seconds()
        with ExceptionWrapper():
            impl.model.vdevice.check_alive()
            if _standin.take_fault(impl.model.descriptor, "wait") is not None:
                time.sleep(timeout)  # the scheduler never gives us the device in time
                raise _status(4)
            deadline = time.monotonic() + timeout
            with impl.cond:
                while impl.frames_in_flight + frames_count > impl.capacity:
                    left = deadline - time.monotonic()
                    if left <= 0 or impl.shut:
                        raise _status(4)
                    impl.cond.wait(left)

    def run(self, bindings, timeout) -> None:
        job = self.run_async(bindings)
        job.wait(timeout)

    def run_async(self, bindings, callback=None) -> AsyncInferJob:
        impl = self._impl()
        buffers = []
        for b in bindings:
            buffers.append(b.input().get_buffer())
            buffers.append(b.output().get_buffer(None))
        self._buffer_guards.append(buffers)

        def callback_wrapper(error_code: int) -> None:
            exc = ExceptionWrapper.create_exception_from_status(error_code) if error_code else None
            if callback:
                callback(completion_info=AsyncInferCompletionInfo(exc))
            self._buffer_guards.popleft()

        try:
            job = self._submit(impl, bindings, callback_wrapper)
        except HailoRTException:
            # ConfiguredInferModel::run_async: on any error the model is shut down first.
            self.shutdown()
            raise
        return AsyncInferJob(job)

    def _submit(self, impl: _ConfiguredImpl, bindings, callback_wrapper) -> _standin.Job:
        with ExceptionWrapper():
            impl.model.vdevice.check_alive()
            if impl.shut or impl.failed:
                # GUESS: after shutdown (or after a failed job shut the pipeline down, as
                # run_async's documentation says happens) new jobs are refused as aborted.
                raise _status(63)
            refused = _standin.take_fault(impl.model.descriptor, "run")
            if refused is not None:
                raise _status(int(refused.status or 82))
            model = impl.model
            frames = []
            outputs = []
            for b in bindings:
                x = b.input().get_buffer()
                y = b.output().get_buffer(None)
                if x is None:
                    raise _status(61)  # missing input buffer: HAILO_NOT_FOUND
                if y is None:
                    raise _status(6)
                if x.nbytes != model.input.frame_bytes() or y.nbytes != model.output.frame_bytes():
                    raise _status(6)  # "buffer size ... is different than expected"
                frames.append(x)
                outputs.append(y)
            if not frames:
                raise _status(2)
            with impl.cond:
                if impl.frames_in_flight + len(frames) > impl.capacity:
                    raise _status(82)  # GUESS: no room without wait_for_async_ready
                impl.frames_in_flight += len(frames)
            job = _standin.Job(impl, frames, outputs, callback_wrapper)
            impl.model.vdevice.submit(job)
        return job

    def set_scheduler_timeout(self, timeout_ms: int) -> None:
        self._impl()

    def set_scheduler_threshold(self, threshold: int) -> None:
        self._impl()

    def set_scheduler_priority(self, priority: int) -> None:
        if not 0 <= int(priority) <= 31:
            _raise_status(2)

    def shutdown(self) -> None:
        impl = self._impl()
        with impl.cond:
            impl.shut = True
            impl.cond.notify_all()
        _standin.abort_jobs_of(impl)


class _VStreamInfo:
    """``_pyhailort.VStreamInfo``: ``shape`` is (height, width, features) for NHWC."""

    def __init__(self, edge: _Edge, network_name: str) -> None:
        self.name = edge.name
        self.network_name = network_name
        self.shape = tuple(edge.shape)
        self.format = edge.format
        self.quant_info = edge.quant

    def __repr__(self) -> str:
        return f'VStreamInfo("{self.name}")'


class HEF:
    """Enough of ``HEF`` to read a descriptor's shapes."""

    def __init__(self, hef_source) -> None:
        if isinstance(hef_source, Path):
            hef_source = str(hef_source)
        with ExceptionWrapper():
            self._descriptor = _standin.load_descriptor(hef_source)
        self._path = hef_source

    @property
    def path(self) -> str:
        return self._path

    def get_network_group_names(self) -> list[str]:
        return [self._descriptor.name]

    def _edges(self) -> _InferModelImpl:
        return _InferModelImpl(None, self._descriptor)

    def get_input_vstream_infos(self, name=None) -> list[_VStreamInfo]:
        """The model's inputs as the HEF describes them (no device needed)."""
        return [_VStreamInfo(self._edges().input, self._descriptor.name)]

    def get_output_vstream_infos(self, name=None) -> list[_VStreamInfo]:
        return [_VStreamInfo(self._edges().output, self._descriptor.name)]


__all__ = [name for name in dir() if not name.startswith("_")]
