"""The one error shape of the HTTP API (``ErrorBody`` JSON) and the handlers that map every failure onto it.

FastAPI's and Starlette's own errors (404, 405, 422) included: a reason a client can act on, never a
stack trace, never a 5xx for bad input.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from schemas.http import ErrorBody

log = logging.getLogger("ray.serve")


class ApiError(Exception):
    """An error with its HTTP status and a client-facing reason."""

    def __init__(self, status: int, reason: str, *, limit: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(reason)
        self.status, self.reason, self.limit, self.headers = status, reason, limit, headers


class ErrorResponse(JSONResponse):
    """An ``ErrorBody`` as JSON; ASCII-escaped, so a reason quoting odd input can never fail to encode."""

    def __init__(
        self,
        status: int,
        reason: str,
        *,
        limit: str | None = None,
        detail: Any = None,
        headers: dict[str, str] | None = None,
    ):
        body = ErrorBody(error=reason, limit=limit, detail=detail).model_dump(exclude_none=True)
        super().__init__(body, status_code=status, headers=headers)

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def show(value: str, limit: int = 80) -> str:
    """repr() of client input for a reason, cut to ``limit`` characters."""
    text = repr(value[: limit + 1])
    return text if len(text) <= limit else text[: limit - 3] + "..."


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return ErrorResponse(exc.status, exc.reason, limit=exc.limit, headers=exc.headers)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own 404/405 (and FastAPI's 400 "error parsing the body") in the ErrorBody shape."""
    assert isinstance(exc, StarletteHTTPException)
    where = f"{request.method} {show(request.url.path)}"
    if exc.status_code == 404:
        reason = f"no route {where}"
    elif exc.status_code == 405:
        allowed = {k.lower(): v for k, v in (exc.headers or {}).items()}.get("allow", "?")
        reason = f"method not allowed: {where}; allowed: {allowed}"
    else:
        reason = exc.detail if isinstance(exc.detail, str) else f"HTTP {exc.status_code}"
    return ErrorResponse(exc.status_code, reason, headers=dict(exc.headers) if exc.headers else None)


async def _invalid(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    problems = [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", ""))} for e in errors[:10]]
    if any(e.get("type") == "json_invalid" for e in errors):  # only if JsonBodyGate was bypassed
        return ErrorResponse(400, "malformed JSON body", detail=problems)
    first = problems[0] if problems else {"loc": [], "msg": ""}
    reason = f"request does not match the schema: {'.'.join(first['loc'][1:]) or 'body'}: {first['msg']}"
    return ErrorResponse(422, reason, detail=problems)


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error in the rerank API")
    return ErrorResponse(500, "internal error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(Exception, _unexpected)
