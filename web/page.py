"""The web page at ``/``: choose an image, watch it being read, copy the text.

The page is three static files in ``web/static`` (HTML, JavaScript, CSS), served by the
service itself: no build step, and nothing fetched from anywhere else, so it works on a
Pi with no internet access and leaks nothing to third parties. A Content-Security-Policy
makes that a rule the browser enforces, not just a habit of the files.

The page and its assets are public even when ``server.auth_token`` is set (they hold no
data): the page must load before the user can type the token into it. Every call the
page makes carries the token.
"""

from __future__ import annotations

from pathlib import Path

from quart import Blueprint, Response, send_from_directory

from . import openapi
from .openapi import page as openapi_page

STATIC_DIR = Path(__file__).resolve().parent / "static"

#: Paths that need no token: the page and its assets.
PUBLIC_PREFIXES = ("/static/",)
PUBLIC_PATHS = frozenset({"/", "/index.html"})

#: Only this origin: scripts, styles and websockets from the service; images from the
#: file the user picked (blob:) and the empty inline favicon (data:).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

bp = Blueprint("page", __name__)


def is_public(path: str) -> bool:
    """True for the page and its static files (no token needed)."""
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def _secure(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    # Revalidate each time: after an upgrade the page and its script must not mismatch.
    response.headers["Cache-Control"] = "no-cache"
    return response


@bp.get("/")
@bp.get("/index.html")
async def index() -> Response:
    return await send_from_directory(STATIC_DIR, "index.html")


async def static_file(filename: str) -> Response:
    # send_from_directory refuses paths that leave STATIC_DIR (404), so "../" is safe.
    return await send_from_directory(STATIC_DIR, filename)


def register(app) -> None:
    """Serve the page at ``/`` and its assets at ``/static/``.

    Quart gives every app a ``/static`` route onto ``<root_path>/static``, and the root
    path of this app is the working directory, so left alone it would serve whatever
    ``static`` folder happens to be where the service was started. Point it at the
    page's own folder instead (or add the route if the app was built without one)."""
    app.static_folder = STATIC_DIR
    if "static" not in app.view_functions:
        app.add_url_rule("/static/<path:filename>", "static", static_file, methods=["GET"])
    app.register_blueprint(bp)
    openapi.add_paths(app, openapi_page.FRAGMENT)

    @app.after_request
    async def _page_headers(response: Response) -> Response:
        from quart import request

        if is_public(request.path):
            _secure(response)
        return response
