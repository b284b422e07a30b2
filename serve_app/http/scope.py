"""What the ASGI gates read from a request scope: its route path under a Serve prefix, and its headers."""

from __future__ import annotations

from starlette.types import Scope


def route_path(scope: Scope) -> str:
    """The path the router matches: without the app's Serve ``route_prefix`` (the scope's root_path)."""
    path, root = scope.get("path", ""), scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return path or "/"


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of a header (``name`` in lower case), raw bytes."""
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value
    return None
