"""HTTP wire contracts of the rerank API: the Cohere/Jina/vLLM shape and the TEI shape.

Both shapes are served by the same handler; these models only describe what goes in and out.
Unknown request fields are ignored (peer clients send extras such as ``max_chunks_per_doc``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class DocumentObject(_Lenient):
    text: str


class RerankRequest(_Lenient):
    """``POST /v1/rerank`` (Cohere v2 / Jina / vLLM)."""

    query: str
    documents: list[str | DocumentObject] = Field(min_length=1)
    top_n: int | None = Field(None, ge=1, description="Return only the best n (all when absent).")
    return_documents: bool = Field(False, description="Echo each document's text in the results.")
    model: str | None = Field(None, description="Served model id; another value answers 404.")
    instruction: str | None = Field(None, description="Task instruction (Qwen3 rerankers); model default when absent.")

    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]


class RerankResultItem(BaseModel):
    index: int
    relevance_score: float
    document: DocumentObject | None = None


class Usage(BaseModel):
    documents: int = Field(description="Documents scored for this request.")
    cached_documents: int = Field(description="Of those, served from the Redis score cache.")


class RerankResponse(BaseModel):
    id: str
    model: str
    results: list[RerankResultItem]
    usage: Usage


class TeiRerankRequest(_Lenient):
    """``POST /rerank`` (text-embeddings-inference)."""

    query: str
    texts: list[str] = Field(min_length=1)
    raw_scores: bool = Field(False, description="Logits instead of [0, 1] scores (bypasses the cache).")
    return_text: bool = False
    truncate: bool = Field(True, description="False: a text longer than the model's max length answers 413.")
    instruction: str | None = None


class TeiRank(BaseModel):
    index: int
    score: float
    text: str | None = None


class ErrorBody(BaseModel):
    """Every error response: a reason a client can act on, never a stack trace."""

    error: str
    limit: str | None = Field(None, description="Settings key of the exceeded limit, for 413.")
    detail: Any = None
