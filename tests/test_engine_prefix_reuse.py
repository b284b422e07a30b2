"""Shared-prefix KV reuse for the Qwen3 '-seq-cls' conversions (the decoder runner both decoder kinds use).

fp32 pinned: reuse must not move a score by more than 1e-4, and it must actually save the prefix tokens.
"""

from __future__ import annotations

import pytest

from schemas.settings import ModelSettings
from serve_app.engine import ScoreRequest, load_engine

DOCS = [
    "Vaccines expose the immune system to a harmless antigen.",
    "",
    "Bread is baked from flour. " * 60,
    "東京は日本の首都です 🙂",
    "Le système immunitaire apprend.",
    "no",
]
REQUESTS = [
    ScoreRequest("how do vaccines train the immune system", DOCS, raw_scores=True),
    ScoreRequest("", DOCS[:3], instruction="Find passages in any language", raw_scores=True),
    ScoreRequest("one document: nothing to share", [DOCS[0]], raw_scores=True),
]


@pytest.fixture(scope="module")
def seq_cls_engine(tiny_qwen_seq_cls_dir):
    return load_engine(ModelSettings(model=str(tiny_qwen_seq_cls_dir), max_batch_tokens=256, dtype="float32"))


def _tokens_run(engine, requests, reuse: bool) -> tuple[list[list[float]], int]:
    """Scores and the number of input tokens the decoder was given (padding included)."""
    runner = engine._scorer.runner
    runner.prefix_reuse = reuse
    seen: list[int] = []
    # every pass (lean or generic forward) starts by embedding its input ids
    hook = runner.base.embed_tokens.register_forward_pre_hook(lambda m, args: seen.append(args[0].numel()))
    try:
        return engine.score_many(REQUESTS), sum(seen)
    finally:
        hook.remove()
        runner.prefix_reuse = True


def test_seq_cls_prefix_reuse_matches_no_reuse(seq_cls_engine):
    with_reuse, tokens_with = _tokens_run(seq_cls_engine, REQUESTS, reuse=True)
    without, tokens_without = _tokens_run(seq_cls_engine, REQUESTS, reuse=False)
    diff = max(abs(a - b) for got, want in zip(with_reuse, without) for a, b in zip(got, want))
    assert diff <= 1e-4, (with_reuse, without)
    assert max(with_reuse[0]) - min(with_reuse[0]) > 0.5  # scores that move: the comparison can fail

    # The prefix (system prompt + instruction + query) runs once per job instead of once per document.
    scorer = seq_cls_engine._scorer
    saved = 0
    for r in REQUESTS[:2]:
        seqs = [ids for ids, _ in scorer.encode(r.query, r.documents, r.instruction)]
        shared = scorer.runner.shared_prefix(seqs)
        assert shared >= 16, "the Qwen3 prompt prefix is long enough to reuse"
        saved += shared * (len(seqs) - 1)
    assert tokens_with <= tokens_without - 0.8 * saved, (tokens_with, tokens_without, saved)


@pytest.mark.parametrize("dtype, tol", [("float32", 1e-4), ("bfloat16", 0.25)])
def test_lean_qwen3_forward_matches_the_generic_forward(tiny_qwen_dir, dtype, tol):
    """qwen3_stack.py (fused norms, in-place rotary, last layer at the last position only) computes what
    transformers' Qwen3Model computes, with and without the shared prefix."""
    engine = load_engine(ModelSettings(model=str(tiny_qwen_dir), max_batch_tokens=256, dtype=dtype))
    runner = engine._scorer.runner
    lean = runner.stack
    assert lean is not None, "a plain Qwen3 stack runs the lean forward"
    try:
        for reuse in (True, False):
            runner.prefix_reuse = reuse
            runner.stack = lean
            fast = engine.score_many(REQUESTS)
            runner.stack = None
            generic = engine.score_many(REQUESTS)
            diff = max(abs(a - b) for got, want in zip(fast, generic) for a, b in zip(got, want))
            assert diff <= tol, (reuse, fast, generic)
    finally:
        runner.stack, runner.prefix_reuse = lean, True
