"""Property-based fuzzing of ``POST /v1/ocr/extract`` (hypothesis), in-process.

Properties, for any body hypothesis can build: the answer is never a 5xx; an error answer
is the SPEC's error body (``success``/``error``/``code``, no traceback or host path); a
200 is a well-formed result. The longer, socket-level fuzzer is ``benchmarks/fuzz.py``.

The app is started once per test; hypothesis runs in a worker thread and calls the
in-process client through ``trio.from_thread``, so one service answers every example.
"""

from __future__ import annotations

import base64
import json

import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.images import text_image
from tests.support.reliability import (
    EXTRACT,
    JSON,
    error_body_problems,
    multipart,
    seed_documents,
    seed_images,
)
from tests.support.server import fast
from web.app import create_app, get_state

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(["image", "languages", "id", "x"]) | st.text(max_size=5),
                      inner, max_size=4),
    max_leaves=12,
)
image_strings = (
    st.binary(max_size=400).map(lambda b: base64.b64encode(b).decode())
    | st.binary(max_size=300).map(lambda b: "data:image/png;base64," + base64.b64encode(b).decode())
    | st.text(max_size=60)
    | st.sampled_from(["data:", "data:image/png;base64,", "file:///etc/passwd", "file://x/y",
                       "ftp://a/b", "====", "A", "AAAA", "data:image/jpeg;base64,////"])
)
languages = (
    st.none() | st.text(max_size=12) | st.lists(st.text(max_size=8), max_size=6)
    | st.lists(st.sampled_from(["en", "zh", "EN", "", "xx", " en "]), max_size=4) | json_values
)
request_docs = st.fixed_dictionaries(
    {"image": image_strings | json_values}, optional={"languages": languages, "extra": json_values}
)
#: How a document is to be read (issue 17): near-valid values and anything else.
document_options = st.fixed_dictionaries({}, optional={
    "pages": st.text(alphabet="0123456789-, x", max_size=12)
    | st.integers(-3, 10**12) | st.lists(st.integers(-1, 5) | st.text(max_size=4), max_size=4)
    | json_values,
    "dpi": st.integers(-10, 10**6) | st.floats() | st.sampled_from(["72", "150.5", "x", ""])
    | json_values,
    "pdf_text": st.sampled_from(["auto", "ocr", "text", "OCR", " text ", "", "none"])
    | json_values,
})


def _check(status: int, body: bytes, sent: bytes) -> None:
    assert status < 500, (status, body[:300])
    if status >= 400:
        problems = error_body_problems(status, body, sent)
        assert not problems, problems
    else:
        doc = json.loads(body)
        assert doc["success"] is True and isinstance(doc["text"], str)
        assert isinstance(doc["regions"], list)


async def _run_property_test(config, test_body) -> None:
    app = create_app(fast(config, server={"max_body_bytes": 200_000}))
    async with app.test_app() as test_app:
        client = test_app.test_client()

        async def post(body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
            r = await client.post(EXTRACT, data=body, headers=headers)
            return r.status_code, await r.get_data()

        def call(body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
            return trio.from_thread.run(post, body, headers)

        with trio.fail_after(120):
            await trio.to_thread.run_sync(test_body, call)
        stats = get_state(app).service.statistics()
        assert stats.requests_in_flight == 0
        assert get_state(app).service.ready


def fuzz_settings(examples: int) -> settings:
    return settings(
        max_examples=examples, deadline=None, derandomize=True, database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


async def test_random_request_bodies_never_get_a_5xx(config):
    seen: list[int] = []

    def body(call) -> None:
        @fuzz_settings(250)
        @given(
            st.one_of(
                request_docs.map(lambda d: json.dumps(d).encode()),
                json_values.map(lambda d: json.dumps(d).encode()),
                st.binary(max_size=600),
                st.text(max_size=200).map(str.encode),
            )
        )
        def prop(raw: bytes) -> None:
            status, answer = call(raw, JSON)
            _check(status, answer, raw)
            seen.append(status)

        prop()

    await _run_property_test(config, body)
    assert len(seen) >= 250
    assert any(400 <= s < 500 for s in seen)


async def test_mutated_images_never_get_a_5xx(config):
    seeds = seed_images()
    seen: list[int] = []

    def body(call) -> None:
        @fuzz_settings(120)
        @given(
            seed=st.integers(0, len(seeds) - 1),
            flips=st.lists(st.tuples(st.integers(0, 4095), st.integers(1, 255)), max_size=6),
            cut=st.none() | st.integers(0, 4095),
            as_multipart=st.booleans(),
        )
        def prop(seed: int, flips: list[tuple[int, int]], cut: int | None,
                 as_multipart: bool) -> None:
            data = bytearray(seeds[seed])
            for at, mask in flips:  # header-heavy: offsets fall in the first 4 kB
                data[at % len(data)] ^= mask
            if cut is not None:
                data = data[: cut % len(data)]
            if as_multipart:
                raw, headers = multipart([("image", "x.img", "application/octet-stream",
                                           bytes(data))])
            else:
                raw, headers = json.dumps({"image": base64.b64encode(data).decode()}).encode(), JSON
            status, answer = call(raw, headers)
            _check(status, answer, raw)
            seen.append(status)

        prop()

    await _run_property_test(config, body)
    assert len(seen) >= 120
    assert 200 in seen and any(s >= 400 for s in seen), sorted(set(seen))


async def test_document_options_never_get_a_5xx(config):
    """Any ``pages``, ``dpi`` and ``pdf_text`` sent with a real 2-page PDF or TIFF: a
    result with one entry per page asked for, or a 4xx saying which field is wrong."""
    import cv2
    import numpy as np

    img = cv2.imdecode(np.frombuffer(text_image(["HELLO"], scale=1.0), np.uint8), cv2.IMREAD_COLOR)
    seeds = seed_documents(img)
    docs = [seeds[2], seeds[4]]  # two pages each: a PDF (text, then a scan) and a TIFF
    seen: list[int] = []

    def body(call) -> None:
        @fuzz_settings(60)
        @given(doc=st.sampled_from(docs), options=document_options)
        def prop(doc: bytes, options: dict) -> None:
            raw = json.dumps({"image": base64.b64encode(doc).decode(), **options}).encode()
            status, answer = call(raw, JSON)
            _check(status, answer, raw)
            if status == 200:
                pages = json.loads(answer)["pages"]
                assert 1 <= len(pages) <= 2
                assert [p["page"] for p in pages] == sorted({p["page"] for p in pages})
            seen.append(status)

        prop()

    await _run_property_test(config, body)
    assert 200 in seen and any(400 <= s < 500 for s in seen)
