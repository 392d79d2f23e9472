"""Drop-in replacement for the original hailo-ocr (issue 12, points 1-7 and 9): its
clients' requests, as its own documentation and tests send them, get the answers they
expect, over REST and the websocket alike.

The original is ``gregm123456/raspberry_pi_hailo_ai_services``, ``system_services/
hailo-ocr``: it parsed every body with ``request.json()``, decoded ``data:`` URIs by
splitting at the comma, used the first language it had a model for (else English),
and answered ``text`` as the regions' texts joined by spaces with integer boxes.
Configuration (points 8-10) is tested in ``test_legacy_config.py``.
"""

from __future__ import annotations

import base64
import io
import json
import urllib.request
from contextlib import asynccontextmanager

import cv2
import httpx
import numpy as np
import pytest
import trio
from PIL import Image, ImageDraw
from trio_websocket import open_websocket_url
from werkzeug.datastructures import FileStorage

from npu.errors import DeviceFault
from tests.support.images import b64, text_image
from tests.support.server import fails_once, fast, running_server, wait_until, words_of
from web.app import create_app

EXTRACT = "/v1/ocr/extract"
LINES = ["HELLO WORLD", "ORANGE GARDEN"]


@asynccontextmanager
async def client_for(config, backends=None):
    app = create_app(config, backends)
    async with app.test_app() as test_app:
        yield test_app.test_client()


@pytest.fixture(scope="module")
def png() -> bytes:
    return text_image(LINES)


@pytest.fixture(scope="module")
def jpeg() -> bytes:
    return text_image(LINES, fmt=".jpg")


async def _ok(response) -> dict:
    body = await response.get_json()
    assert response.status_code == 200, body
    assert body["success"] is True
    return body


# -- 1. requests: a JSON object is JSON, whatever the Content-Type says --------------------


async def test_a_json_body_is_read_whatever_the_content_type(config, png):
    body = json.dumps({"image": b64(png), "languages": ["en"]}).encode()
    async with client_for(fast(config)) as client:
        for content_type in ("application/json", "application/x-www-form-urlencoded",
                             "text/plain", "text/plain; charset=utf-8", None,
                             "application/octet-stream"):
            headers = {"Content-Type": content_type} if content_type else {}
            r = await client.post(EXTRACT, data=b"\n  " + body, headers=headers)
            doc = await _ok(r)
            assert doc["lines"] == LINES, content_type
        # A byte-order mark, as some Windows tools write it.
        r = await client.post(EXTRACT, data=b"\xef\xbb\xbf " + body,
                              headers={"Content-Type": "text/plain"})
        assert (await _ok(r))["lines"] == LINES


async def test_multipart_and_raw_image_bodies_keep_working(config, png, jpeg):
    async with client_for(fast(config)) as client:
        r = await client.post(EXTRACT, files={
            "image": FileStorage(io.BytesIO(png), "page.png", content_type="image/png")},
            form={"languages": "en"})
        assert (await _ok(r))["lines"] == LINES
        # Raw bodies: declared, undeclared, and as `curl --data-binary @page.jpg` sends it.
        for data, content_type in ((png, "image/png"), (jpeg, "image/jpeg"), (png, None),
                                   (jpeg, "application/x-www-form-urlencoded"),
                                   (png, "application/octet-stream")):
            headers = {"Content-Type": content_type} if content_type else {}
            r = await client.post(EXTRACT + "?languages=en", data=data, headers=headers)
            assert (await _ok(r))["lines"] == LINES, content_type
        r = await client.post(EXTRACT, data=b"hello", headers={"Content-Type": "text/plain"})
        assert r.status_code == 415


async def test_the_original_documented_curl_requests(config, jpeg, tmp_path):
    """The original README's request, with and without its Content-Type header (curl -d
    alone sends application/x-www-form-urlencoded), through real curl and Hypercorn."""
    payload = tmp_path / "payload.json"
    payload.write_text(json.dumps({
        "image": "data:image/jpeg;base64," + b64(jpeg), "languages": ["en"]}))
    async with running_server(fast(config)) as server:
        for extra in (["-H", "Content-Type: application/json"], []):
            out = await trio.run_process(
                ["curl", "-sS", "-X", "POST", f"{server.url}{EXTRACT}", *extra,
                 "-d", f"@{payload}"], capture_stdout=True)
            doc = json.loads(out.stdout)
            assert doc["success"] is True and doc["lines"] == LINES, (extra, doc)
        out = await trio.run_process(["curl", "-sS", f"{server.url}/health"],
                                     capture_stdout=True)
        assert json.loads(out.stdout)["status"] == "ok"


# -- 2. lenient data URIs -------------------------------------------------------------------


def _mime_lines(text: str, width: int = 76, sep: str = "\r\n") -> str:
    return sep.join(text[i:i + width] for i in range(0, len(text), width))


async def test_data_uris_are_read_leniently(config, png, jpeg):
    j64 = b64(jpeg)
    uris = {
        "octet-stream": "data:application/octet-stream;base64," + j64,
        "wrong image type": "data:image/png;base64," + j64,
        "no media type": "data:;base64," + j64,
        "text type, image bytes": "data:text/plain;base64," + b64(png),
        "no ;base64": "data:image/jpeg," + j64,
        "no ;base64 nor type": "data:," + j64,
        "MIME line breaks": "data:image/jpeg;base64," + _mime_lines(j64),
        "newlines and spaces": "data:image/jpeg;base64,\n" + _mime_lines(j64, 60, "\n  "),
        "percent-encoded": "data:image/jpeg;base64," + j64.replace("+", "%2B").replace(
            "/", "%2F").replace("=", "%3D"),
        "upper case": "DATA:IMAGE/JPEG;BASE64," + j64,
        "URL-safe alphabet": "data:image/jpeg;base64," + base64.urlsafe_b64encode(
            jpeg).decode(),
    }
    async with client_for(fast(config)) as client:
        for name, uri in uris.items():
            r = await client.post(EXTRACT, json={"image": uri})
            assert (await _ok(r))["lines"] == LINES, name
        # What is not an image is still refused, whatever it declares.
        r = await client.post(EXTRACT, json={"image": "data:image/jpeg;base64," + b64(b"hi")})
        assert r.status_code == 400 and (await r.get_json())["code"] == "invalid_image"
        r = await client.post(EXTRACT, json={"image": "data:image/jpeg;base64"})
        assert (await r.get_json())["code"] == "invalid_data_uri"


# -- 3. languages: a list or a string, aliases, fallback with a warning ---------------------

ALIASES = {"zh": ["ch_sim", "ch", "chinese", "zh-CN", "zh_CN", "zh-Hans", "ch_tra", "zh-TW",
                  "ZH", "Chinese"],
           "en": ["en-US", "en_GB", "english", "EN", "English"]}


async def test_languages_as_a_list_or_a_string_with_aliases(config, png):
    async with client_for(fast(config)) as client:
        for language, aliases in ALIASES.items():
            for i, alias in enumerate(aliases):
                value = alias if i % 2 else [alias]  # a string or a list, in turn
                r = await client.post(EXTRACT, json={"image": b64(png), "languages": value})
                doc = await _ok(r)
                assert doc["language"] == language, value
                assert doc["warnings"] == [], value
        # The first supported entry is used.
        r = await client.post(EXTRACT, json={"image": b64(png), "languages": ["zh-CN", "en"]})
        assert (await _ok(r))["language"] == "zh"


async def test_an_unknown_language_is_read_in_the_default_with_a_warning(config, png):
    async with client_for(fast(config)) as client:
        for value in (["fr"], "fr", "klingon", ["x" * 500]):
            r = await client.post(EXTRACT, json={"image": b64(png), "languages": value})
            doc = await _ok(r)
            assert doc["language"] == "en" and doc["lines"] == LINES
            (warning,) = doc["warnings"]
            assert warning["code"] == "language_fallback"
            assert "'en'" in warning["message"] and "supported: en, zh" in warning["message"]
            assert doc["languages_detected"][0] == "en"
            assert repr(value if isinstance(value, str) else value[0])[:20] in (
                warning["message"])
        # An unsupported entry before a supported one: that one is used, and said so.
        r = await client.post(EXTRACT, json={"image": b64(png), "languages": ["fr", "zh"]})
        doc = await _ok(r)
        assert doc["language"] == "zh"
        assert [w["code"] for w in doc["warnings"]] == ["language_fallback"]
        assert "'fr'" in doc["warnings"][0]["message"]


async def test_unknown_language_reject_keeps_the_422(config, png):
    cfg = fast(config, ocr={"unknown_language": "reject"})
    async with client_for(cfg) as client:
        for value in (["fr"], ["en", "fr"]):
            r = await client.post(EXTRACT, json={"image": b64(png), "languages": value})
            doc = await r.get_json()
            assert r.status_code == 422 and doc["code"] == "unsupported_language", doc
            assert "'fr'" in doc["error"]
        r = await client.post(EXTRACT, json={"image": b64(png), "languages": ["zh_CN"]})
        assert (await _ok(r))["language"] == "zh"  # an alias is not unknown


async def _stream(url: str, messages: list[dict]) -> dict[str, list[dict]]:
    events: dict[str, list[dict]] = {m["id"]: [] for m in messages}
    async with open_websocket_url(url + "/v1/ocr/stream") as ws:
        for m in messages:
            await ws.send_message(json.dumps(m))
        done = 0
        with trio.fail_after(60):
            while done < len(messages):
                event = json.loads(await ws.get_message())
                events[event["id"]].append(event)
                done += event["type"] in ("done", "error")
    return events


async def test_the_websocket_reads_languages_and_answers_as_rest_does(config, png):
    image = b64(png)
    asks = {"alias": "zh-CN", "string": "en", "unknown": ["fr"], "fallback-then-zh": ["fr", "zh"]}
    # Hypercorn gives a connection that was upgraded to a websocket the whole grace at
    # shutdown, even once closed: keep it short.
    quick_stop = {"shutdown_grace_s": 1.0}
    async with running_server(fast(config, server=quick_stop)) as server:
        events = await _stream(server.ws_url, [
            {"id": name, "image": image, "languages": langs} for name, langs in asks.items()])
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            for name, langs in asks.items():
                done = events[name][-1]
                assert done["type"] == "done", done
                rest = (await http.post(EXTRACT, json={"image": image, "languages": langs})).json()
                for key in ("text", "lines", "regions", "language", "languages_detected",
                            "warnings", "statistics", "image_size", "hailo_info"):
                    assert done[key] == rest[key], (name, key)
                # The streamed lines carry the same integer boxes.
                for e in events[name]:
                    if e["type"] == "line":
                        assert all(type(v) is int for p in e["bbox"] for v in p)
    assert events["alias"][-1]["language"] == "zh"
    assert events["unknown"][-1]["warnings"][0]["code"] == "language_fallback"
    cfg = fast(config, ocr={"unknown_language": "reject"}, server=quick_stop)
    async with running_server(cfg) as server:
        events = await _stream(server.ws_url, [{"id": "x", "image": image, "languages": ["fr"]}])
    error = events["x"][-1]
    assert (error["type"], error["code"], error["status"]) == ("error", "unsupported_language",
                                                               422)


# -- 4-6. the response as the original shaped it ---------------------------------------------


async def test_text_lines_boxes_and_languages_detected(config, png):
    blank = cv2.imencode(".png", np.full((120, 200, 3), 255, np.uint8))[1].tobytes()
    async with client_for(fast(config)) as client:
        doc = await _ok(await client.post(EXTRACT, json={"image": b64(png)}))
        # text: every region's text in reading order, joined by single spaces.
        assert doc["text"] == " ".join(r["text"] for r in doc["regions"])
        assert doc["text"] == "HELLO WORLD ORANGE GARDEN"
        assert doc["lines"] == LINES
        for region in doc["regions"]:
            bbox = region["bbox"]
            assert len(bbox) == 4 and all(type(v) is int for p in bbox for v in p), bbox
            (x0, y0), (x1, y1), (x2, y2), (x3, y3) = bbox
            assert x1 > x0 and y2 > y1 and x2 > x3 and y3 > y0  # clockwise from top-left
        assert doc["languages_detected"] == ["en"] and doc["language"] == "en"
        # Read as Chinese: the language used comes first, the script found follows.
        doc = await _ok(await client.post(EXTRACT, json={"image": b64(png),
                                                        "languages": ["zh"]}))
        assert doc["languages_detected"][0] == "zh" and "en" in doc["languages_detected"]
        # No text: still the language used, never an empty list.
        doc = await _ok(await client.post(EXTRACT, json={"image": b64(blank)}))
        assert (doc["text"], doc["lines"], doc["regions"]) == ("", [], [])
        assert doc["languages_detected"] == ["en"]


# -- 7. health, cache statistics, readiness without a token ---------------------------------


async def test_health_cache_stats_and_ready_as_the_original_clients_read_them(config, png):
    cfg = fast(config, server={"auth_token": "s3cret-token"}, cache={"enabled": True},
               backend={"restart_backoff_s": 0.05})
    make_backend = fails_once(cfg, DeviceFault("device lost"))
    auth = {"Authorization": "Bearer s3cret-token"}
    async with client_for(cfg, {"cpu": make_backend}) as client:
        health = await (await client.get("/health")).get_json()
        assert health["status"] == "ok" and health["model_loads"] == 1
        r = await client.get("/health/ready")  # probes carry no token
        assert r.status_code == 200 and await r.get_json() == {"ready": True}
        assert (await client.get("/models")).status_code == 401

        stats = await (await client.get("/cache/stats", headers=auth)).get_json()
        assert stats["enabled"] is True and stats["items_cached"] == 0
        # The first request meets a device fault; the backend is loaded again.
        r = await client.post(EXTRACT, json={"image": b64(png)}, headers=auth)
        assert r.status_code == 503

        async def ready() -> bool:
            return (await client.get("/health/ready")).status_code == 200

        await wait_until(ready)
        health = await (await client.get("/health")).get_json()
        assert health["status"] == "ok" and health["model_loads"] == 2
        await _ok(await client.post(EXTRACT, json={"image": b64(png)}, headers=auth))
        stats = await (await client.get("/cache/stats", headers=auth)).get_json()
        assert stats["items_cached"] == stats["entries"] == 1


def _urllib(url: str, payload: dict | None = None) -> tuple[int, dict]:
    """A request the way the original's scripts made them: urllib, no token."""
    data = json.dumps(payload).encode() if payload is not None else None
    headers = {"Content-Type": "application/json"} if payload is not None else {}
    req = urllib.request.Request(url, data=data, headers=headers,
                                 method="POST" if payload is not None else "GET")
    with urllib.request.urlopen(req, timeout=60) as response:
        return response.status, json.loads(response.read())


async def test_the_original_clients_requests_over_a_real_socket(config):
    """A JPEG drawn with Pillow's default font (what the original's tests and verify.sh
    send), as a data URI, and the fields they read, with nothing but the standard library."""
    img = Image.new("RGB", (200, 100), "white")
    ImageDraw.Draw(img).text((40, 40), "HAILO OCR", fill="black")
    out = io.BytesIO()
    img.save(out, format="JPEG")
    uri = "data:image/jpeg;base64," + b64(out.getvalue())
    async with running_server(fast(config)) as server:
        def get(path: str):
            return trio.to_thread.run_sync(_urllib, server.url + path)

        status, health = await get("/health")
        assert status == 200 and health["status"] == "ok"
        assert {"memory_usage_mb", "uptime_seconds", "model_loads"} <= set(health)
        status, ready = await get("/health/ready")
        assert status == 200 and ready["ready"] is True
        status, models = await get("/models")
        assert status == 200 and models["object"] == "list" and models["data"]
        status, doc = await trio.to_thread.run_sync(
            _urllib, server.url + EXTRACT, {"image": uri, "languages": ["en"]})
        assert status == 200 and doc["success"] is True
        assert {"text", "regions", "performance"} <= set(doc)
        assert isinstance(doc["text"], str)
        status, stats = await get("/cache/stats")
        assert status == 200 and {"enabled", "items_cached"} <= set(stats)


# -- 9. processing.max_image_size is the largest dimension ----------------------------------


async def test_an_image_over_max_image_size_is_read_scaled_down(config):
    big = text_image(["HELLO WORLD"], scale=3.0)  # about 850 x 170 pixels
    width = cv2.imdecode(np.frombuffer(big, np.uint8), cv2.IMREAD_COLOR).shape[1]
    assert width > 800
    async with client_for(fast(config)) as client:
        full = await _ok(await client.post(EXTRACT, json={"image": b64(big)}))
    async with client_for(fast(config, processing={"max_image_size": 400})) as client:
        small = await _ok(await client.post(EXTRACT, json={"image": b64(big)}))
    assert words_of(small["text"]) == ["HELLO", "WORLD"]
    # Boxes and size are in the image's own pixels, as when it is read whole.
    assert small["image_size"] == full["image_size"]
    assert len(small["regions"]) == len(full["regions"])
    for a, b in zip(small["regions"], full["regions"], strict=True):
        assert np.abs(np.array(a["bbox"]) - np.array(b["bbox"])).max() <= 0.03 * width, (a, b)
        assert max(x for x, _ in a["bbox"]) > 400  # not the scaled-down image's pixels


async def test_the_byte_limit_has_its_own_name(config, png):
    async with client_for(fast(config, processing={"max_image_bytes": 1000})) as client:
        r = await client.post(EXTRACT, json={"image": b64(png)})
        doc = await r.get_json()
    assert r.status_code == 413 and doc["code"] == "image_too_large"
    assert "processing.max_image_bytes" in doc["error"]


# -- the deliberate difference: file:// stays confined, and says which key opens it -------


async def test_file_urls_403_name_the_key_to_set(config, png, tmp_path):
    (tmp_path / "page.png").write_bytes(png)
    async with client_for(fast(config)) as client:
        r = await client.post(EXTRACT, json={"image": f"file://{tmp_path}/page.png"})
        doc = await r.get_json()
        assert r.status_code == 403 and "server.file_root" in doc["error"]
    root = tmp_path / "root"
    root.mkdir()
    async with client_for(fast(config, server={"file_root": str(root)})) as client:
        r = await client.post(EXTRACT, json={"image": f"file://{tmp_path}/page.png"})
        doc = await r.get_json()
        assert r.status_code == 403 and doc["code"] == "forbidden_path"
        assert "server.file_root" in doc["error"] and str(tmp_path) not in doc["error"]


# -- the documents: /openapi.json describes what is answered ---------------------------------


async def test_openapi_describes_the_compatible_shapes(config, png):
    async with client_for(fast(config)) as client:
        doc = await (await client.get("/openapi.json")).get_json()
        body = await _ok(await client.post(EXTRACT, json={"image": b64(png),
                                                         "languages": ["fr"]}))
    schemas = doc["components"]["schemas"]
    result = schemas["ExtractResult"]
    assert set(result["required"]) <= set(body)
    assert set(body) - {"success"} <= set(result["properties"])
    assert result["properties"]["lines"]["items"] == {"type": "string"}
    warning = result["properties"]["warnings"]["items"]
    assert set(warning["required"]) == set(body["warnings"][0]) == {"code", "message"}
    assert schemas["Region"]["properties"]["bbox"]["items"]["items"] == {"type": "integer"}
    assert "model_loads" in schemas["Health"]["properties"]
    extract = doc["paths"]["/v1/ocr/extract"]["post"]
    assert "processing.max_image_bytes" in extract["responses"]["413"]["description"]
    assert "ocr.unknown_language" in extract["responses"]["422"]["description"]
    assert doc["paths"]["/health/ready"]["get"]["security"] == []
    stats = doc["paths"]["/cache/stats"]["get"]["responses"]["200"]["content"]
    assert "items_cached" in stats["application/json"]["schema"]["required"]
