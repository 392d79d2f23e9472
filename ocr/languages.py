"""Language codes as clients write them, and which loaded language a request is read in.

Clients of the original hailo-ocr name languages in many ways: PaddleOCR's own codes
(``ch_sim``, ``ch_tra``, ``ch``), locale tags (``en-US``, ``zh_CN``, ``zh-Hans``) and plain
words (``english``, ``Chinese``), in any case. :func:`normalise_language` maps each to
the code of the recognition model that reads it (``en``, ``zh``: the Chinese model reads
simplified and traditional characters alike), and :func:`choose_language` picks the
first one the service has loaded, as the original used the first language it had a
model for. What to do when none is loaded is the caller's policy
(``ocr.unknown_language``), so this module only reports which codes were not.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

import attrs

#: Other names for the languages the shipped models read, keyed by the lower-case code
#: with ``_`` written as ``-``. A tag not listed is read by its primary subtag
#: (``en-AU`` -> ``en``, ``zh-Hant-TW`` -> ``zh``).
ALIASES: Final[Mapping[str, str]] = {
    "english": "en",
    "eng": "en",
    "ch": "zh",
    "ch-sim": "zh",
    "ch-tra": "zh",
    "chi": "zh",
    "chinese": "zh",
    "cn": "zh",
    "zho": "zh",
}

#: Longest code quoted back in a message (a client may send anything).
_QUOTE_MAX: Final = 32
#: Most unsupported codes named in one message.
_NAMED_MAX: Final = 5


def normalise_language(code: str) -> str:
    """The model language ``code`` names: ``"zh_CN"`` -> ``"zh"``, ``"English"`` ->
    ``"en"``; an unknown code comes back as its lower-case primary subtag."""
    tag = code.strip().lower().replace("_", "-")
    primary = tag.split("-", 1)[0]
    return ALIASES.get(tag) or ALIASES.get(primary) or primary


def normalise_languages(codes: Iterable[str]) -> tuple[str, ...]:
    """Each code normalised, duplicates dropped, order kept."""
    return tuple(dict.fromkeys(normalise_language(c) for c in codes))


@attrs.frozen
class LanguageChoice:
    #: The loaded language the request is read in.
    language: str
    #: Codes the client asked for, before ``language``, that no loaded model reads (all of
    #: them when none is loaded and ``language`` is the default).
    unsupported: tuple[str, ...] = ()


def choose_language(
    asked: Iterable[str], supported: tuple[str, ...], default: str
) -> LanguageChoice:
    """The first code in ``asked`` that a loaded model reads; ``default`` when ``asked``
    is empty or names none of them."""
    skipped: list[str] = []
    for code in asked:
        language = normalise_language(code)
        if language in supported:
            return LanguageChoice(language, tuple(skipped))
        skipped.append(code)
    return LanguageChoice(default, tuple(skipped))


def quote_codes(codes: Iterable[str]) -> str:
    """Codes for a message, each quoted and cut short, at most a few of them."""
    codes = list(dict.fromkeys(codes))
    shown = [
        repr(c if len(c) <= _QUOTE_MAX else c[:_QUOTE_MAX] + "...") for c in codes[:_NAMED_MAX]
    ]
    if len(codes) > _NAMED_MAX:
        shown.append(f"and {len(codes) - _NAMED_MAX} more")
    return ", ".join(shown)
