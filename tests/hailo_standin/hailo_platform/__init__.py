"""TEST DOUBLE of HailoRT's Python package ``hailo_platform`` -- not HailoRT.

hailo-ocr's tests put ``tests/hailo_standin`` on ``sys.path`` to run the Hailo backend on
machines without an NPU; the service itself never imports this. It mirrors the names and
behaviour of HailoRT 5.2's InferModel API that the backend relies on, and executes ONNX
models on the CPU in place of compiled HEFs (see ``_standin.py`` for the descriptor files
that stand for HEFs, the device registry and the fault injection).
"""

from hailo_platform.pyhailort.pyhailort import (  # noqa: F401
    HEF,
    AsyncInferJob,
    Device,
    FormatOrder,
    FormatType,
    HailoCommunicationClosedException,
    HailoRTException,
    HailoRTStreamAbortedByUser,
    HailoSchedulingAlgorithm,
    VDevice,
)

from . import _standin  # noqa: F401

__version__ = "5.2.0"
STANDIN = True

__all__ = [
    "HEF", "FormatType", "FormatOrder", "Device", "VDevice", "HailoRTException",
    "HailoSchedulingAlgorithm", "HailoRTStreamAbortedByUser", "AsyncInferJob",
    "HailoCommunicationClosedException",
]
