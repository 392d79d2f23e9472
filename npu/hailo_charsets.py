"""Character lists of the compiled recognition models.

A HEF carries no character list, so the class order has to come from somewhere else:

* English (``ocr.hef`` of Hailo's PaddleOCR example, 97 classes) is built in: the CTC
  blank at index 0, then PaddleOCR's ``en_dict.txt`` order (digits, ``:;<=>?@``, A-Z,
  ``[\\]^_```, a-z, ``{|}~``, ``!"#$%&'()*+,-./``), then a space twice (95 and 96: the
  dictionary's own space line and the space PaddleOCR appends).
* Any other language (e.g. ``paddle_ocr_v5_mobile_recognition``: 18385 classes) needs
  its dictionary file, one character per line as PaddleOCR ships it, named in
  ``hailo_models.character_lists``. The class list is the blank, the file's lines, and a
  space, exactly as for the ONNX models (:func:`ocr.recognition.build_charset`).

The backend checks at load that the model's output class count equals the list's length;
an off-by-one list would otherwise shift every character silently.
"""

from __future__ import annotations

import string
from pathlib import Path

from ocr.recognition import build_charset

from .errors import ModelLoadError
from .models import resolve_model_path

#: PaddleOCR ``en_dict.txt`` order: the 94 printable ASCII characters other than space.
_EN_DICT = (
    string.digits + ":;<=>?@" + string.ascii_uppercase + "[\\]^_`"
    + string.ascii_lowercase + "{|}~" + "!\"#$%&'()*+,-./"
)
#: The 97 classes of Hailo's English ``ocr.hef``.
ENGLISH_97: tuple[str, ...] = ("", *_EN_DICT, " ", " ")

assert len(ENGLISH_97) == 97 and len(set(_EN_DICT)) == 94


def read_dictionary(path: Path) -> list[str]:
    """The lines of a PaddleOCR dictionary file (one character each; a line holding only
    a space is the space character)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"cannot read character list {path}: {exc}") from exc
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the file's final newline
    lines = [line.rstrip("\r") for line in lines]
    if not lines:
        raise ModelLoadError(f"character list {path} is empty")
    return lines


def charset_for(
    language: str, configured: str | None, base_dir: str | None, search_paths: tuple[str, ...]
) -> tuple[str, ...]:
    """The class list for ``language``: the configured file, else the built-in English."""
    if configured:
        path = resolve_model_path(configured, base_dir, search_paths)
        return build_charset(read_dictionary(path))
    if language == "en":
        return ENGLISH_97
    raise ModelLoadError(
        f"no character list for language {language!r}: a HEF carries none, so name the "
        f"model's dictionary file (one character per line, PaddleOCR format) in "
        f"hailo_models.character_lists.{language}"
    )


def check_classes(charset: tuple[str, ...], classes: int, model: str, language: str) -> None:
    """Refuse a list that does not match the model's output width."""
    if classes == len(charset):
        return
    hint = ""
    if classes == len(charset) + 1:
        hint = " (one short: does the file lack the final space line?)"
    elif classes == len(charset) - 1:
        hint = " (one too many: does the file already include the blank or a space?)"
    raise ModelLoadError(
        f"{model} ({language}) outputs {classes} classes but its character list has "
        f"{len(charset)}{hint}; set hailo_models.character_lists.{language} to the "
        f"dictionary the model was trained with"
    )
