"""TEST DOUBLE of ``hailo_platform.pyhailort`` (see ``hailo_platform/__init__.py``)."""
