"""Inference backends behind one small interface (see :mod:`npu.backend`).

``onnx`` runs the PP-OCR models shipped in the ``rapidocr`` wheel on the CPU with ONNX
Runtime; ``hailo`` runs compiled HEF models on a Hailo NPU through HailoRT. Importing
this package never imports ``hailo_platform``.
"""
