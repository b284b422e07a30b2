"""The one ordering rule of every entry point (Kafka results and both HTTP shapes)."""

from __future__ import annotations

from collections.abc import Sequence


def best_first(scores: Sequence[float]) -> list[int]:
    """Indices by descending score; ties keep input order, so replays rank identically."""
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))
