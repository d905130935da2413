"""``GET /dashboard``: the analyst dashboard, one self-contained HTML page.

The page holds no data and needs no key. Its script reads the analytics API
(``/api/v1/usage``, ``/analytics/*``) with the key the analyst types in, so
those endpoints decide who sees what. It is assembled once from the package
data in ``dashboard/`` with its style and scripts inlined: it loads nothing
else, and its Content-Security-Policy allows only those inlined scripts (by
hash) and requests to the gateway itself.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from functools import cache
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response

SCRIPTS = ("format.js", "charts.js", "sections.js", "app.js")
"""In load order: each defines what the next ones use."""


@dataclass(frozen=True)
class Page:
    html: bytes
    headers: dict[str, str]


@cache
def page() -> Page:
    assets = resources.files("services.ingress") / "dashboard"
    html = (assets / "index.html").read_text("utf-8")
    html = html.replace("/*@style.css*/", (assets / "style.css").read_text("utf-8"))
    scripts = [(assets / name).read_text("utf-8") for name in SCRIPTS]
    html = html.replace("<!--@scripts-->", "\n".join(f"<script>{js}</script>" for js in scripts))
    hashes = " ".join(f"'sha256-{_digest(js)}'" for js in scripts)
    policy = (
        f"default-src 'none'; script-src {hashes}; style-src 'unsafe-inline'; "
        "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )
    headers = {
        "cache-control": "no-cache",
        "content-security-policy": policy,
        "referrer-policy": "no-referrer",
        "x-content-type-options": "nosniff",
    }
    return Page(html.encode("utf-8"), headers)


def _digest(text: str) -> str:
    return base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")


async def dashboard(request: Request) -> Response:
    built = page()
    return Response(built.html, media_type="text/html; charset=utf-8", headers=built.headers)
