"""Inference backends behind one small interface (see :mod:`npu.backend`).

``onnx`` runs the PP-OCR models shipped in the ``rapidocr`` wheel on the CPU with ONNX
Runtime; ``hailo`` runs compiled HEF models on a Hailo NPU through HailoRT;
``device-manager`` runs the same HEFs through hailo-device-manager, the daemon that holds
the NPU for every service on a Pi. Importing this package never imports ``hailo_platform``.
"""
