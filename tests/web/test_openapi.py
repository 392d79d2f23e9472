"""``GET /openapi.json`` (web/openapi/) says what the server does, and cannot drift from it.

The error codes of the document come from the server's error tables (web/errors.py); the
tests here check the other direction, against the source: every code a raise site names
is in the tables and every code in the tables has a raise site, every route is described
and every description is a route, and the README's table of codes is the same. Then
Schemathesis, run against a real ``hailo-ocr serve`` with all its checks, holds the
server's answers to the document.
"""

from __future__ import annotations

import ast
import os
import re
import sys
from pathlib import Path

import pytest
import trio
from quart_trio import QuartTrio

from actors.errors import NOT_READY_REASONS
from tests.support.paths import REPO
from tests.support.server import fast, start_serve
from web.app import create_app
from web.errors import API_ERRORS, answered_error_classes, catalogue, codes_by_status
from web.openapi import document

HERE = Path(__file__).resolve().parent
SOURCES = [p for package in ("ocr", "npu", "actors", "web") for p in (REPO / package).rglob("*.py")]


def _calls() -> list[ast.Call]:
    calls = []
    for path in SOURCES:
        tree = ast.parse(path.read_text(), str(path))
        calls += [node for node in ast.walk(tree) if isinstance(node, ast.Call)]
    return calls


def _name(call: ast.Call) -> str | None:
    func = call.func
    return func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)


def _doc(config) -> tuple[dict, QuartTrio]:
    app = create_app(fast(config))
    return document(app), app


def _documented_codes(doc: dict) -> set[tuple[int, str]]:
    """(status, code) of every error response of every operation."""
    pairs = set()
    for operations in doc["paths"].values():
        for operation in operations.values():
            for status, response in operation["responses"].items():
                schema = response.get("content", {}).get("application/json", {}).get("schema")
                for part in (schema or {}).get("allOf", []):
                    for code in part.get("properties", {}).get("code", {}).get("enum", []):
                        pairs.add((int(status), code))
    return pairs


def test_every_code_a_raise_site_names_is_listed_and_each_listed_one_is_raised():
    named = {}
    for call in _calls():
        if _name(call) == "ApiError":
            first = call.args[0] if call.args else None
            assert isinstance(first, ast.Constant) and isinstance(first.value, str), \
                ast.unparse(call)  # a literal code
            named.setdefault(first.value, ast.unparse(call))
    assert set(named) == set(API_ERRORS), (set(named) ^ set(API_ERRORS))
    # Every typed error class the tables answer with is constructed somewhere.
    constructed = {_name(call) for call in _calls()}
    for cls in answered_error_classes():
        assert cls.__name__ in constructed, cls


def test_the_document_lists_exactly_the_codes_the_server_sends(config):
    doc, _ = _doc(config)
    documented = _documented_codes(doc)
    # The websocket has no HTTP responses past its 426: its codes are its error events';
    # a method a path does not take is no operation (the description names its 405).
    elsewhere = {(400, "invalid_message"), (400, "duplicate_id"), (405, "method_not_allowed")}
    assert documented | elsewhere == set(catalogue())
    assert not documented & elsewhere
    assert "405 method_not_allowed" in doc["info"]["description"]
    schemas = doc["components"]["schemas"]
    assert set(schemas["ErrorCode"]["enum"]) == {code for _, code in catalogue()}
    event = next(v for v in schemas["StreamEvent"]["oneOf"]
                 if v.get("properties", {}).get("type") == {"const": "error"})
    assert event["properties"]["code"] == {"$ref": "#/components/schemas/ErrorCode"}
    assert set(event["properties"]["status"]["enum"]) == {s for s, _ in catalogue()}
    ready = schemas["Ready"]["properties"]["reason"]["enum"]
    assert set(ready) == set(NOT_READY_REASONS)
    # Today's codes, spelled out once so a change to the tables is a visible change here.
    assert {"invalid_message", "duplicate_id", "model_load_failed", "device_busy",
            "upgrade_required"} <= {code for _, code in catalogue()}
    assert not {"restarting", "backend_unavailable", "device_not_found", "bad_request"} & {
        code for _, code in catalogue()}
    assert "device_fault" in ready and "restarting" not in ready


def test_every_route_is_described_and_every_description_is_a_route(config):
    doc, app = _doc(config)
    routes = {
        (re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}
    }
    described = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert described == routes


def test_the_readme_table_of_codes_is_the_servers():
    readme = (REPO / "README.md").read_text()
    table = {}
    for status, codes in re.findall(r"^\| (\d{3}) \| ([^|]+) \|", readme, re.M):
        table[int(status)] = tuple(sorted(re.findall(r"`([a-z0-9_]+)`", codes)))
    assert table == codes_by_status()


def test_a_route_cannot_name_a_code_its_status_never_carries():
    from web.openapi.errors import error_response

    with pytest.raises(ValueError, match="never answers 404 with restarting"):
        error_response(404, "x", codes=["restarting"])
    with pytest.raises(ValueError, match="never answers 400 with not_ready"):
        error_response(400, "x", codes=["not_ready"])


# -- Schemathesis against the real server -------------------------------------------------------

#: Examples per operation and the seed: enough for every response the document lists to
#: come up, in about ten seconds on a busy CI core; the same cases every run.
EXAMPLES = 40
SEED = 21


@pytest.mark.slow
async def test_schemathesis_with_every_check_passes(tmp_path):
    proc, url, _ = await start_serve(
        tmp_path, {"ocr": {"det_limit_type": "max", "det_limit_side_len": 960}}
    )
    try:
        command = [
            sys.executable, "-m", "schemathesis.cli",
            "--config-file", str(HERE / "schemathesis.toml"),
            "run", f"{url}/openapi.json", "--checks", "all",
            "--max-examples", str(EXAMPLES), "--seed", str(SEED), "--workers", "1",
            "--request-timeout", "30", "--no-color",
        ]
        hooks_env = {**os.environ, "SCHEMATHESIS_HOOKS": "schemathesis_hooks",
                     "PYTHONPATH": str(HERE)}
        with trio.fail_after(120):
            run = await trio.run_process(command, capture_stdout=True, capture_stderr=True,
                                         check=False, env=hooks_env, cwd=tmp_path)
        out = run.stdout.decode(errors="replace") + run.stderr.decode(errors="replace")
        assert run.returncode == 0, out
        assert re.search(r"\d+ generated, \d+ passed", out), out
        assert re.search(r"Operations: +(\d+) selected / \1 total", out), out
    finally:
        proc.terminate()
        with trio.move_on_after(30):
            await proc.wait()
        if proc.returncode is None:
            proc.kill()
