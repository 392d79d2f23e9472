"""Bad inputs, mutators and process probes shared by the reliability tests
(``tests/web/test_bad_input.py``, ``test_fuzz_props.py``, ``test_faults_http.py``,
``test_shutdown.py``) and the long-running scripts (``benchmarks/fuzz.py``,
``benchmarks/soak.py``), so the suite and the scripts try the same things and judge the
answers by the same rules.

Every request here is plain bytes plus headers, so one case list serves Quart's in-process
test client, httpx against a real server, and ``http.client`` in the scripts alike.
"""

from __future__ import annotations

import io
import json
import os
import random
from pathlib import Path

import attrs
import cv2
import numpy as np
from PIL import Image

from tests.support.images import b64, data_uri, encode, gif_image, png_header_only, text_image

#: Strings that must never appear in an error body: tracebacks and host paths.
LEAKS = (
    "Traceback", 'File "', "site-packages", "/work/", "/root/", "/home/", "/tmp/", "/usr/",
    "/var/", "/etc/", "/proc/", "/opt/", ".py", "Error:", "0x7f",
)
ERROR_KEYS = {"success", "error", "code"}
EXTRACT = "/v1/ocr/extract"
JSON = {"Content-Type": "application/json"}


# -- judging answers ---------------------------------------------------------------------


def error_body_problems(status: int, body: bytes, sent: bytes = b"") -> list[str]:
    """What is wrong with an error answer (status >= 400), or [] if it follows the SPEC:
    a JSON object with exactly ``success: false``, a non-empty ``error`` and a snake_case
    ``code``, and no traceback or host path anywhere in it. A marker that occurs in
    ``sent`` (the request) is an echo of the client's own input, not a leak."""
    problems = []
    try:
        doc = json.loads(body)
    except ValueError:
        return [f"{status}: body is not JSON: {body[:120]!r}"]
    if not isinstance(doc, dict) or set(doc) != ERROR_KEYS:
        return [f"{status}: body keys are not {sorted(ERROR_KEYS)}: {body[:160]!r}"]
    if doc["success"] is not False:
        problems.append(f"{status}: success is {doc['success']!r}")
    if not isinstance(doc["error"], str) or not doc["error"].strip():
        problems.append(f"{status}: empty error message")
    code = doc["code"]
    if not isinstance(code, str) or not code or not code.replace("_", "").isalnum() or (
        code != code.lower()
    ):
        problems.append(f"{status}: code {code!r} is not stable snake_case")
    text = body.decode("utf-8", "replace")
    echoed = sent.decode("utf-8", "replace")
    for leak in LEAKS:
        if leak in text and leak not in echoed:
            problems.append(f"{status}: body leaks {leak!r}: {text[:200]}")
    return problems


def assert_error_body(status: int, body: bytes, want_status: int | None = None,
                      want_code: str | None = None) -> dict:
    problems = error_body_problems(status, body)
    assert not problems, problems
    doc = json.loads(body)
    if want_status is not None:
        assert status == want_status, (status, want_status, doc)
    if want_code is not None:
        assert doc["code"] == want_code, (want_code, doc)
    return doc


# -- images ------------------------------------------------------------------------------


SVG = (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="100" '
       b'height="40"><text x="5" y="30">HELLO</text></svg>')
PDF = b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
TEXT = b"Total: $12.50\nThank you for shopping with us.\n"


# -- requests ----------------------------------------------------------------------------


def json_body(doc: object) -> bytes:
    return json.dumps(doc).encode()


def multipart(fields: list[tuple[str, str | None, str | None, bytes]],
              boundary: str = "hailoOcrBoundary7MA4YWxk") -> tuple[bytes, dict[str, str]]:
    """A multipart/form-data body: (name, filename or None, content type or None, data)."""
    out = io.BytesIO()
    for name, filename, ctype, data in fields:
        out.write(f"--{boundary}\r\n".encode())
        disp = f'form-data; name="{name}"'
        if filename is not None:
            disp += f'; filename="{filename}"'
        out.write(f"Content-Disposition: {disp}\r\n".encode())
        if ctype:
            out.write(f"Content-Type: {ctype}\r\n".encode())
        out.write(b"\r\n" + data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


@attrs.frozen
class Case:
    """One request and the answer it must get."""

    name: str
    body: bytes
    headers: dict[str, str]
    status: int
    code: str | None  # None: a 200 (a deliberately lenient input)
    method: str = "POST"
    path: str = EXTRACT


def bad_input_cases(max_body_bytes: int) -> list[Case]:
    """The bad-input suite of issue 7, with the answer each must get.

    A few inputs the issue lists are *accepted* on purpose and are marked with a 200:
    ``languages`` as a string (``"en"`` or ``"en,zh"``, what a form sends), an empty
    ``languages`` (the default language), languages no model reads (read in the default
    language with a warning, as the original service did: issue 12), and a data URI
    whose declared type differs from the real one (the bytes decide: the original's
    clients label every image ``image/jpeg``). Bytes that are not an image are still
    refused, whatever type they declare.
    """
    png = text_image(["HELLO"], scale=1.0)
    jpg = text_image(["HELLO"], ".jpg", scale=1.0)
    tiny = encode(np.zeros((1, 1, 3), np.uint8))
    rnd = random.Random(7).randbytes(3000)
    cases = [
        Case("empty body", b"", JSON, 400, "invalid_json"),
        Case("invalid json", b'{"image": "abc', JSON, 400, "invalid_json"),
        Case("json not an object", b"[1, 2, 3]", JSON, 400, "invalid_json"),
        Case("json nested 10000 deep", b"[" * 10000 + b"]" * 10000, JSON, 400, "invalid_json"),
        Case("image nested 10000 deep", b'{"image": ' + b"[" * 10000 + b"]" * 10000 + b"}",
             JSON, 400, "invalid_json"),
        Case("json with NaN and trailing junk", b'{"image": NaN} x', JSON, 400, "invalid_json"),
        Case("invalid utf-8", b'{"image": "\xff\xfe"}', JSON, 400, "invalid_json"),
        Case("image missing", json_body({"languages": ["en"]}), JSON, 400, "missing_field"),
        Case("image null", json_body({"image": None}), JSON, 400, "missing_field"),
        Case("image empty", json_body({"image": ""}), JSON, 400, "missing_field"),
        Case("image a number", json_body({"image": 12345}), JSON, 400, "invalid_field"),
        Case("image a list", json_body({"image": [b64(png)]}), JSON, 400, "invalid_field"),
        Case("image an object", json_body({"image": {"data": b64(png)}}), JSON, 400,
             "invalid_field"),
        Case("image true", json_body({"image": True}), JSON, 400, "invalid_field"),
        Case("invalid base64", json_body({"image": "abc$%^&*()"}), JSON, 400, "invalid_base64"),
        Case("base64 of one char", json_body({"image": "QQ=Q"}), JSON, 400, "invalid_base64"),
        Case("base64 of random bytes", json_body({"image": b64(rnd)}), JSON, 400,
             "invalid_image"),
        Case("base64 of a text file", json_body({"image": b64(TEXT)}), JSON, 400,
             "invalid_image"),
        Case("base64 of an SVG", json_body({"image": b64(SVG)}), JSON, 415,
             "unsupported_media_type"),
        Case("base64 of a damaged PDF", json_body({"image": b64(PDF)}), JSON, 400,
             "invalid_pdf"),
        Case("truncated JPEG", json_body({"image": b64(jpg[: len(jpg) // 2])}), JSON, 400,
             "invalid_image"),
        Case("JPEG header only", json_body({"image": b64(jpg[:40])}), JSON, 400,
             "invalid_image"),
        Case("truncated PNG", json_body({"image": b64(png[: len(png) // 2])}), JSON, 400,
             "invalid_image"),
        Case("PNG signature only", json_body({"image": b64(png[:8])}), JSON, 400,
             "invalid_image"),
        Case("PNG declaring 50000x50000", json_body({"image": b64(png_header_only(50_000,
             50_000))}), JSON, 413, "image_too_large"),
        Case("PNG declaring 0x0", json_body({"image": b64(png_header_only(0, 0))}), JSON, 400,
             "invalid_image"),
        Case("1x1 image", json_body({"image": b64(tiny)}), JSON, 400, "image_too_small"),
        Case("GIF", json_body({"image": b64(gif_image())}), JSON, 415,
             "unsupported_media_type"),
        Case("data URI: damaged PDF declared as PNG (the bytes decide)",
             json_body({"image": data_uri(PDF, "image/png")}), JSON, 400, "invalid_pdf"),
        Case("data URI: text declared as JPEG", json_body({"image": data_uri(TEXT,
             "image/jpeg")}), JSON, 400, "invalid_image"),
        Case("data URI: PNG declared as GIF (accepted: the bytes decide)",
             json_body({"image": data_uri(png, "image/gif")}), JSON, 200, None),
        Case("data URI: PNG declared as text (accepted: the bytes decide)",
             json_body({"image": data_uri(png, "text/plain")}), JSON, 200, None),
        Case("data URI: GIF declared as PNG", json_body({"image": data_uri(gif_image(),
             "image/png")}), JSON, 415, "unsupported_media_type"),
        Case("data URI: JPEG declared as PNG (accepted: the bytes decide)",
             json_body({"image": data_uri(jpg, "image/png")}), JSON, 200, None),
        Case("data URI without base64, not an image", json_body({"image":
             "data:image/png,abc"}), JSON, 400, "invalid_image"),
        Case("data URI without comma", json_body({"image": "data:image/png;base64"}), JSON,
             400, "invalid_data_uri"),
        Case("http URL", json_body({"image": "http://169.254.169.254/latest"}), JSON, 400,
             "unsupported_url"),
        Case("file URL while disabled", json_body({"image": "file:///etc/passwd"}), JSON, 403,
             "file_urls_disabled"),
        Case("languages an unknown string (accepted: default language)", json_body({
             "image": b64(png), "languages": "klingon"}), JSON, 200, None),
        Case("languages a string (accepted)", json_body({"image": b64(png),
             "languages": "en"}), JSON, 200, None),
        Case("languages empty (default language)", json_body({"image": b64(png),
             "languages": []}), JSON, 200, None),
        Case("languages a number", json_body({"image": b64(png), "languages": 5}), JSON, 400,
             "invalid_field"),
        Case("languages an object", json_body({"image": b64(png), "languages": {"en": 1}}),
             JSON, 400, "invalid_field"),
        Case("languages holding numbers", json_body({"image": b64(png), "languages": [1, 2]}),
             JSON, 400, "invalid_field"),
        Case("languages unknown (accepted: default language)", json_body({"image": b64(png),
             "languages": ["xx"]}), JSON, 200, None),
        Case("languages 1000 entries (accepted)", json_body({"image": b64(png),
             "languages": [f"l{i}" for i in range(1000)]}), JSON, 200, None),
        Case("languages 1000 long entries (accepted)", json_body({"image": b64(png),
             "languages": ["x" * 200] * 1000}), JSON, 200, None),
        Case("languages holding null", json_body({"image": b64(png), "languages": [None]}),
             JSON, 400, "invalid_field"),
        Case("body over the size limit", json_body({"image": "A" * (max_body_bytes + 10)}),
             JSON, 413, "payload_too_large"),
        Case("no content type", b"hello", {}, 415, "unsupported_media_type"),
        Case("text/plain body", b"hello", {"Content-Type": "text/plain"}, 415,
             "unsupported_media_type"),
        Case("form-encoded body, not JSON", b"image=abc&languages=en",
             {"Content-Type": "application/x-www-form-urlencoded"}, 415,
             "unsupported_media_type"),
        Case("form-encoded body, broken JSON", b'{"image": "abc',
             {"Content-Type": "application/x-www-form-urlencoded"}, 400, "invalid_json"),
        Case("JSON object, form-encoded (accepted: curl -d)", json_body({"image": b64(png)}),
             {"Content-Type": "application/x-www-form-urlencoded"}, 200, None),
        Case("JSON object, text/plain (accepted)", json_body({"image": b64(png)}),
             {"Content-Type": "text/plain"}, 200, None),
        Case("JSON object, no content type (accepted)", json_body({"image": b64(png)}), {},
             200, None),
        Case("JSON object without image, form-encoded", json_body({"languages": ["en"]}),
             {"Content-Type": "application/x-www-form-urlencoded"}, 400, "missing_field"),
        Case("raw PNG, form-encoded (accepted: curl --data-binary)", png,
             {"Content-Type": "application/x-www-form-urlencoded"}, 200, None),
        Case("raw GIF body", gif_image(), {"Content-Type": "image/gif"}, 415,
             "unsupported_media_type"),
        Case("raw random body", rnd, {"Content-Type": "application/octet-stream"}, 400,
             "invalid_image"),
        Case("unknown route", b"", {}, 404, "not_found", method="GET", path="/v1/nothing"),
        Case("wrong method", b"", {}, 405, "method_not_allowed", method="GET"),
        Case("path traversal in static", b"", {}, 404, "not_found", method="GET",
             path="/static/..%2f..%2fweb%2fapp.py"),
    ]
    cases += document_cases()
    body, headers = multipart([("languages", None, None, b"en")])
    cases.append(Case("multipart without the file", body, headers, 400, "missing_field"))
    body, headers = multipart([("picture", "a.png", "image/png", png)])
    cases.append(Case("multipart, file under another name", body, headers, 400,
                      "missing_field"))
    body, headers = multipart([("image", "a.png", "image/png", b"")])
    cases.append(Case("multipart, empty file", body, headers, 400, "invalid_image"))
    body, headers = multipart([("image", "a.txt", "text/plain", TEXT)])
    cases.append(Case("multipart, text file", body, headers, 415, "unsupported_media_type"))
    body, headers = multipart([("image", "a.png", "image/png", rnd)])
    cases.append(Case("multipart, random bytes", body, headers, 400, "invalid_image"))
    cases.append(Case("multipart, no boundary", b"--x\r\n\r\n",
                      {"Content-Type": "multipart/form-data"}, 400, "missing_field"))
    cases.append(Case("multipart, truncated", body[: len(body) // 2], headers, 400,
                      "missing_field"))
    return cases


def document_cases() -> list[Case]:
    """PDFs and multi-page TIFFs, bad and hostile (issue 17), made at run time."""
    from tests.support import pdfgen

    hello = pdfgen.make_pdf([pdfgen.text_page(["HELLO"], 24)])
    two = pdfgen.make_pdf([pdfgen.text_page(["HELLO"], 24), pdfgen.text_page(["WORLD"], 24)])
    blank = pdfgen.PageSpec()
    many = pdfgen.make_pdf([blank] * 201)  # processing.max_pages is 200
    locked = pdfgen.make_pdf([pdfgen.text_page(["HELLO"], 24)], user_password="secret")
    owner_only = pdfgen.make_pdf([pdfgen.text_page(["HELLO"], 24)], user_password="")
    broken = pdfgen.make_pdf([pdfgen.PageSpec(broken=True)])
    tiny = pdfgen.make_pdf([pdfgen.PageSpec(width=0.5, height=0.5)])
    frames = pdfgen.multipage_tiff([
        cv2.imdecode(np.frombuffer(text_image([w], scale=1.0), np.uint8), cv2.IMREAD_COLOR)
        for w in ("HELLO", "WORLD")
    ])
    cut = two[: len(two) // 3]
    pdf_type = {"Content-Type": "application/pdf"}

    def doc(data: bytes, **fields: object) -> bytes:
        return json_body({"image": b64(data), **fields})

    return [
        Case("PDF with a text layer (accepted)", doc(hello), JSON, 200, None),
        Case("raw PDF body (accepted)", hello, pdf_type, 200, None),
        Case("raw PDF body, pages in the query (accepted)", two, pdf_type, 200, None,
             path=EXTRACT + "?pages=2&pdf_text=ocr&dpi=150"),
        Case("PDF, owner password only (accepted: it opens)", doc(owner_only), JSON, 200, None),
        Case("multi-page TIFF (accepted)", doc(frames), JSON, 200, None),
        Case("PDF needing a password", doc(locked), JSON, 422, "pdf_encrypted"),
        Case("raw PDF needing a password", locked, pdf_type, 422, "pdf_encrypted"),
        Case("PDF cut short", doc(cut), JSON, 400, "invalid_pdf"),
        Case("PDF header then random bytes", doc(b"%PDF-1.7\n" + random.Random(3).randbytes(
             2000)), JSON, 400, "invalid_pdf"),
        Case("PDF whose only page is not a page", doc(broken), JSON, 400, "invalid_pdf"),
        Case("PDF page of half a point", doc(tiny), JSON, 400, "image_too_small"),
        Case("PDF of 201 pages", doc(many), JSON, 413, "too_many_pages"),
        Case("PDF of 201 pages, 10 asked for (accepted)", doc(many, pages="1-10"), JSON, 200,
             None),
        Case("pages past the end", doc(two, pages="3"), JSON, 400, "page_out_of_range"),
        Case("pages to page zero", doc(two, pages="2-0"), JSON, 400, "invalid_field"),
        Case("pages zero", doc(two, pages="0"), JSON, 400, "invalid_field"),
        Case("pages garbage", doc(two, pages="one-two"), JSON, 400, "invalid_field"),
        Case("pages an object", doc(two, pages={"from": 1}), JSON, 400, "invalid_field"),
        Case("pages true", doc(two, pages=True), JSON, 400, "invalid_field"),
        Case("dpi 5", doc(two, dpi=5), JSON, 400, "invalid_field"),
        Case("dpi 100000", doc(two, dpi=100000), JSON, 400, "invalid_field"),
        Case("dpi a word", doc(two, dpi="high"), JSON, 400, "invalid_field"),
        Case("dpi NaN", b'{"image": "%s", "dpi": NaN}' % b64(two).encode(), JSON, 400,
             "invalid_field"),
        Case("pdf_text unknown", doc(two, pdf_text="maybe"), JSON, 400, "invalid_field"),
        Case("pdf_text a number", doc(two, pdf_text=1), JSON, 400, "invalid_field"),
        Case("raw PDF, bad pages in the query", two, pdf_type, 400, "invalid_field",
             path=EXTRACT + "?pages=x"),
        Case("PDF declared, PNG sent (accepted: the bytes decide)",
             text_image(["HELLO"], scale=1.0), pdf_type, 200, None),
    ]


# -- fuzzing -----------------------------------------------------------------------------


def mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    """One random mutation of an encoded image, weighted towards its header (where the
    parsers' decisions are made): bit flips, byte overwrites, truncation, duplication,
    insertion of boundary values, chunk-length corruption."""
    buf = bytearray(data)
    kind = rng.randrange(8)
    head = min(len(buf), 256)
    if kind == 0:  # flip a few bits in the header
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(head)
            buf[i] ^= 1 << rng.randrange(8)
    elif kind == 1:  # flip bits anywhere
        for _ in range(rng.randint(1, 32)):
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
    elif kind == 2:  # truncate
        return bytes(buf[: rng.randrange(len(buf))])
    elif kind == 3:  # overwrite a header run with interesting values
        i = rng.randrange(head)
        value = rng.choice([b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff",
                            b"\x80\x00\x00\x00", b"\x00\x00\xc3\x50", b"\xff\xd8\xff"])
        buf[i : i + len(value)] = value
    elif kind == 4:  # duplicate a slice (repeated markers/chunks)
        i = rng.randrange(len(buf))
        j = min(len(buf), i + rng.randint(1, 512))
        buf[i:i] = buf[i:j] * rng.randint(1, 4)
    elif kind == 5:  # insert random bytes
        i = rng.randrange(len(buf))
        buf[i:i] = rng.randbytes(rng.randint(1, 64))
    elif kind == 6:  # zero a run
        i = rng.randrange(len(buf))
        j = min(len(buf), i + rng.randint(1, 256))
        buf[i:j] = bytes(j - i)
    else:  # swap the tail for random bytes
        i = rng.randrange(len(buf))
        buf[i:] = rng.randbytes(len(buf) - i)
    return bytes(buf)


def random_json_value(rng: random.Random, depth: int = 0) -> object:
    kind = rng.randrange(9 if depth < 4 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 2**63, -(2**70), 1.5e308, 3.14, 1e-320])
    if kind == 3:
        return "".join(chr(rng.choice([rng.randrange(32, 127), rng.randrange(0x80, 0x3000),
                                       0, 0x1F600])) for _ in range(rng.randint(0, 40)))
    if kind == 4:
        return rng.choice(["", "en", "zh", "EN", "en,zh", "data:", "data:image/png;base64,",
                           "file:///etc/passwd", "file://../x", "=", "====", "A" * 5])
    if kind == 5:
        return b64(rng.randbytes(rng.randint(0, 300)))
    if kind == 6:
        return [random_json_value(rng, depth + 1) for _ in range(rng.randint(0, 5))]
    if kind == 7:
        keys = ["image", "languages", "id", "x", "", "IMAGE", "language"]
        return {rng.choice(keys): random_json_value(rng, depth + 1)
                for _ in range(rng.randint(0, 4))}
    return {"image": random_json_value(rng, depth + 1),
            "languages": random_json_value(rng, depth + 1)}


def random_json_body(rng: random.Random) -> bytes:
    """A random JSON document (sometimes broken) as a request body."""
    doc = random_json_value(rng)
    text = json.dumps(doc, allow_nan=True).encode()
    r = rng.random()
    if r < 0.1 and text:  # truncate
        return text[: rng.randrange(len(text))]
    if r < 0.15:  # deep nesting
        n = rng.choice([100, 1000, 5000, 20000])
        return b'{"image": ' + b"[" * n + b"]" * n + b"}"
    return text


def random_multipart(rng: random.Random, images: list[bytes]) -> tuple[bytes, dict[str, str]]:
    fields: list[tuple[str, str | None, str | None, bytes]] = []
    for _ in range(rng.randint(0, 4)):
        name = rng.choice(["image", "languages", "file", "", "image[]", "x" * 300])
        filename = rng.choice([None, "a.png", "../../etc/passwd", "", "x.gif", "\u00e9.jpg"])
        ctype = rng.choice([None, "image/png", "image/jpeg", "text/plain", "image/gif",
                            "application/octet-stream", "image/png; charset=x", "garbage"])
        data = rng.choice([
            rng.randbytes(rng.randint(0, 400)), mutate_bytes(rng, rng.choice(images)),
            b"en", b"zh,en", b"klingon", b"",
        ])
        fields.append((name, filename, ctype, data))
    body, headers = multipart(fields, boundary=rng.choice(["b0undary", "x" * 70, "---"]))
    r = rng.random()
    if r < 0.15 and body:
        body = body[: rng.randrange(len(body))]
    elif r < 0.25:
        headers = {"Content-Type": rng.choice(["multipart/form-data",
                                               "multipart/form-data; boundary=",
                                               "multipart/mixed; boundary=b0undary"])}
    return body, headers


def seed_images() -> list[bytes]:
    """Small real encodings of a text image in every accepted format (the fuzz seeds)."""
    img = cv2.imdecode(np.frombuffer(text_image(["HELLO", "FUZZ"], scale=1.0), np.uint8),
                       cv2.IMREAD_COLOR)
    out = [encode(img, ext) for ext in (".png", ".jpg", ".bmp", ".webp", ".tiff")]
    grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    out.append(encode(grey, ".png"))
    buf = io.BytesIO()
    Image.fromarray(img[..., ::-1]).convert("P").save(buf, "PNG")
    out.append(buf.getvalue())
    buf = io.BytesIO()
    Image.fromarray(img[..., ::-1]).save(buf, "JPEG", progressive=True)
    out.append(buf.getvalue())
    return out + seed_documents(img)


def seed_documents(img: np.ndarray) -> list[bytes]:
    """Small real documents (the fuzz seeds of issue 17): a PDF with a text layer, one
    scanned-style page, both kinds in one file, an owner-password PDF, a 2-page TIFF."""
    from tests.support import pdfgen

    text = pdfgen.text_page(["HELLO", "FUZZ"], 18, page=(200.0, 120.0))
    scan = pdfgen.scanned_page(img, 150)
    return [
        pdfgen.make_pdf([text]),
        pdfgen.make_pdf([scan]),
        pdfgen.make_pdf([text, pdfgen.scanned_page(img, 150, jpeg=False)]),
        pdfgen.make_pdf([text], user_password=""),
        pdfgen.multipage_tiff([img, img]),
    ]


def fuzz_request(rng: random.Random, images: list[bytes]) -> tuple[str, bytes, dict[str, str]]:
    """(kind, body, headers) of one random request to POST /v1/ocr/extract."""
    r = rng.random()
    if r < 0.45:
        data = mutate_bytes(rng, rng.choice(images))
        form = rng.random()
        if form < 0.6:
            return "mutated-image-json", json_body({"image": b64(data)}), JSON
        if form < 0.8:
            mt = rng.choice(["image/png", "image/jpeg", "image/webp", "image/tiff"])
            return "mutated-image-datauri", json_body({"image": data_uri(data, mt)}), JSON
        body, headers = multipart([("image", "x.img", "application/octet-stream", data)])
        return "mutated-image-multipart", body, headers
    if r < 0.8:
        return "random-json", random_json_body(rng), JSON
    if r < 0.95:
        body, headers = random_multipart(rng, images)
        return "random-multipart", body, headers
    ctype = rng.choice(["", "application/x-www-form-urlencoded", "image/png", "text/json",
                        "application/json; charset=utf-16", "application/merge-patch+json"])
    return "random-body", rng.randbytes(rng.randint(0, 2000)), (
        {"Content-Type": ctype} if ctype else {})


# -- process probes ----------------------------------------------------------------------


def proc_status(pid: int | str = "self") -> dict[str, int]:
    """VmRSS and VmHWM (kB) and Threads of a process, from /proc/<pid>/status."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "Threads"):
            out[key] = int(value.split()[0])
    return out


def children_of(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (Linux /proc)."""
    kids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            kids.append(int(entry.name))
    return kids

