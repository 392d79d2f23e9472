"""web.inputs: the strict base64 reader accepts exactly the strict grammar (either
alphabet, at most two '=' at the end, ASCII whitespace anywhere) and decodes it."""

from __future__ import annotations

import base64
import binascii
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from web.errors import ApiError
from web.inputs import _b64decode

#: The grammar, written as a regular expression (the reader itself avoids one: slow on
#: a large image).
_GRAMMAR = re.compile(rb"^[A-Za-z0-9+/_-]*={0,2}$")


def _oracle(text: bytes) -> bytes | str:
    compact = re.sub(rb"\s+", b"", text)
    if not compact:
        return "invalid_image"
    if not _GRAMMAR.match(compact) or len(compact) % 4 == 1:
        return "invalid_base64"
    # Either alphabet, mixed too: the URL-safe letters read as the standard ones.
    standard = compact.rstrip(b"=").translate(bytes.maketrans(b"-_", b"+/"))
    try:
        data = base64.b64decode(standard + b"=" * (-len(standard) % 4), validate=True)
    except binascii.Error:
        return "invalid_base64"
    return data or "invalid_image"


def _read(text: bytes) -> bytes | str:
    try:
        return _b64decode(text, 1 << 20)
    except ApiError as exc:
        return exc.code


_ALPHABET = b"AZaz09+/-_= \t\n\r\x0b\x0c\x00!.\x85\xa0\xff"


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from(list(_ALPHABET)), max_size=14).map(bytes))
def test_b64_reader_follows_the_grammar(text):
    assert _read(text) == _oracle(text)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64), st.booleans(), st.booleans(), st.integers(0, 3))
def test_b64_reader_decodes_what_was_encoded(data, urlsafe, strip, wrap):
    text = base64.urlsafe_b64encode(data) if urlsafe else base64.b64encode(data)
    if strip:
        text = text.rstrip(b"=")
    if wrap:
        text = b"\n".join(text[i : i + 7 * wrap] for i in range(0, len(text), 7 * wrap))
    assert _read(text) == (data or "invalid_image")


@pytest.mark.parametrize("text", [b"QUJD===", b"QU=JD", b"QUJD\x85", b"QUJ\xa0D"])
def test_b64_reader_refuses_misplaced_padding_and_other_bytes(text):
    assert _read(text) == "invalid_base64"
