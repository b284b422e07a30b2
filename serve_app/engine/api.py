"""Public value types and errors of the engine, shared by every model kind and by callers."""

from __future__ import annotations

from schemas.scoring import ChunkedScores, ModelInfo, ScoreRequest, ScoreResult

__all__ = ["ChunkedScores", "ModelInfo", "ModelKindError", "ModelUnavailableError", "ScoreRequest", "ScoreResult"]


class ModelUnavailableError(RuntimeError):
    """The configured model's weights are neither on disk nor reachable."""


class ModelKindError(ValueError):
    """The model cannot be served as the requested kind (it would give meaningless scores)."""
