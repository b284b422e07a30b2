"""seq-cls and bi-encoder kinds vs plain transformers; model resolution and kind errors."""

from __future__ import annotations

import time

import pytest
import torch
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

from schemas.settings import ModelSettings
from serve_app.engine import ModelKindError, ModelUnavailableError, ScoreRequest, load_engine

QUERY = "how do vaccines train the immune system"
DOCS = ["Vaccines expose the immune system to a harmless antigen.", "", "Bread is baked from flour. " * 80,
        "東京は日本の首都です 🙂", "Le système immunitaire apprend.", "a"]


def test_seq_cls_parity_with_plain_transformers(tiny_seq_cls_dir):
    eng = load_engine(ModelSettings(model=str(tiny_seq_cls_dir), max_batch_tokens=512))
    assert eng.info.kind == "seq-cls" and eng.info.max_length == 512 and eng.default_instruction is None
    tok = AutoTokenizer.from_pretrained(tiny_seq_cls_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_seq_cls_dir).eval()
    with torch.no_grad():
        enc = tok([QUERY] * len(DOCS), DOCS, padding=True, truncation="only_second", max_length=512, return_tensors="pt")
        logits = model(**enc).logits[:, 0]
    raw = eng.score(QUERY, DOCS, raw_scores=True)
    assert max(abs(a - b) for a, b in zip(raw, logits.tolist())) < 1e-5
    assert max(abs(a - b) for a, b in zip(eng.score(QUERY, DOCS), torch.sigmoid(logits).tolist())) < 1e-5
    assert max(raw) - min(raw) > 0.05


def test_bi_encoder_parity_with_plain_transformers(tiny_bi_encoder_dir):
    eng = load_engine(ModelSettings(model=str(tiny_bi_encoder_dir)))
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


def test_kind_mismatches_are_refused(tiny_seq_cls_dir, tiny_bi_encoder_dir):
    with pytest.raises(ModelKindError):
        load_engine(ModelSettings(model=str(tiny_seq_cls_dir), kind="qwen3-reranker"))
    with pytest.raises(ModelKindError):
        load_engine(ModelSettings(model=str(tiny_seq_cls_dir), kind="bi-encoder"))
    with pytest.raises(ModelKindError):  # a bare encoder has no trained head
        load_engine(ModelSettings(model=str(tiny_bi_encoder_dir), kind="seq-cls"))
