"""``Scored`` (the scoring core's answer) -> the response shape each client parses, with token usage.

One ``Ranked`` per request: the scores of each query group (one group, except vLLM's N:N pairs), the
model, and the tokens read. Usage counts, with the served model's tokenizer, the instruction and the
query once per document plus the document (capped at ``max_tokens_per_doc``); the prompt template
is not counted. When the replicas were too busy to count, the numbers are estimates and Cohere's
``meta.warnings`` says so. Scores come best first everywhere but ``/score``, which keeps input order as vLLM does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from schemas.http import (
    ApiMeta,
    ApiVersion,
    DocumentObject,
    MetaTokens,
    RerankResponse,
    RerankResultItem,
    ScoreData,
    ScoreResponse,
    TeiRank,
    Usage,
)
from schemas.scoring import ModelInfo
from serve_app.scoring import Scored

ESTIMATED = "token counts are estimates: the model replicas were too busy to count them"


@dataclass(frozen=True)
class Ranked:
    """One request's outcome: per query group its ``Scored``, the served model, and the tokens read."""

    model: ModelInfo
    groups: list[Scored]
    tokens: int
    tokens_estimated: bool = False  # the replicas were too busy to count: about 1 token per 3 characters

    def usage(self) -> Usage:
        return Usage(
            prompt_tokens=self.tokens,
            total_tokens=self.tokens,
            documents=sum(len(g.scores) for g in self.groups),
            cached_documents=sum(g.cached for g in self.groups),
        )


def pair_tokens(counts: Mapping[str, int], pairs: Sequence[tuple[str, str]], instruction: str, cap: int | None) -> int:
    """Tokens of (instruction, query, document) over the pairs; ``counts`` maps each text to its tokens."""
    prefix = counts.get(instruction, 0) if instruction else 0
    return sum(prefix + counts[q] + (counts[d] if cap is None else min(counts[d], cap)) for q, d in pairs)


def _chunk(scored: Scored, i: int) -> int | None:
    return None if scored.chunks is None else scored.chunks[i]


def cohere_response(
    request_id: str,
    ranked: Ranked,
    texts: Sequence[str],
    *,
    top_n: int | None,
    return_documents: bool,
    api_version: str,
) -> RerankResponse:
    """Cohere v1/v2, Jina and vLLM read this one shape: ``meta`` for Cohere, ``usage`` for the others."""
    scored = ranked.groups[0]
    results = [
        RerankResultItem(
            index=i,
            relevance_score=scored.scores[i],
            document=DocumentObject(text=texts[i]) if return_documents else None,
            chunk=_chunk(scored, i),
        )
        for i in scored.order[:top_n]
    ]
    meta = ApiMeta(
        api_version=ApiVersion(version=api_version),
        tokens=MetaTokens(input_tokens=ranked.tokens),
        warnings=[ESTIMATED] if ranked.tokens_estimated else None,
    )
    return RerankResponse(id=request_id, model=ranked.model.id, results=results, meta=meta, usage=ranked.usage())


def tei_ranks(ranked: Ranked, texts: Sequence[str], *, return_text: bool) -> list[TeiRank]:
    scored = ranked.groups[0]
    return [
        TeiRank(index=i, score=scored.scores[i], text=texts[i] if return_text else None, chunk=_chunk(scored, i))
        for i in scored.order
    ]


def score_response(request_id: str, ranked: Ranked, slots: Sequence[tuple[int, int]], created: int) -> ScoreResponse:
    """vLLM's ``/score``: ``slots[i]`` = (group, position in it) of the i-th pair; input order."""
    data = [ScoreData(index=i, score=ranked.groups[g].scores[p]) for i, (g, p) in enumerate(slots)]
    return ScoreResponse(id=request_id, created=created, model=ranked.model.id, data=data, usage=ranked.usage())
