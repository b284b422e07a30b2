"""Reranker engine: load a model, score (query, documents, instruction) -> floats. No Ray, no Kafka."""

from .api import ModelInfo, ModelKindError, ModelUnavailableError, ScoreRequest
from .engine import RerankEngine, load_engine

__all__ = ["ModelInfo", "ModelKindError", "ModelUnavailableError", "RerankEngine", "ScoreRequest", "load_engine"]
