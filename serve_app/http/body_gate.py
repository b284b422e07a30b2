"""``JsonBodyGate``: the JSON body of the POST routes is read, bounded and strictly decoded before FastAPI.

Content type, then size (Content-Length first, then while reading), then
``schemas.http.decode_json_body`` (UTF-8, nesting, NaN, lone surrogates, ...), so bad bytes get a
precise 4xx instead of reaching a ``.encode()`` downstream. The checked bytes are replayed to FastAPI
unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from schemas.http import BodyRejected, decode_json_body, max_body_bytes
from schemas.settings import LimitsSettings
from serve_app.http.errors import ErrorResponse, show
from serve_app.http.scope import route_path

_DERIVED = " (the most the limits.* character and token limits can need)"


def _json_media_type(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


class JsonBodyGate:
    """ASGI middleware over ``routes`` (POST paths); ``limits_of`` gives the replica's size limits."""

    def __init__(self, app: ASGIApp, *, routes: Collection[str], limits_of: Callable[[], LimitsSettings]):
        self.app, self.routes, self.limits_of = app, routes, limits_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or route_path(scope) not in self.routes:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        try:
            body = await self._checked_body(headers, receive)
        except BodyRejected as exc:
            await ErrorResponse(exc.status, exc.reason, limit=exc.limit, detail=exc.detail)(scope, receive, send)
            return
        if body is None:  # the client went away while sending
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _checked_body(self, headers: dict[str, str], receive: Receive) -> bytes | None:
        content_type = headers.get("content-type")
        if not _json_media_type(content_type):
            shown = show(content_type) if content_type else "none"
            raise BodyRejected(415, f"content-type {shown} is not JSON; send application/json")
        limit, key = max_body_bytes(self.limits_of())
        declared = headers.get("content-length", "").strip()
        if declared.isdigit() and int(declared) > limit:
            raise BodyRejected(413, f"request body is {int(declared)} bytes, limit {limit}{_DERIVED}", limit=key)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BodyRejected(413, f"request body is over {limit} bytes{_DERIVED}", limit=key)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        decode_json_body(body)
        return body
