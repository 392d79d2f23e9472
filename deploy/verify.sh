#!/usr/bin/env bash
# Check the installed hailo-ocr service (what the original hailo-ocr's verify.sh did):
# health, readiness (with the token), models, one OCR of a sample image, the device.
# The same as `sudo /opt/hailo-ocr/venv/bin/hailo-ocr verify`; options go to it
# (--help lists them). Exit status 0 when no check failed.
set -euo pipefail
ROOT="${HAILO_OCR_ROOT:-}"
exec "$ROOT/opt/hailo-ocr/venv/bin/hailo-ocr" verify ${ROOT:+--root "$ROOT"} "$@"
