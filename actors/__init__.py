"""The supervised actor tree: NPU owner, recognition batcher, OCR orchestrator.

Actors are Trio tasks that own their state and talk over bounded memory channels. Data
flows one way (web -> orchestrator -> batcher -> NPU owner) and answers come back on
reply channels each message carries. :func:`actors.service.open_ocr_service` starts the
tree; everything else is reached through the :class:`actors.service.OcrService` it yields.
"""
