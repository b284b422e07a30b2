"""Long documents, once for every model kind: cut a document to one window, or split it into windows.

A model reads at most ``max_length`` tokens per (query, document) pair, and only the document may
lose tokens (never the instruction or query). The kind says how many document tokens one pair holds
(``KindScorer.document_budget``); everything else happens here, on text, before the kind encodes:

- ``max_tokens_per_doc`` caps how much of a document is read at all (in both modes);
- ``truncation_direction`` says which end survives a cut ("right" keeps the start, "left" the end);
- truncate mode keeps one window; chunk mode splits the kept tokens into overlapping windows that
  become documents of the same job, so they share its micro-batches and its prefix work (the causal
  kinds' prefix KV cache, the bi-encoder's single query embedding). The document's score is the best
  window's, and the window's index is returned (``ChunkedScores``).

Windows are cut at token boundaries (the tokenizer's character offsets) and handed on as text, so a
window is scored exactly like a document with that text. Overlap: consecutive windows share at least
``overlap_tokens(window)`` tokens (a quarter of the window, at most 256), so a passage up to that long
is whole in some window; the windows are spread evenly, the first starting at the document's start
and the last ending at its end. ``BOUNDARY_SLACK`` tokens of the budget are left free because text
cut mid-word may re-tokenize a token or two longer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from schemas.scoring import ChunkedScores, ScoreRequest, ScoreResult

OVERLAP_DIVISOR = 4
MAX_OVERLAP_TOKENS = 256
BOUNDARY_SLACK = 4
MIN_WINDOW_TOKENS = 16  # even when the query leaves (almost) no room: the kind's own truncation then applies


def overlap_tokens(window: int) -> int:
    """Tokens consecutive windows share: a quarter of the window, at most MAX_OVERLAP_TOKENS."""
    return min(window // OVERLAP_DIVISOR, MAX_OVERLAP_TOKENS)


def kept_span(n_tokens: int, cap: int | None, direction: str) -> tuple[int, int]:
    """Token range [lo, hi) of a document that is read at all: the first (right) or last (left) ``cap`` tokens."""
    keep = n_tokens if cap is None else min(n_tokens, cap)
    return (0, keep) if direction == "right" else (n_tokens - keep, n_tokens)


def window_spans(lo: int, hi: int, window: int, overlap: int) -> list[tuple[int, int]]:
    """Evenly spread windows of ``window`` tokens covering [lo, hi), consecutive ones sharing >= ``overlap``."""
    n = hi - lo
    if n <= window:
        return [(lo, hi)]
    stride = window - overlap
    count = -(-(n - window) // stride) + 1  # ceil: the fewest windows whose starts are <= stride apart
    return [(lo + s, lo + s + window) for s in (i * (n - window) // (count - 1) for i in range(count))]


@dataclass(frozen=True)
class WindowPlan:
    """The texts a request's documents become (in order) and how many windows each document has."""

    texts: list[str]
    counts: list[int]
    chunked: bool

    def reduce(self, scores: Sequence[float]) -> ScoreResult:
        """Window scores -> document scores (truncate: as they are; chunk: max and its window index)."""
        if len(scores) != len(self.texts):
            raise RuntimeError(f"{len(scores)} scores for {len(self.texts)} windows")
        if not self.chunked:
            return list(scores)
        best: list[float] = []
        chunks: list[int] = []
        k = 0
        for n in self.counts:
            group = scores[k : k + n]
            i = max(range(n), key=lambda j: (group[j], -j))  # the earliest of equal maxima
            best.append(group[i])
            chunks.append(i)
            k += n
        return ChunkedScores(best, chunks)


def plain_plan(documents: Sequence[str]) -> WindowPlan:
    """The default handling: documents as they are (the kind truncates at the end itself)."""
    return WindowPlan(list(documents), [1] * len(documents), chunked=False)


def token_offsets(tokenizer, documents: Sequence[str]) -> list[list[tuple[int, int]]]:
    """Each document's tokens as character spans (no special tokens)."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("truncation_direction, max_tokens_per_doc and long_documents=chunk need a fast tokenizer")
    if not documents:
        return []
    enc = tokenizer(
        list(documents),
        add_special_tokens=False,
        return_offsets_mapping=True,
        return_attention_mask=False,
        verbose=False,  # a document longer than the model is the point here, not worth a warning
    )
    return [[(int(a), int(b)) for a, b in spans] for spans in enc["offset_mapping"]]


def plan_windows(request: ScoreRequest, offsets: Sequence[Sequence[tuple[int, int]]], budget: int) -> WindowPlan:
    """Texts to score for every document of ``request``, given its tokens' character spans and the
    number of document tokens one pair holds (``budget``, the kind's answer for this query)."""
    window = max(budget - BOUNDARY_SLACK, MIN_WINDOW_TOKENS)
    chunked = request.long_documents == "chunk"
    texts: list[str] = []
    counts: list[int] = []
    for doc, spans in zip(request.documents, offsets):
        lo, hi = kept_span(len(spans), request.max_tokens_per_doc, request.truncation_direction)
        if chunked:
            pieces = window_spans(lo, hi, window, overlap_tokens(window))
        else:
            pieces = [kept_span(hi - lo, window, request.truncation_direction)]
            pieces = [(lo + a, lo + b) for a, b in pieces]
        for a, b in pieces:
            start = 0 if a == 0 else spans[a][0]  # a piece at either end keeps that end's whitespace
            end = len(doc) if b == len(spans) else spans[b - 1][1]
            texts.append(doc[start:end])
        counts.append(len(pieces))
    return WindowPlan(texts, counts, chunked)
