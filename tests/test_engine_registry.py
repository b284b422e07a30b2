"""The kind registry drives detection, RERANK_MODEL_KIND choices and loading; dtype auto's CPU detection."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch

from schemas.settings import ModelSettings
from serve_app.engine import ModelKindError, load_engine, loader, registry
from serve_app.engine.kinds import KindScorer, KindSpec
from serve_app.engine.registry import check_kind, detect_kind, kind_choices


def config(*archs: str) -> SimpleNamespace:
    return SimpleNamespace(architectures=list(archs))


class TokenCountScorer:
    """A toy kind: longer documents score higher. Enough to see the engine run any registered scorer."""

    kind = "token-count"
    default_instruction = None

    def __init__(self, model, tokenizer, *, path, max_length: int, max_batch_tokens: int):
        self.tokenizer = tokenizer

    def encode(self, query, documents, instruction):
        return [len(self.tokenizer.encode(d, add_special_tokens=False)) for d in documents]

    def raw_scores(self, jobs):
        return [[float(n) for n in job] for job in jobs]

    @staticmethod
    def activate(raw: float) -> float:
        return raw / (raw + 1.0)


TOY = KindSpec(
    name="token-count",
    scorer=TokenCountScorer,
    model_class="AutoModel",
    detect=lambda path, cfg: (path / "token-count.flag").is_file(),
    priority=100,
    refusals={"seq-cls": "{path}: a {detected} model keeps its head"},
)


def test_builtin_kinds_detection_order(tmp_path):
    assert kind_choices() == ("auto", "qwen3-reranker", "seq-cls", "bi-encoder")
    assert detect_kind(tmp_path, config("Qwen3ForSequenceClassification")) == "seq-cls"
    assert detect_kind(tmp_path, config("Qwen3ForCausalLM")) == "qwen3-reranker"
    assert detect_kind(tmp_path, config("BertModel")) == "bi-encoder"
    # a head type wins over the bare architecture, whatever the list order
    assert detect_kind(tmp_path, config("BertModel", "BertForSequenceClassification")) == "seq-cls"
    with pytest.raises(ModelKindError, match="cannot tell the kind.*RERANK_MODEL_KIND"):
        detect_kind(tmp_path, config())
    (tmp_path / "modules.json").write_text("[]")
    assert detect_kind(tmp_path, config()) == "bi-encoder"


def test_builtin_refusals(tmp_path):
    assert check_kind("auto", "seq-cls", tmp_path) == "seq-cls"
    assert check_kind("seq-cls", "bi-encoder", tmp_path) == "seq-cls"  # refused later, by the missing-head check
    with pytest.raises(ModelKindError, match="random head"):
        check_kind("seq-cls", "qwen3-reranker", tmp_path)
    with pytest.raises(ModelKindError, match="is a bi-encoder model, not a causal-LM reranker"):
        check_kind("qwen3-reranker", "bi-encoder", tmp_path)
    with pytest.raises(ModelKindError, match="classification head.*RERANK_MODEL_KIND=seq-cls"):
        check_kind("bi-encoder", "seq-cls", tmp_path)


def test_a_registered_kind_is_detected_accepted_and_loaded(monkeypatch, tmp_path, tiny_bi_encoder_dir):
    monkeypatch.setitem(registry.KINDS, TOY.name, TOY)
    assert kind_choices()[-1] == "token-count"
    assert check_kind("token-count", "bi-encoder", tmp_path) == "token-count"
    with pytest.raises(ModelKindError, match="keeps its head"):
        check_kind("token-count", "seq-cls", tmp_path)
    (tmp_path / "token-count.flag").touch()
    assert detect_kind(tmp_path, config("BertModel")) == "token-count"  # priority 100 beats bi-encoder
    eng = load_engine(ModelSettings(model=str(tiny_bi_encoder_dir), kind="token-count"))
    assert isinstance(eng._scorer, TokenCountScorer) and eng.info.kind == "token-count"
    assert eng.score("q", ["a", "a b c"], raw_scores=True) == [1.0, 3.0]

    monkeypatch.undo()
    assert "token-count" not in kind_choices()
    with pytest.raises(ModelKindError, match=r"RERANK_MODEL_KIND='token-count' is not one of auto, qwen3-reranker, "):
        check_kind("token-count", "bi-encoder", tmp_path)
    assert detect_kind(tmp_path, config("BertModel")) == "bi-encoder"


def test_builtin_scorers_implement_the_protocol(tiny_qwen_dir, tiny_seq_cls_dir, tiny_bi_encoder_dir):
    for path, kind in (
        (tiny_qwen_dir, "qwen3-reranker"),
        (tiny_seq_cls_dir, "seq-cls"),
        (tiny_bi_encoder_dir, "bi-encoder"),
    ):
        scorer = load_engine(ModelSettings(model=str(path), dtype="float32"))._scorer
        assert isinstance(scorer, KindScorer) and scorer.kind == kind
        assert type(scorer) is registry.KINDS[kind].scorer


@pytest.mark.parametrize(
    ("flags", "want"),
    [
        ({"avx512f", "amx_bf16", "amx_tile"}, torch.bfloat16),
        ({"avx512f", "avx512_bf16"}, torch.bfloat16),
        ({"avx2", "avx512f"}, torch.float32),
        (set(), torch.float32),
    ],
)
def test_dtype_auto_on_cpu_follows_native_bf16(monkeypatch, caplog, flags, want):
    monkeypatch.setattr(loader, "_cpu_flags", lambda: flags)
    with caplog.at_level(logging.INFO, logger=loader.__name__):
        assert loader.resolve_dtype("auto", torch.device("cpu")) == want
    assert "RERANK_MODEL_DTYPE=auto" in caplog.text and ("without" in caplog.text) == (want == torch.float32)
    assert loader.resolve_dtype("float32", torch.device("cpu")) == torch.float32  # explicit settings win
    assert loader.resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16


def test_dtype_auto_without_cpuinfo_asks_torch(monkeypatch):
    monkeypatch.setattr(loader, "_cpu_flags", lambda: None)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    assert loader.cpu_fast_bf16_feature() == "amx_bf16"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: 1 / 0, raising=False)
    assert loader.resolve_dtype("auto", torch.device("cpu")) == torch.float32


def test_dtype_auto_on_other_devices(monkeypatch):
    monkeypatch.setattr(loader, "_cpu_flags", lambda: {"amx_bf16"})
    assert loader.resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16
    assert loader.resolve_dtype("auto", torch.device("mps")) == torch.float32


def test_this_host_is_probed_without_error():
    assert loader.cpu_fast_bf16_feature() in (None, *loader.FAST_BF16_CPU_FLAGS)
