"""RerankEngine: the one entry point callers use (Serve replicas, tests, benchmarks).

Kind-specific work lives in the scorers of the kind registry (registry.py); this facade loads them,
validates input, keeps tokenisation apart from the forward pass and maps logits to scores.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from .api import ModelInfo, ScoreRequest, ScoreResult
from .kinds import KindScorer
from .loader import model_max_length, resolve_device, resolve_dtype, resolve_model
from .long_documents import WindowPlan, plain_plan, plan_windows, token_offsets

log = logging.getLogger(__name__)


class RerankEngine:
    """Scores (query, documents, instruction) -> one float per document, in input order.

    Empty documents list -> []. Empty query or document strings are scored as they are (the
    template is still well formed): the result is a valid, deterministic, usually low score.
    """

    def __init__(self, info: ModelInfo, scorer: KindScorer, tokenizer):
        self.info = info
        self._scorer = scorer
        self._tokenizer = tokenizer
        self.default_instruction: str | None = scorer.default_instruction

    def score(
        self, query: str, documents: Sequence[str], instruction: str | None = None, raw_scores: bool = False
    ) -> list[float]:
        """Truncate-mode scores of one job (the default handling of long documents)."""
        out = self.score_many([ScoreRequest(query, documents, instruction, raw_scores)])[0]
        assert isinstance(out, list)
        return out

    def score_many(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """Scores several jobs at once; documents (or their windows) of all jobs share the micro-batches.

        One ``list[float]`` per truncate-mode request, one ``ChunkedScores`` per chunk-mode request.
        """
        for r in requests:
            _check_request(r)
        plans = [self._plan(r) for r in requests]
        jobs = [self._scorer.encode(r.query, p.texts, r.instruction) for r, p in zip(requests, plans)]
        with torch.inference_mode():
            raws = self._scorer.raw_scores(jobs)
        act = self._scorer.activate
        return [
            p.reduce(list(raw) if r.raw_scores else [act(x) for x in raw]) for r, p, raw in zip(requests, plans, raws)
        ]

    def _plan(self, r: ScoreRequest) -> WindowPlan:
        """What each document becomes: itself (the default fast path), a cut text, or its windows."""
        if r.plain or not r.documents:
            return plain_plan(r.documents)
        budget = self._scorer.document_budget(r.query, r.instruction)
        return plan_windows(r, token_offsets(self._tokenizer, r.documents), budget)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Token counts of texts with the served model's tokenizer (no special tokens), for request limits."""
        if not texts:
            return []
        return [len(ids) for ids in self._tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


def _check_request(r: ScoreRequest) -> None:
    if not isinstance(r.query, str):
        raise TypeError("query must be a string")
    if isinstance(r.documents, str) or not all(isinstance(d, str) for d in r.documents):
        raise TypeError("documents must be a sequence of strings")
    if r.instruction is not None and not isinstance(r.instruction, str):
        raise TypeError("instruction must be a string or None")


def load_engine(settings) -> RerankEngine:
    """Load the model named by ModelSettings (RERANK_MODEL...) with the registered scorer of its kind."""
    resolved = resolve_model(settings.model, settings.revision or None)  # first: fails fast, before heavy imports
    from transformers import AutoConfig, AutoTokenizer

    from .registry import KINDS, check_kind, detect_kind

    path = resolved.path
    config = AutoConfig.from_pretrained(path)
    kind = check_kind(settings.kind, detect_kind(path, config), path)
    spec = KINDS[kind]
    device = resolve_device(settings.device)
    dtype = resolve_dtype(settings.dtype, device)
    max_length = model_max_length(path, config, settings.max_length)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = spec.load_model(path, dtype)
    model.to(device).eval()
    scorer = spec.scorer(model, tokenizer, path=path, max_length=max_length, max_batch_tokens=settings.max_batch_tokens)
    info = ModelInfo(
        id=resolved.id,
        revision=resolved.revision,
        kind=kind,
        device=str(device),
        dtype=str(dtype).removeprefix("torch."),
        max_length=max_length,
        fallback=resolved.fallback,
    )
    if info.fallback:
        log.warning(
            "serving the FALLBACK model %s (%s): scores are bi-encoder cosines, not reranker scores", info.id, kind
        )
    log.info(
        "loaded %s kind=%s device=%s dtype=%s max_length=%d", info.fingerprint, kind, device, info.dtype, max_length
    )
    return RerankEngine(info, scorer, tokenizer)
