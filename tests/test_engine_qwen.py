"""Qwen3-Reranker engine vs the plain official recipe (one pair at a time), tiny random model, fp32."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from schemas.settings import ModelSettings
from serve_app.engine import ModelKindError, ScoreRequest, load_engine
from serve_app.engine.prompt import QWEN3_SUFFIX
from tests.support.reference_recipe import official_recipe_scores

DOCS = [
    "Paris is the capital of France.",
    "",
    "The quick brown fox jumps over the lazy dog. " * 12,
    "東京は日本の首都です。機械学習は文書の関連性を判断します。",
    "القاهرة هي عاصمة مصر. التعلم الآلي مفيد.",
    "Emoji 🙂🚀🔥 mixed scripts: data 数据 بيانات данные",
    "Москва — столица России.",
    "Machine learning models rank documents by relevance. " * 40,
    "no",
    "yes",
]


@pytest.fixture(scope="module")
def plain(tiny_qwen_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_qwen_dir, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(tiny_qwen_dir)


@pytest.fixture(scope="module")
def engine(tiny_qwen_dir):
    return load_engine(ModelSettings(model=str(tiny_qwen_dir), max_batch_tokens=1024, dtype="float32"))


def one_by_one(plain, query, docs, instruction=None, max_length=8192):
    model, tok = plain
    probs, raws = [], []
    for d in docs:
        p, r = official_recipe_scores(model, tok, query, [d], instruction, max_length)
        probs += p
        raws += r
    return probs, raws


def assert_close(got, want, tol=1e-5):
    assert len(got) == len(want)
    diff = max(abs(a - b) for a, b in zip(got, want))
    assert diff <= tol, f"max diff {diff}: {got} vs {want}"


def test_scores_are_not_degenerate(engine):
    # guards the parity tests against a model whose scores barely move
    raws = engine.score("capital of France", DOCS, raw_scores=True)
    assert max(raws) - min(raws) > 0.5


@pytest.mark.parametrize("instruction", [None, "Classify whether the post violates the policy", "指示：找到相关文档"])
@pytest.mark.parametrize("prefix_reuse", [True, False])
def test_parity_with_official_recipe(engine, plain, instruction, prefix_reuse):
    engine._scorer.prefix_reuse = prefix_reuse
    try:
        query = "what is the capital of France? 法国的首都"
        probs, raws = one_by_one(plain, query, DOCS, instruction)
        assert_close(engine.score(query, DOCS, instruction=instruction), probs)
        assert_close(engine.score(query, DOCS, instruction=instruction, raw_scores=True), raws, tol=1e-4)
    finally:
        engine._scorer.prefix_reuse = True


def test_parity_across_jobs_and_small_batches(tiny_qwen_dir, plain):
    # max_batch_tokens=256: many micro-batches
    eng = load_engine(ModelSettings(model=str(tiny_qwen_dir), max_batch_tokens=256, dtype="float32"))
    reqs = [
        ScoreRequest("capital of France", DOCS[:5]),
        ScoreRequest("", DOCS[3:7], instruction="Find passages in any language"),
        ScoreRequest("single", [DOCS[7]]),
        ScoreRequest("empty job", []),
        ScoreRequest("emoji 🙂", DOCS, raw_scores=True),
    ]
    got = eng.score_many(reqs)
    for r, g in zip(reqs, got):
        if not r.documents:
            assert g == []
            continue
        probs, raws = one_by_one(plain, r.query, r.documents, r.instruction)
        assert_close(g, raws if r.raw_scores else probs, tol=1e-4 if r.raw_scores else 1e-5)
    assert eng.score_many(reqs) == got, "scores must be deterministic"


def test_forward_passes_skip_the_vocabulary_projection_and_padding(tiny_qwen_dir):
    """The speed rules, observed on the model itself: lm_head never runs (only the yes/no rows are used),
    every pass stays within max_batch_tokens (or is one row), and the job costs about its real tokens
    with the shared prefix counted once, not n_docs x longest."""
    eng = load_engine(ModelSettings(model=str(tiny_qwen_dir), max_batch_tokens=512))
    scorer = eng._scorer
    lm_head_calls, passes = [], []
    hooks = [
        scorer.model.get_output_embeddings().register_forward_hook(lambda *a: lm_head_calls.append(1)),
        # every pass (lean or generic forward) starts by embedding its input ids
        scorer.base.embed_tokens.register_forward_pre_hook(lambda m, args: passes.append(tuple(args[0].shape))),
    ]
    try:
        eng.score("capital of France", DOCS)
    finally:
        for h in hooks:
            h.remove()
    assert not lm_head_calls
    assert all(rows == 1 or rows * cols <= 512 for rows, cols in passes), passes
    seqs = scorer.encode("capital of France", DOCS, None)
    shared = scorer.runner.shared_prefix(seqs)
    assert shared >= 16
    real = shared + sum(len(s) - shared for s in seqs)
    padded = sum(rows * cols for rows, cols in passes)
    assert padded <= 1.25 * real, (passes, real)
    assert padded < 0.6 * len(seqs) * max(len(s) for s in seqs)  # vs one padded batch per job


def test_truncation_keeps_prompt_and_matches_recipe(tiny_qwen_dir, plain):
    eng = load_engine(ModelSettings(model=str(tiny_qwen_dir), max_length=96, dtype="float32"))
    docs = [DOCS[2], DOCS[7], "short", DOCS[3] * 5]
    probs, _ = one_by_one(plain, "query words", docs, max_length=96)
    assert_close(eng.score("query words", docs), probs)
    seqs = eng._scorer.encode("query words", docs, None)
    suffix = eng._scorer.prompt.suffix_ids
    assert all(len(s) <= 96 and s[-len(suffix) :] == suffix for s in seqs)


def test_40k_token_document_is_truncated_keeps_suffix_and_scores(engine):
    doc = "Paris " * 40_000
    assert engine.count_tokens([doc])[0] >= 40_000
    seq = engine._scorer.encode("capital", [doc], None)[0]
    assert len(seq) == engine.info.max_length == 8192
    tok = engine._tokenizer
    assert tok.decode(seq[-len(engine._scorer.prompt.suffix_ids) :]) == QWEN3_SUFFIX
    assert "<Query>: capital" in tok.decode(seq[:100])
    (score,) = engine.score("capital", [doc])
    assert 0.0 < score < 1.0


def test_info_and_default_instruction(engine, tiny_qwen_dir):
    assert engine.info.kind == "qwen3-reranker" and engine.info.dtype == "float32"
    assert engine.info.fallback is False and str(tiny_qwen_dir) in engine.info.fingerprint
    assert engine.default_instruction.startswith("Given a web search query")
    assert engine.score("q", []) == []
    assert engine.count_tokens(["yes", "no", ""]) == [1, 1, 0]


def test_bad_input_types_raise(engine):
    with pytest.raises(TypeError):
        engine.score("q", "not a list")
    with pytest.raises(TypeError):
        engine.score("q", ["ok", None])


def test_original_checkpoint_refused_as_seq_cls(tiny_qwen_dir):
    with pytest.raises(ModelKindError, match="random"):
        load_engine(ModelSettings(model=str(tiny_qwen_dir), kind="seq-cls"))
