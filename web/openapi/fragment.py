"""A part of the OpenAPI document that one route module adds with its routes."""

from __future__ import annotations

from typing import Any, Final

import attrs

JSON: Final = "application/json"


@attrs.frozen
class Fragment:
    """Path items (``{"/path": {"get": operation}}``) and the component schemas only
    they use; the schemas shared by several route groups are in the base document."""

    paths: dict[str, Any]
    schemas: dict[str, Any] = attrs.field(factory=dict)


def ref(schema: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{schema}"}


def ok(schema: str, description: str, media_type: str = JSON) -> dict[str, Any]:
    """A success response whose body is the component ``schema``."""
    return {"description": description, "content": {media_type: {"schema": ref(schema)}}}
