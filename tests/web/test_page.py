"""The web page and its assets: served by the service itself, nothing from elsewhere,
public even when a token is configured (the page is where the token is typed)."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

from tests.support.config import with_changes
from tests.support.images import data_uri, text_image
from tests.support.paths import REPO
from tests.support.server import fast
from web.app import create_app
from web.page import STATIC_DIR

STATIC_FILES = sorted(p.name for p in STATIC_DIR.iterdir() if p.is_file())


class _Refs(HTMLParser):
    """Every URL an HTML document refers to (src, href, action, ...) and every id."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href", "action", "srcset", "poster", "data") and value:
                self.urls.append(value)
            if name == "id" and value:
                self.ids.add(value)


def _refs() -> _Refs:
    parser = _Refs()
    parser.feed((STATIC_DIR / "index.html").read_text())
    return parser


def test_the_static_folder_has_the_page():
    assert {"index.html", "app.js", "style.css"} <= set(STATIC_FILES)


def test_no_external_urls_in_the_page_or_its_assets():
    # Any scheme-qualified or protocol-relative URL would make the page depend on (and
    # leak its users to) another host; the page must work on a Pi with no internet.
    url = re.compile(r"""(?i)(\b[a-z][a-z0-9+.-]*://|["'(\s]//[a-z0-9])""")
    for name in STATIC_FILES:
        text = (STATIC_DIR / name).read_text()
        assert not url.findall(text), f"{name} refers to another host: {url.findall(text)}"
        assert "@import" not in text
    for ref in _refs().urls:
        assert ref.startswith("data:") or not re.match(r"(?i)^([a-z]+:|//)", ref), ref
        assert not ref.startswith("/"), f"{ref}: keep URLs relative (reverse proxy prefixes)"


def test_every_element_the_script_uses_is_in_the_page():
    script = (STATIC_DIR / "app.js").read_text()
    used = set(re.findall(r'\$\("([A-Za-z0-9_-]+)"\)', script))
    assert used, "app.js looks elements up with $(id)"
    assert used <= _refs().ids, f"missing in index.html: {sorted(used - _refs().ids)}"


def test_the_page_loads_only_files_that_exist():
    for ref in _refs().urls:
        if ref.startswith("static/"):
            assert (STATIC_DIR / ref.removeprefix("static/")).is_file(), ref


async def test_page_and_assets_are_served(config):
    app = create_app(config)
    async with app.test_app() as test_app:
        client = test_app.test_client()
        r = await client.get("/")
        assert r.status_code == 200
        assert r.mimetype == "text/html"
        body = (await r.get_data()).decode()
        assert body == (STATIC_DIR / "index.html").read_text()
        csp = r.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "connect-src 'self'" in csp
        for name, mimetype in (
            ("app.js", {"text/javascript", "application/javascript"}),
            ("style.css", {"text/css"}),
        ):
            r = await client.get(f"/static/{name}")
            assert r.status_code == 200, name
            assert r.mimetype in mimetype
            assert await r.get_data() == (STATIC_DIR / name).read_bytes()
            assert r.headers["X-Content-Type-Options"] == "nosniff"


async def test_static_files_cannot_leave_the_static_folder(config):
    app = create_app(config)
    async with app.test_app() as test_app:
        client = test_app.test_client()
        for path in ("/static/../app.py", "/static/%2e%2e/app.py", "/static/nope.js"):
            r = await client.get(path)
            assert r.status_code == 404, path
            assert b"create_app" not in await r.get_data()


async def test_with_a_token_the_page_is_public_and_the_api_is_not(config):
    token = "s3cret-token"
    app = create_app(with_changes(config, server={"auth_token": token}))
    async with app.test_app() as test_app:
        client = test_app.test_client()
        for path in ("/", "/static/app.js", "/static/style.css", "/health"):
            assert (await client.get(path)).status_code == 200, path
        # The page asks /models to find out whether it must show the token field.
        assert (await client.get("/models")).status_code == 401
        r = await client.get("/models", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200


async def test_websocket_takes_the_token_as_a_query_parameter(config):
    """Browsers cannot set headers on a WebSocket, so the page sends ?token=."""
    token = "s3cret-token"
    app = create_app(fast(with_changes(config, server={"auth_token": token})))
    image = data_uri(text_image(["HELLO WORLD"]))
    async with app.test_app() as test_app:
        client = test_app.test_client()
        async with client.websocket("/v1/ocr/stream", query_string={"token": token}) as ws:
            await ws.send(json.dumps({"id": "a", "image": image, "languages": ["en"]}))
            types = []
            while True:
                event = json.loads(await ws.receive())
                assert event["id"] == "a"
                types.append(event["type"])
                if event["type"] in ("done", "error"):
                    break
        assert types[0] == "accepted" and types[-1] == "done", types
        assert "HELLO" in event["text"].upper()

        for query in ({"token": "wrong"}, {}):
            refused = False
            try:
                async with client.websocket("/v1/ocr/stream", query_string=query) as ws:
                    await ws.send(json.dumps({"id": "b", "image": image}))
                    await ws.receive()
            except Exception as exc:  # the handshake is refused with an HTTP response
                refused = _refusal_status(exc) == 401
            assert refused, f"a websocket with {query or 'no token'} must be refused with 401"


def _refusal_status(exc: BaseException) -> int | None:
    """The HTTP status a refused websocket handshake got (the test client raises it,
    possibly inside an exception group from its nursery)."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            status = _refusal_status(inner)
            if status is not None:
                return status
        return None
    return getattr(getattr(exc, "response", None), "status_code", None)


def test_static_files_are_packaged():
    """pyproject ships web/static/* with the package (installed services have the page)."""
    import tomllib

    pyproject = (REPO / "pyproject.toml").read_text()
    assert "static/*" in tomllib.loads(pyproject)["tool"]["setuptools"]["package-data"]["web"]
