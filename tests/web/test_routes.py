"""The REST API through Quart's in-process test client, with the real actor tree and the
ONNX backend started by the app's lifespan (``app.test_app()``)."""

from __future__ import annotations

import io
import json
import os
import re
from contextlib import asynccontextmanager

import pytest
import trio
from werkzeug.datastructures import FileStorage

from npu.backend import recognition_id
from npu.errors import DeviceFault
from tests.support.images import b64, data_uri, gif_image, png_header_only, text_image
from tests.support.server import ControlledBackend, fails_once, fast, wait_until, words_of
from web.app import create_app, get_state

LEAKS = ("Traceback", "/work/", "/root/", "/tmp/", "site-packages", 'File "')


@asynccontextmanager
async def client_for(config, backends=None):
    app = create_app(config, backends)
    async with app.test_app() as test_app:
        yield test_app.test_client(), app


async def post_json(client, doc, **kw):
    return await client.post("/v1/ocr/extract", json=doc, **kw)


async def assert_error(response, status: int, code: str) -> dict:
    body = await response.get_json()
    assert response.status_code == status, (status, code, body)
    assert body["success"] is False
    assert body["code"] == code, body
    assert isinstance(body["error"], str) and body["error"]
    assert set(body) == {"success", "error", "code"}
    raw = json.dumps(body)
    for leak in LEAKS:
        assert leak not in raw, (leak, raw)
    return body


async def test_health_ready_and_models(config):
    async with client_for(fast(config)) as (client, app):
        r = await client.get("/health")
        assert r.status_code == 200
        health = await r.get_json()
        assert health["status"] == "ok" and health["models_loaded"] is True
        assert health["languages_supported"] == ["en", "zh"]
        assert isinstance(health["memory_usage_mb"], int) and health["memory_usage_mb"] > 10
        assert isinstance(health["uptime_seconds"], int) and health["uptime_seconds"] >= 0
        assert health["hailo_device"] is None and health["backend"] == "onnx"
        server = config.server  # what clients size their work to (hailo-ocr read)
        assert health["limits"] == {"max_in_flight": server.max_in_flight,
                                    "ws_max_in_flight": server.ws_max_in_flight,
                                    "max_body_bytes": server.max_body_bytes}

        r = await client.get("/health/ready")
        assert r.status_code == 200 and await r.get_json() == {"ready": True}

        r = await client.get("/models")
        models = await r.get_json()
        assert models["object"] == "list"
        by_id = {m["id"]: m for m in models["data"]}
        info = get_state(app).service.info
        assert by_id["detection"]["type"] == "detection"
        assert by_id["detection"]["name"] == info.model("detection").name
        assert by_id["detection"]["name"].endswith(".onnx")
        for lang in ("en", "zh"):
            m = by_id[recognition_id(lang)]
            assert m["type"] == "recognition" and m["language"] == lang
            assert m["status"] == "loaded" and m["name"] == info.model(recognition_id(lang)).name


async def test_extract_response_shape_matches_the_spec(config):
    lines = ["HELLO WORLD", "TOTAL AMOUNT"]
    async with client_for(fast(config)) as (client, app):
        r = await post_json(client, {"image": data_uri(text_image(lines)), "languages": ["en"]})
        assert r.status_code == 200
        body = await r.get_json()
    assert body["success"] is True
    assert body["text"] == "HELLO WORLD TOTAL AMOUNT"  # regions joined by spaces
    assert body["lines"] == lines
    assert body["warnings"] == []
    assert len(body["regions"]) == 2
    for region in body["regions"]:
        assert set(region) >= {"text", "confidence", "bbox", "type"}
        assert region["type"] == "text"
        assert 0.5 <= region["confidence"] <= 1.0
        assert len(region["bbox"]) == 4
        assert all(isinstance(p, list) and len(p) == 2 for p in region["bbox"])
        assert all(type(v) is int for p in region["bbox"] for v in p), region["bbox"]
        (x0, y0), (x1, y1), (x2, y2), (x3, y3) = region["bbox"]
        assert x1 > x0 and y2 > y1 and x2 > x3 and y3 > y0  # clockwise from top-left
    # Reading order: the first line is above the second.
    assert body["regions"][0]["bbox"][0][1] < body["regions"][1]["bbox"][0][1]
    assert body["languages_detected"] == ["en"]
    assert body["language"] == "en"
    stats = body["statistics"]
    assert stats["total_regions"] == 2
    mean = sum(r["confidence"] for r in body["regions"]) / 2
    assert stats["average_confidence"] == pytest.approx(mean, abs=1e-4)
    perf = body["performance"]
    for key in ("detection_time_ms", "recognition_time_ms", "total_time_ms"):
        assert isinstance(perf[key], int) and perf[key] > 0, perf
    assert perf["total_time_ms"] >= perf["detection_time_ms"] + perf["recognition_time_ms"] - 1
    hi = body["hailo_info"]
    assert hi["device"] is None
    assert hi["detection_model"] == "PP-OCRv6_det_small.onnx"
    assert hi["recognition_model"].endswith(".onnx")


async def test_every_input_form_reads_the_same_text(config, tmp_path):
    png = text_image(["GARDEN WINDOW"])
    jpg = text_image(["GARDEN WINDOW"], fmt=".jpg")
    (tmp_path / "page.png").write_bytes(png)
    cfg = fast(config, server={"file_root": str(tmp_path)})
    async with client_for(cfg) as (client, _):
        answers = {
            "data uri png": await post_json(client, {"image": data_uri(png)}),
            "data uri jpeg": await post_json(client, {"image": data_uri(jpg, "image/jpeg")}),
            "plain base64": await post_json(client, {"image": b64(png), "languages": "en"}),
            "base64 with newlines": await post_json(
                client,
                {"image": "\n".join(b64(png)[i : i + 76] for i in range(0, len(b64(png)), 76))},
            ),
            "file url": await post_json(client, {"image": (tmp_path / "page.png").as_uri()}),
            "multipart": await client.post(
                "/v1/ocr/extract",
                files={"image": FileStorage(io.BytesIO(png), "page.png", content_type="image/png")},
                form={"languages": "en"},
            ),
            "multipart octet-stream": await client.post(
                "/v1/ocr/extract",
                files={
                    "image": FileStorage(
                        io.BytesIO(jpg), "x", content_type="application/octet-stream"
                    )
                },
            ),
            "raw body": await client.post(
                "/v1/ocr/extract?languages=en", data=png, headers={"Content-Type": "image/png"}
            ),
        }
        for name, r in answers.items():
            body = await r.get_json()
            assert r.status_code == 200, (name, body)
            assert words_of(body["text"]) == ["GARDEN", "WINDOW"], (name, body["text"])
            assert body["language"] == "en", name


async def test_file_urls_are_confined_to_the_root(config, tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    png = text_image(["HELLO"])
    (root / "sub" / "ok.png").write_bytes(png)
    outside = tmp_path / "outside.png"
    outside.write_bytes(png)
    os.symlink(outside, root / "link.png")
    os.symlink(root / "sub" / "ok.png", root / "inner_link.png")

    async with client_for(fast(config)) as (client, _):
        # Off by default.
        r = await post_json(client, {"image": (root / "sub" / "ok.png").as_uri()})
        await assert_error(r, 403, "file_urls_disabled")

    async with client_for(fast(config, server={"file_root": str(root)})) as (client, _):
        r = await post_json(client, {"image": (root / "sub" / "ok.png").as_uri()})
        assert r.status_code == 200 and words_of((await r.get_json())["text"]) == ["HELLO"]
        r = await post_json(client, {"image": (root / "inner_link.png").as_uri()})
        assert r.status_code == 200, "a symlink that stays inside the root is fine"
        for url in (
            f"file://{root}/sub/../../outside.png",
            f"file://{root}/../outside.png",
            (root / "link.png").as_uri(),
            outside.as_uri(),
            "file:///etc/passwd",
        ):
            await assert_error(await post_json(client, {"image": url}), 403, "forbidden_path")
        await assert_error(
            await post_json(client, {"image": (root / "missing.png").as_uri()}),
            404,
            "file_not_found",
        )
        await assert_error(
            await post_json(client, {"image": (root / "sub").as_uri()}), 400, "not_a_file"
        )
        await assert_error(
            await post_json(client, {"image": "file://example.com/x.png"}), 400, "invalid_file_url"
        )


@pytest.mark.devdata
async def test_english_and_chinese_real_images(config, devdata):
    en = (devdata / "rapidocr_tests" / "en.jpg").read_bytes()
    zh = (devdata / "rapidocr_tests" / "ch_en_num.jpg").read_bytes()
    async with client_for(config) as (client, _):
        r = await post_json(client, {"image": data_uri(en, "image/jpeg"), "languages": ["en"]})
        body = await r.get_json()
        assert r.status_code == 200
        assert "MovieShots" in body["text"] and "shot type" in body["text"]
        assert body["languages_detected"] == ["en"]
        r = await post_json(client, {"image": data_uri(zh, "image/jpeg"), "languages": ["zh"]})
        body = await r.get_json()
        assert r.status_code == 200
        assert "正品促销" in body["text"]
        assert "zh" in body["languages_detected"] and body["language"] == "zh"
        assert body["statistics"]["total_regions"] >= 10


async def test_unknown_language_rejected_is_422_naming_the_supported_ones(config):
    async with client_for(fast(config, ocr={"unknown_language": "reject"})) as (client, _):
        r = await post_json(client, {"image": data_uri(text_image(["HELLO"])), "languages": ["fr"]})
        body = await assert_error(r, 422, "unsupported_language")
        assert "'fr'" in body["error"] and "en" in body["error"] and "zh" in body["error"]


async def test_bad_input_gets_the_right_4xx(config):
    png = text_image(["HELLO"])
    gif = gif_image()
    cases = [
        (
            "bad json",
            dict(data=b'{"image": ', headers={"Content-Type": "application/json"}),
            400,
            "invalid_json",
        ),
        ("json array", dict(json=["x"]), 400, "invalid_json"),
        (
            "empty body",
            dict(data=b"", headers={"Content-Type": "application/json"}),
            400,
            "invalid_json",
        ),
        ("missing image", dict(json={"languages": ["en"]}), 400, "missing_field"),
        ("image not a string", dict(json={"image": 12}), 400, "invalid_field"),
        (
            "languages not a list",
            dict(json={"image": b64(png), "languages": 5}),
            400,
            "invalid_field",
        ),
        ("bad base64", dict(json={"image": "abc$%^"}), 400, "invalid_base64"),
        (
            "bad base64 in data uri",
            dict(json={"image": "data:image/png;base64,@@@"}),
            400,
            "invalid_base64",
        ),
        (
            "data uri without ;base64, not an image either way",
            dict(json={"image": "data:image/png,abc"}),
            400,
            "invalid_image",
        ),
        ("data uri without comma", dict(json={"image": "data:image/png;base64"}), 400,
         "invalid_data_uri"),
        ("not an image", dict(json={"image": b64(os.urandom(300))}), 400, "invalid_image"),
        ("truncated png", dict(json={"image": b64(png[: len(png) // 2])}), 400, "invalid_image"),
        ("http url", dict(json={"image": "http://example.com/a.png"}), 400, "unsupported_url"),
        ("gif", dict(json={"image": b64(gif)}), 415, "unsupported_media_type"),
        (
            "data uri of text (the bytes decide, not the declared type)",
            dict(json={"image": "data:text/plain;base64,aGVsbG8="}),
            400,
            "invalid_image",
        ),
        (
            "data uri gif",
            dict(json={"image": data_uri(gif, "image/gif")}),
            415,
            "unsupported_media_type",
        ),
        (
            "text body",
            dict(data=b"hello", headers={"Content-Type": "text/plain"}),
            415,
            "unsupported_media_type",
        ),
        ("no content type", dict(data=b"hello"), 415, "unsupported_media_type"),
        (
            "multipart without image",
            dict(
                files={"picture": FileStorage(io.BytesIO(png), "a.png", content_type="image/png")}
            ),
            400,
            "missing_field",
        ),
        ("urlencoded form", dict(form={"image": b64(png)}), 415, "unsupported_media_type"),
        (
            "multipart text file",
            dict(
                files={"image": FileStorage(io.BytesIO(b"hi"), "a.txt", content_type="text/plain")}
            ),
            415,
            "unsupported_media_type",
        ),
        (
            "raw gif",
            dict(data=gif, headers={"Content-Type": "image/gif"}),
            415,
            "unsupported_media_type",
        ),
    ]
    async with client_for(fast(config)) as (client, _):
        for name, kwargs, status, code in cases:
            r = await client.post("/v1/ocr/extract", **kwargs)
            try:
                await assert_error(r, status, code)
            except AssertionError as exc:
                raise AssertionError(f"case {name!r}: {exc}") from None
        await assert_error(await client.get("/nowhere"), 404, "not_found")
        r = await client.get("/v1/ocr/extract")
        await assert_error(r, 405, "method_not_allowed")
        assert "POST" in r.headers["Allow"]
        # The service still works after all that.
        r = await post_json(client, {"image": b64(png)})
        assert r.status_code == 200


async def test_size_limits_are_413(config):
    cfg = fast(
        config,
        server={"max_body_bytes": 300_000},
        processing={"max_image_bytes": 100_000, "max_image_pixels": 2_000_000},
    )
    async with client_for(cfg) as (client, _):
        r = await post_json(client, {"image": b64(os.urandom(250_000))})
        await assert_error(r, 413, "payload_too_large")
        r = await post_json(client, {"image": b64(os.urandom(120_000))})
        await assert_error(r, 413, "image_too_large")
        r = await client.post(
            "/v1/ocr/extract",
            files={
                "image": FileStorage(
                    io.BytesIO(os.urandom(120_000)), "a.png", content_type="image/png"
                )
            },
        )
        await assert_error(r, 413, "image_too_large")
        bomb = png_header_only(20_000, 20_000)
        assert len(bomb) < 200
        body = await assert_error(
            await post_json(client, {"image": b64(bomb)}), 413, "image_too_large"
        )
        assert "400000000" in body["error"]


async def test_bearer_token_protects_everything_but_the_probes(config):
    cfg = fast(config, server={"auth_token": "s3cret-token"})
    good = {"Authorization": "Bearer s3cret-token"}
    async with client_for(cfg) as (client, _):
        for path in ("/health", "/health/ready"):  # probes: public (load balancers, systemd)
            assert (await client.get(path)).status_code == 200
        for path in ("/models", "/openapi.json", "/cache/stats"):
            r = await client.get(path)
            await assert_error(r, 401, "unauthorized")
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
            assert (await client.get(path, headers=good)).status_code == 200
        for header in (
            "Bearer wrong",
            "s3cret-token",
            "Basic s3cret-token",
            "Bearer s3cret-tokenX",
        ):
            r = await post_json(client, {"image": "x"}, headers={"Authorization": header})
            await assert_error(r, 401, "unauthorized")
        r = await post_json(client, {"image": b64(text_image(["HELLO"]))}, headers=good)
        assert r.status_code == 200


async def test_overload_is_429_with_retry_after(config):
    gate = trio.Event()
    cfg = fast(config, server={"max_in_flight": 1})
    backend = ControlledBackend(cfg, det_gate=gate)
    async with client_for(cfg, {"cpu": lambda _ids: backend}) as (client, app):
        service = get_state(app).service
        first: dict = {}

        async def held() -> None:
            r = await post_json(client, {"image": b64(text_image(["HELLO"]))})
            first["status"], first["body"] = r.status_code, await r.get_json()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(held)
            await wait_until(lambda: service.statistics().requests_in_flight >= 1)
            r = await post_json(client, {"image": b64(text_image(["HELLO"]))})
            await assert_error(r, 429, "overloaded")
            assert int(r.headers["Retry-After"]) >= 1
            gate.set()
        assert first["status"] == 200 and words_of(first["body"]["text"]) == ["HELLO"]


async def test_request_timeout_is_504(config):
    cfg = fast(config, server={"request_timeout_s": 0.3})
    gate = trio.Event()
    backend = ControlledBackend(cfg, det_gate=gate)  # detection held past the deadline
    async with client_for(cfg, {"cpu": lambda _ids: backend}) as (client, _):
        with trio.fail_after(10):
            r = await post_json(client, {"image": b64(text_image(["HELLO"]))})
        await assert_error(r, 504, "request_timeout")
        gate.set()  # the device call itself is shielded; let it end so shutdown is quick


async def test_device_fault_is_503_then_the_device_recovers(config):
    cfg = fast(config, backend={"restart_backoff_s": 0.05})
    make_backend = fails_once(cfg, DeviceFault("PCIe link down at /dev/hailo0"))
    async with client_for(cfg, {"cpu": make_backend}) as (client, _):
        r = await post_json(client, {"image": b64(text_image(["HELLO"]))})
        body = await assert_error(r, 503, "device_fault")
        assert "PCIe" not in body["error"]
        assert int(r.headers["Retry-After"]) >= 1

        async def ready() -> bool:
            return (await client.get("/health/ready")).status_code == 200

        await wait_until(ready)
        r = await post_json(client, {"image": b64(text_image(["HELLO"]))})
        assert r.status_code == 200 and words_of((await r.get_json())["text"]) == ["HELLO"]
        health = await (await client.get("/health")).get_json()
        assert health["model_loads"] == 2  # loaded, then loaded again after the fault


async def test_not_started_and_shutting_down_are_503(config):
    app = create_app(fast(config))
    client = app.test_client()  # no lifespan: the service never started
    r = await client.get("/health")
    assert r.status_code == 200 and (await r.get_json())["models_loaded"] is False
    r = await client.get("/health/ready")
    assert r.status_code == 503 and (await r.get_json())["ready"] is False
    r = await post_json(client, {"image": b64(text_image(["HELLO"]))})
    await assert_error(r, 503, "not_ready")
    assert "Retry-After" in r.headers

    async with client_for(fast(config)) as (client, app):
        get_state(app).begin_shutdown()
        r = await post_json(client, {"image": b64(text_image(["HELLO"]))})
        await assert_error(r, 503, "shutting_down")
        assert "Retry-After" in r.headers
        r = await client.get("/health/ready")
        assert r.status_code == 503
        assert await r.get_json() == {"ready": False, "reason": "shutting_down"}


async def test_unexpected_error_is_a_bare_500(config, caplog):
    async with client_for(fast(config)) as (client, app):
        service = get_state(app).service

        async def broken(*args, **kwargs):
            raise RuntimeError("secret detail at /srv/models/x.hef")

        service.extract = broken
        r = await post_json(client, {"image": b64(text_image(["HELLO"]))})
        body = await assert_error(r, 500, "internal_error")
        assert "secret" not in body["error"]
    assert any("secret detail" in (rec.exc_text or "") or rec.exc_info for rec in caplog.records)


async def test_openapi_describes_every_route(config):
    async with client_for(fast(config)) as (client, app):
        r = await client.get("/openapi.json")
        assert r.status_code == 200
        doc = await r.get_json()
    assert doc["openapi"].startswith("3.1")
    rules = {
        (re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule), method)
        for rule in app.url_map.iter_rules()
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}
    }
    for path, method in rules:
        assert path in doc["paths"], path
        assert method.lower() in doc["paths"][path], (path, method)
    extract = doc["paths"]["/v1/ocr/extract"]["post"]
    assert set(extract["requestBody"]["content"]) >= {"application/json", "multipart/form-data"}
    for status in ("200", "400", "401", "413", "415", "422", "429", "503", "504"):
        assert status in extract["responses"], status
    error = doc["components"]["schemas"]["Error"]
    assert set(error["required"]) == {"success", "error", "code"}
