"""Reading deploy files in tests: YAML documents, the mappings inside them, the env names they set."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from schemas.settings import known_env_vars


def yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def mappings(node: Any) -> Iterator[dict[str, Any]]:
    """Every mapping inside a document, the document included."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from mappings(value)
    elif isinstance(node, list):
        for value in node:
            yield from mappings(value)


def env_entries(node: dict[str, Any]) -> list[dict[str, Any]]:
    """A container's ``env`` list (name / value / valueFrom entries); [] for any other mapping."""
    env = node.get("env")
    return env if isinstance(env, list) else []


def unknown_settings(names: set[str]) -> list[str]:
    """Names that look like rerank-stream settings but are none (the settings module's env mapping decides)."""
    known = known_env_vars()
    return sorted({n for n in names if n.startswith("RERANK_")} - known)
