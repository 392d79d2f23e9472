"""File access and exposure: ``file://`` confinement beyond the basic cases in
``tests/web/test_routes.py`` (encoded traversal, sibling prefixes, symlinked directories, FIFOs and
devices, oversized files), the bearer token on every route but ``/health`` (enumerated from
the app's own URL map, so a new route cannot slip through), auth bypass attempts through
path tricks on a real socket, and the Pi deployment config explaining the token."""

from __future__ import annotations

import os
import re

import trio
import yaml

from tests.support.images import b64, text_image
from tests.support.paths import REPO
from tests.support.reliability import EXTRACT, JSON, assert_error_body, json_body
from tests.support.server import fast, running_server, words_of
from web.app import create_app


async def test_file_urls_cannot_escape_the_root(config, tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    png = text_image(["HELLO"], scale=1.0)
    (root / "sub" / "ok.png").write_bytes(png)
    sibling = tmp_path / "root2"  # shares the root's name as a prefix
    sibling.mkdir()
    (sibling / "x.png").write_bytes(png)
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "s.png").write_bytes(png)
    os.symlink(outside, root / "dirlink")  # a directory symlink pointing out
    os.symlink("/dev/zero", root / "zero.png")
    os.mkfifo(root / "fifo.png")  # opening it would block forever
    (root / "big.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(300_000))
    linked_root = tmp_path / "linked_root"
    os.symlink(root, linked_root)

    forbidden = [
        f"file://{root}/sub/%2e%2e/%2e%2e/secret/s.png",
        f"file://{root}/sub/..%2f..%2fsecret%2fs.png",
        f"file://{root}2/x.png",
        f"file://{root}/dirlink/s.png",
        f"file://{root}/zero.png",
        "file:///proc/self/environ",
        "file://localhost/etc/shadow",
    ]
    bad_url = ["file:relative.png", f"file://{root}/sub/ok.png%00.txt", "file://evil.example/x"]
    cfg = fast(config, server={"file_root": str(linked_root)},
               processing={"max_image_bytes": 100_000})
    app = create_app(cfg)
    async with app.test_app() as test_app:
        client = test_app.test_client()

        async def post(url: str):
            r = await client.post(EXTRACT, data=json_body({"image": url}), headers=JSON)
            return r.status_code, await r.get_data()

        # The configured root may itself be a symlink: it is resolved like the paths.
        status, body = await post(f"file://{linked_root}/sub/ok.png")
        assert status == 200, body
        for url in forbidden:
            status, body = await post(url)
            doc = assert_error_body(status, body, 403, "forbidden_path")
            assert str(tmp_path) not in doc["error"], "errors never echo host paths"
        for url in bad_url:
            status, body = await post(url)
            assert_error_body(status, body, 400, "invalid_file_url")
        with trio.fail_after(5):  # a FIFO is refused, not opened (which would hang)
            status, body = await post(f"file://{root}/fifo.png")
        assert_error_body(status, body, 400, "not_a_file")
        status, body = await post(f"file://{root}/big.png")
        assert_error_body(status, body, 413, "image_too_large")


def _protected_routes(app) -> list[tuple[str, str]]:
    """Every (method, concrete path) the app serves, except the public ones."""
    out = []
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:\w+:)?\w+>", "x", rule.rule)
        if path in ("/health", "/health/ready", "/", "/index.html") or path.startswith("/static"):
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            out.append((method, path))
    return out


async def test_the_token_protects_every_route_but_the_probes(config):
    cfg = fast(config, server={"auth_token": "t0ken-Long-enough"})
    app = create_app(cfg)
    routes = _protected_routes(app)
    assert ("POST", "/v1/ocr/extract") in routes and ("GET", "/models") in routes
    assert len(routes) >= 6, routes
    async with app.test_app() as test_app:
        client = test_app.test_client()
        assert (await client.get("/health")).status_code == 200
        assert (await client.get("/health/ready")).status_code == 200  # probes send no token
        for method, path in routes:
            if path == "/v1/ocr/stream":
                continue  # a websocket route: see tests/web/test_ws.py
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "bearer"},
                            {"Authorization": "Token t0ken-Long-enough"}):
                r = await client.open(path, method=method, headers=headers)
                assert_error_body(r.status_code, await r.get_data(), 401, "unauthorized")
            # The websocket's ?token= is not accepted on plain HTTP routes.
            r = await client.open(path + "?token=t0ken-Long-enough", method=method)
            assert r.status_code == 401, (method, path)
            r = await client.open(path, method=method,
                                  headers={"Authorization": "Bearer t0ken-Long-enough"})
            assert r.status_code != 401, (method, path)


async def test_path_tricks_do_not_bypass_the_token(config):
    cfg = fast(config, server={"auth_token": "tok-123"})
    async with running_server(cfg) as server:
        port = int(server.url.rsplit(":", 1)[1])

        async def raw(target: str) -> tuple[int, bytes]:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(
                    f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
                data = b""
                with trio.fail_after(10):
                    while True:  # until the whole body (Content-Length) is in
                        data += await stream.receive_some(65536)
                        head, sep, body = data.partition(b"\r\n\r\n")
                        m = re.search(rb"(?i)content-length: *(\d+)", head)
                        if sep and m and len(body) >= int(m.group(1)):
                            break
            return int(head.split(b" ", 2)[1]), body

        for target in ("/health/../models", "/static/../models", "/static/..%2fmodels",
                       "//models", "/models/", "/MODELS", "/health%2f..%2fmodels",
                       "/static/../metrics", "/./models", "http://x/models"):
            status, body = await raw(target)
            assert status in (401, 404, 405, 308), (target, status, body[:200])
            assert b'"object": "list"' not in body and b'"object":"list"' not in body, target
            if status != 308 and body.startswith(b"{"):
                assert_error_body(status, body)
        status, _ = await raw("/health")
        assert status == 200


async def test_a_valid_request_works_with_the_token_over_a_socket(config):
    import httpx

    cfg = fast(config, server={"auth_token": "tok-123"})
    async with running_server(cfg) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            r = await http.post(EXTRACT, json={"image": b64(text_image(["HELLO"], scale=1.0))},
                                headers={"Authorization": "Bearer tok-123"})
            assert r.status_code == 200 and words_of(r.json()["text"]) == ["HELLO"]
            r = await http.post(EXTRACT, json={"image": b64(text_image(["HELLO"], scale=1.0))})
            assert_error_body(r.status_code, r.content, 401, "unauthorized")


def test_pi_config_listening_on_all_interfaces_explains_the_token():
    path = REPO / "deploy" / "pi-config.yaml"
    text = path.read_text()
    doc = yaml.safe_load(text)
    assert doc["server"]["host"] == "0.0.0.0"
    # Open like the original service (its clients send no token); install.sh --token
    # turns the token on, and the file says so and what being open means.
    assert not doc["server"].get("auth_token")
    comments = " ".join(line.split("#", 1)[1] for line in text.splitlines() if "#" in line)
    assert re.search(r"token", comments, re.I) and re.search(r"anyone|network", comments, re.I)
    assert "install.sh --token" in comments
    # file:// stays off on the network-facing example.
    assert not doc["server"].get("file_root")
