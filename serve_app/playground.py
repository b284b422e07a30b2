"""The playground: one self-contained page (``static/playground.html``: HTML, inline CSS and vanilla
JS, nothing fetched from elsewhere) where a person types a query, pastes candidates one per line,
loads example presets and sees the ranking of ``POST /v1/rerank``. The ingress serves it at
``GET /`` and ``GET /playground``.

The response carries a strict Content-Security-Policy built from the page itself: only its own
inline script and style (by hash) run, and it may talk only to its own origin; a page edit that
pulls in a CDN or an inline handler is refused by the browser (the browser test sees the error).
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import lru_cache
from importlib.resources import files

from fastapi.responses import HTMLResponse

PAGE = "static/playground.html"


def _hashes(html: str, tag: str) -> list[str]:
    """CSP source expressions for the inline ``<tag>`` blocks of ``html``."""
    blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.DOTALL)
    return [f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'" for b in blocks]


def content_security_policy(html: str) -> str:
    """The page's policy: its own inline script and style only, requests to its own origin only."""
    return "; ".join(
        [
            "default-src 'none'",
            f"script-src {' '.join(_hashes(html, 'script'))}",
            f"style-src {' '.join(_hashes(html, 'style'))}",
            "connect-src 'self'",
            "img-src data:",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )


@lru_cache(maxsize=1)
def _page() -> tuple[str, str]:
    html = files("serve_app").joinpath(PAGE).read_text(encoding="utf-8")
    return html, content_security_policy(html)


def playground_response() -> HTMLResponse:
    """The page with its security headers (read from the package once per process)."""
    html, policy = _page()
    return HTMLResponse(
        html,
        headers={
            "Content-Security-Policy": policy,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-cache",
        },
    )
