"""seq-cls and bi-encoder kinds vs plain transformers (fp32 pinned: tight tolerances); model resolution, kind errors."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest
import torch
from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from schemas.settings import ModelSettings
from serve_app.engine import ModelKindError, ModelUnavailableError, ScoreRequest, load_engine
from serve_app.engine.prompt import QWEN3_PREFIX, QWEN3_SUFFIX, qwen3_body
from tests.support.reference_recipe import official_recipe_scores

QUERY = "how do vaccines train the immune system"
DOCS = [
    "Vaccines expose the immune system to a harmless antigen.",
    "",
    "Bread is baked from flour. " * 80,
    "東京は日本の首都です 🙂",
    "Le système immunitaire apprend.",
    "a",
]


def test_seq_cls_parity_with_plain_transformers(tiny_seq_cls_dir):
    eng = load_engine(ModelSettings(model=str(tiny_seq_cls_dir), max_batch_tokens=512, dtype="float32"))
    assert eng.info.kind == "seq-cls" and eng.info.max_length == 512 and eng.default_instruction is None
    tok = AutoTokenizer.from_pretrained(tiny_seq_cls_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_seq_cls_dir).eval()
    with torch.no_grad():
        enc = tok(
            [QUERY] * len(DOCS), DOCS, padding=True, truncation="only_second", max_length=512, return_tensors="pt"
        )
        logits = model(**enc).logits[:, 0]
    raw = eng.score(QUERY, DOCS, raw_scores=True)
    assert max(abs(a - b) for a, b in zip(raw, logits.tolist())) < 1e-5
    assert max(abs(a - b) for a, b in zip(eng.score(QUERY, DOCS), torch.sigmoid(logits).tolist())) < 1e-5
    assert max(raw) - min(raw) > 0.05


@pytest.mark.parametrize("instruction", [None, "Find passages in any language"])
def test_qwen3_seq_cls_conversion_matches_the_official_recipe(tiny_qwen_seq_cls_dir, tiny_qwen_dir, instruction):
    """A '-seq-cls' conversion is served with the Qwen3 prompt and left padding: its sigmoid equals the
    official causal-LM score, and its raw logit equals plain transformers on one pair at a time."""
    eng = load_engine(ModelSettings(model=str(tiny_qwen_seq_cls_dir), max_batch_tokens=256, dtype="float32"))
    assert eng.info.kind == "seq-cls" and eng.default_instruction.startswith("Given a web search query")
    causal = AutoModelForCausalLM.from_pretrained(tiny_qwen_dir, dtype=torch.float32).eval()
    plain = AutoModelForSequenceClassification.from_pretrained(tiny_qwen_seq_cls_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(tiny_qwen_dir)
    want_probs, want_raw = [], []
    for d in DOCS:
        probs, _ = official_recipe_scores(causal, tok, QUERY, [d], instruction)
        want_probs += probs
        text = QWEN3_PREFIX + qwen3_body(QUERY, d, instruction or eng.default_instruction) + QWEN3_SUFFIX
        with torch.no_grad():
            want_raw.append(plain(**tok(text, return_tensors="pt")).logits[0, 0].item())
    got = eng.score(QUERY, DOCS, instruction=instruction)
    assert max(abs(a - b) for a, b in zip(got, want_probs)) < 1e-5
    raw = eng.score(QUERY, DOCS, instruction=instruction, raw_scores=True)
    assert max(abs(a - b) for a, b in zip(raw, want_raw)) < 1e-4
    assert max(raw) - min(raw) > 0.5


def test_bi_encoder_parity_with_plain_transformers(tiny_bi_encoder_dir):
    eng = load_engine(ModelSettings(model=str(tiny_bi_encoder_dir), dtype="float32"))
    assert eng.info.kind == "bi-encoder" and eng.info.max_length == 128  # from sentence_bert_config.json
    tok = AutoTokenizer.from_pretrained(tiny_bi_encoder_dir)
    model = AutoModel.from_pretrained(tiny_bi_encoder_dir).eval()
    with torch.no_grad():
        enc = tok([QUERY, *DOCS], padding=True, truncation=True, max_length=128, return_tensors="pt")
        cls = model(**enc).last_hidden_state[:, 0]  # the fixture declares CLS pooling
    want = torch.nn.functional.cosine_similarity(cls[1:], cls[:1], dim=-1).tolist()
    raw = eng.score(QUERY, DOCS, raw_scores=True)
    assert max(abs(a - b) for a, b in zip(raw, want)) < 1e-5
    assert eng.score(QUERY, DOCS) == pytest.approx([(w + 1) / 2 for w in want], abs=1e-5)
    # cross-job batching gives the same numbers as one job at a time
    many = eng.score_many([ScoreRequest(QUERY, DOCS[:3]), ScoreRequest("x", []), ScoreRequest(QUERY, DOCS[3:])])
    assert many[1] == [] and many[0] + many[2] == pytest.approx(eng.score(QUERY, DOCS), abs=1e-6)


def test_unknown_model_fails_fast_naming_the_setting(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.monotonic()
    with pytest.raises(ModelUnavailableError, match="RERANK_MODEL"):
        load_engine(ModelSettings(model="nobody-here/no-such-reranker"))
    with pytest.raises(ModelUnavailableError, match="RERANK_MODEL"):
        load_engine(ModelSettings(model="/no/such/dir"))
    assert time.monotonic() - t0 < 10


UNREACHABLE_HUB_CHILD = """
import time
from schemas.settings import ModelSettings
from serve_app.engine import ModelUnavailableError, load_engine
t0 = time.monotonic()
try:
    load_engine(ModelSettings(model="nobody-here/no-such-reranker"))
except ModelUnavailableError as exc:
    print(f"{time.monotonic() - t0:.2f}")
    print(exc)
"""


def test_unreachable_hub_fails_within_10s_naming_the_setting(tmp_path):
    """Online mode, empty cache, and a hub that accepts connections but never answers (the worst case:
    no quick 'connection refused'). Runs in a child so the hub settings are read fresh."""
    with socket.socket() as hub:
        hub.bind(("127.0.0.1", 0))
        hub.listen(16)  # never accepted, never answered
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "0",
            "TRANSFORMERS_OFFLINE": "0",
            "HF_HOME": str(tmp_path),
            "HF_ENDPOINT": f"http://127.0.0.1:{hub.getsockname()[1]}",
        }
        out = subprocess.run(
            [sys.executable, "-c", UNREACHABLE_HUB_CHILD], env=env, capture_output=True, text=True, timeout=120
        ).stdout
    lines = out.splitlines()
    assert lines, out
    assert float(lines[0]) < 10
    assert "RERANK_MODEL" in out and "not reachable" in out


def test_kind_mismatches_are_refused(tiny_seq_cls_dir, tiny_bi_encoder_dir):
    with pytest.raises(ModelKindError):
        load_engine(ModelSettings(model=str(tiny_seq_cls_dir), kind="qwen3-reranker"))
    with pytest.raises(ModelKindError):
        load_engine(ModelSettings(model=str(tiny_seq_cls_dir), kind="bi-encoder"))
    with pytest.raises(ModelKindError):  # a bare encoder has no trained head
        load_engine(ModelSettings(model=str(tiny_bi_encoder_dir), kind="seq-cls"))
