"""A Schemathesis check for ``tests/web/test_openapi.py`` (loaded with ``SCHEMATHESIS_HOOKS``).

JSON Schema can say what shape a request has but not which bytes are an image, so
``tests/web/schemathesis.toml`` lets a schema-valid ``POST /v1/ocr/extract`` be refused
for its image (400, 413, 415). This check keeps that allowance narrow: such a refusal
must name the image. A schema-valid request refused for its *shape* (bad JSON, a missing
or invalid field) means the document allows what the server does not: that fails.
"""

from __future__ import annotations

import schemathesis

#: Codes that judge the request's shape, which the document describes fully.
SHAPE_CODES = frozenset({"invalid_json", "missing_field", "invalid_field"})


@schemathesis.check
def positive_data_refused_only_for_its_image(ctx, response, case):
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code < 400:
        return None
    try:
        code = response.json().get("code")
    except Exception:
        return None  # not an error body: the other checks judge it
    if code in SHAPE_CODES:
        raise AssertionError(
            f"a request the document calls valid was refused for its shape: "
            f"{response.status_code} {code}"
        )
    return None
