"""API keys: with ``serve.api_keys`` set, every route but the open ones needs ``Authorization: Bearer <key>``.

Fail closed: a route is protected unless it is listed in ``OPEN_PATHS`` (health, readiness, the
playground page, the API docs; ``/metrics`` per ``serve.metrics_require_key``), so a route added later
is protected by default, and an unknown path answers 401 rather than telling a stranger what exists.
The gate runs before the body is read. Keys are compared as SHA-256 digests with
``hmac.compare_digest`` against every key (no early exit, no length leak), and never logged or echoed.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from schemas.settings import ServeSettings
from serve_app.http.errors import ErrorResponse
from serve_app.http.scope import header, route_path

OPEN_PATHS = frozenset(
    {"/healthz", "/readyz", "/", "/playground", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
)
"""Paths that never need a key (the playground page has a key field for its own API calls)."""
METRICS_PATH = "/metrics"
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="rerank-stream"'}
_HOW = {"header": "Authorization", "scheme": "Bearer"}


class ApiKeys:
    """The accepted keys of one ingress replica (digests only) and which paths they guard."""

    def __init__(self, keys: list[str] | None, *, protect_metrics: bool = False):
        self.enabled = keys is not None  # an empty list (keys arrived masked) lets nobody in
        self._digests = [hashlib.sha256(k.encode()).digest() for k in keys or ()]
        self.protect_metrics = protect_metrics

    @classmethod
    def from_settings(cls, serve: ServeSettings) -> ApiKeys:
        return cls(serve.api_key_list(), protect_metrics=serve.metrics_require_key)

    def guards(self, path: str) -> bool:
        if not self.enabled or path in OPEN_PATHS:
            return False
        return path != METRICS_PATH or self.protect_metrics

    def refusal(self, authorization: bytes | None) -> str | None:
        """Why this Authorization header value is refused, or None when it carries an accepted key."""
        if authorization is None:
            return "missing API key: send Authorization: Bearer <key>"
        scheme, _, token = authorization.strip().partition(b" ")
        if scheme.lower() != b"bearer" or not token.strip():
            return "malformed Authorization header: send Authorization: Bearer <key>"
        digest = hashlib.sha256(token.strip()).digest()
        accepted = False
        for known in self._digests:  # all of them, whatever matched: the time says nothing
            accepted |= hmac.compare_digest(known, digest)
        return None if accepted else "API key not accepted"


class ApiKeyGate:
    """ASGI middleware: 401 in the ErrorBody shape (with a Bearer challenge) before a guarded route runs."""

    def __init__(self, app: ASGIApp, *, keys_of: Callable[[], ApiKeys]):
        self.app, self.keys_of = app, keys_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            keys = self.keys_of()
            if keys.guards(route_path(scope)):
                reason = keys.refusal(header(scope, b"authorization"))
                if reason is not None:
                    await ErrorResponse(401, reason, detail=_HOW, headers=_CHALLENGE)(scope, receive, send)
                    return
        await self.app(scope, receive, send)
