"""Random-weight models built on the fly, saved like real checkpoints (test and benchmark code only).

Tests and benchmarks load them through the same `load_engine` path as real weights, since
no model hub is reachable here. Tokenizers are trained in a second with `tokenizers`; BERT-style
models borrow the WordPiece tokenizer of the packaged all-MiniLM-L6-v2.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from serve_app.engine.loader import minilm_dir

__all__ = [
    "build_tiny_qwen3_reranker",
    "build_qwen3_reranker_0_6b_random",
    "build_tiny_qwen3_seq_cls",
    "build_tiny_seq_cls",
    "build_tiny_bi_encoder",
    "build_minilm_cross_encoder",
    "build_bert_base_cross_encoder",
    "training_corpus",
]

QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
_MINILM_TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def training_corpus() -> list[str]:
    """Small multilingual corpus: prompt words, several scripts, emoji, and `yes` / `no` as words."""
    base = [
        "Judge whether the Document meets the requirements based on the Query and the Instruct provided.",
        'Note that the answer can only be "yes" or "no".',
        "system user assistant Instruct Query Document",
        "Given a web search query, retrieve relevant passages that answer the query",
        "The quick brown fox jumps over the lazy dog. Paris is the capital of France.",
        "Machine learning models rank documents by relevance to a search query.",
        "Der schnelle braune Fuchs springt über den faulen Hund. Berlin ist die Hauptstadt.",
        "Le renard brun rapide saute par-dessus le chien paresseux. Café, élève, naïve.",
        "El zorro marrón rápido salta sobre el perro perezoso. Señor, año, corazón.",
        "東京は日本の首都です。機械学習は文書の関連性を判断します。",
        "北京是中国的首都。我们今天去公园散步。",
        "서울은 대한민국의 수도입니다.",
        "القاهرة هي عاصمة مصر. التعلم الآلي مفيد.",
        "Москва — столица России. Быстрая коричневая лиса.",
        "नई दिल्ली भारत की राजधानी है।",
        "Emoji test 🙂🚀🔥 and mixed scripts: data 数据 بيانات данные.",
        "0123456789 + - * / = ( ) [ ] { } < > : ; , . ! ? ' \" \n\n",
    ]
    return base * 20 + ["yes", "no", "yes\n", "no\n"] * 200


def _train_bpe_tokenizer(vocab_size: int = 1200):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=QWEN_SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(training_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=QWEN_SPECIALS[1:],
    )
    for word in ("yes", "no"):
        if len(fast.encode(word, add_special_tokens=False)) != 1:
            raise RuntimeError(f"tiny tokenizer did not learn {word!r} as one token")
    return fast


def _qwen3_config(vocab_size: int, **arch):
    from transformers import Qwen3Config

    return Qwen3Config(  # type: ignore[call-arg]
        vocab_size=vocab_size,
        tie_word_embeddings=True,
        rms_norm_eps=1e-6,
        rope_theta=1_000_000.0,
        max_position_embeddings=40960,
        architectures=["Qwen3ForCausalLM"],
        **arch,
    )


def build_tiny_qwen3_reranker(path, *, num_layers: int = 2, hidden_size: int = 64, seed: int = 0) -> Path:
    """A few-MB Qwen3ForCausalLM with the reranker's tokenizer specials; loads as kind qwen3-reranker.

    initializer_range is large so yes/no logits differ by O(1): parity tests then detect small bugs.
    """
    from transformers import Qwen3ForCausalLM

    path = Path(path)
    tokenizer = _train_bpe_tokenizer()
    heads = max(hidden_size // 16, 2)
    config = _qwen3_config(
        len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=heads,
        num_key_value_heads=max(heads // 2, 1),
        head_dim=16,
        initializer_range=0.1,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    Qwen3ForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_qwen3_reranker_0_6b_random(path, *, num_layers: int = 28) -> Path:
    """The real Qwen3-Reranker-0.6B architecture (vocab 151669, width 1024) with random weights.

    Stored in bfloat16 (1.2 GB instead of 2.4 GB); the loader casts to the serving dtype.
    """
    from transformers import Qwen3ForCausalLM

    path = Path(path)
    tokenizer = _train_bpe_tokenizer(vocab_size=4000)
    config = _qwen3_config(
        151669,
        hidden_size=1024,
        intermediate_size=3072,
        num_hidden_layers=num_layers,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=128,
        initializer_range=0.02,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    prev = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        model = Qwen3ForCausalLM(config)
    finally:
        torch.set_default_dtype(prev)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_tiny_qwen3_seq_cls(path, causal_dir) -> Path:
    """Convert a causal Qwen3 reranker the way the published '-seq-cls' checkpoints are made.

    The one-label score head is lm_head[yes] - lm_head[no], so sigmoid of its logit is the official
    score: tests use it to check the decoder seq-cls path against the official recipe.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen3ForSequenceClassification

    from serve_app.engine.qwen3 import yes_no_ids

    path = Path(path)
    causal = AutoModelForCausalLM.from_pretrained(causal_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(causal_dir)
    yes, no = yes_no_ids(tokenizer)
    config = causal.config
    config.num_labels = 1
    config.architectures = ["Qwen3ForSequenceClassification"]
    config.tie_word_embeddings = False
    model = Qwen3ForSequenceClassification(config)
    model.model.load_state_dict(causal.get_decoder().state_dict())
    head = causal.get_output_embeddings().weight
    with torch.no_grad():
        model.score.weight.copy_((head[yes] - head[no]).unsqueeze(0))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _tiny_bert_config(**extra):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        initializer_range=0.2,
        **extra,
    )


def _copy_minilm_tokenizer(path: Path) -> None:
    for name in _MINILM_TOKENIZER_FILES:
        shutil.copy(minilm_dir() / name, path / name)


def build_tiny_seq_cls(path, *, seed: int = 0) -> Path:
    """A tiny BERT cross-encoder with a one-label head (like ms-marco MiniLM / BGE rerankers)."""
    from transformers import BertForSequenceClassification

    path = Path(path)
    torch.manual_seed(seed)
    config = _tiny_bert_config(num_labels=1, architectures=["BertForSequenceClassification"])
    BertForSequenceClassification(config).save_pretrained(path)
    _copy_minilm_tokenizer(path)
    return path


def build_tiny_bi_encoder(path, *, seed: int = 0) -> Path:
    """A tiny BERT in sentence-transformers layout; CLS pooling (MiniLM uses mean) to exercise the config."""
    from transformers import BertModel

    path = Path(path)
    torch.manual_seed(seed)
    BertModel(_tiny_bert_config(architectures=["BertModel"])).save_pretrained(path)
    _copy_minilm_tokenizer(path)
    (path / "1_Pooling").mkdir(exist_ok=True)
    (path / "1_Pooling" / "config.json").write_text(
        json.dumps(
            {
                "word_embedding_dimension": 32,
                "pooling_mode_cls_token": True,
                "pooling_mode_mean_tokens": False,
                "pooling_mode_max_tokens": False,
                "pooling_mode_mean_sqrt_len_tokens": False,
            }
        )
    )
    (path / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            ]
        )
    )
    (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128, "do_lower_case": False}))
    return path


def _with_score_spread(model, seed: int):
    """A seeded one-label head whose logits spread by O(1) across documents (the default init gives
    near-constant scores, which would make ranking comparisons between contenders meaningless)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w = model.classifier.weight
        w.copy_(torch.randn(w.shape, generator=gen) * (8.0 / w.shape[1] ** 0.5))
        model.classifier.bias.zero_()
    return model


def build_minilm_cross_encoder(path, *, seed: int = 0) -> Path:
    """An ms-marco-MiniLM-L-6-shaped cross-encoder: the packaged all-MiniLM-L6-v2 encoder (6 layers, width
    384) under a one-label classification head (BertForSequenceClassification), with its tokenizer.

    Trained encoder weights give realistic activations; the head is seeded (no cross-encoder weights
    ship offline), so scores are deterministic but not relevance judgements.
    """
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    path = Path(path)
    config = BertConfig.from_pretrained(minilm_dir())
    config.num_labels = 1
    config.architectures = ["BertForSequenceClassification"]
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config)
    model.bert.load_state_dict(BertModel.from_pretrained(minilm_dir()).state_dict())  # encoder and pooler
    _with_score_spread(model, seed).save_pretrained(path)
    _copy_minilm_tokenizer(path)
    return path


def build_bert_base_cross_encoder(path, *, seed: int = 0) -> Path:
    """A BERT-base-sized cross-encoder (12 layers, width 768, 12 heads, like BGE-reranker-base), random
    weights, the MiniLM WordPiece tokenizer (same 30,522-token vocabulary)."""
    from transformers import BertConfig, BertForSequenceClassification

    path = Path(path)
    torch.manual_seed(seed)
    config = BertConfig(num_labels=1, architectures=["BertForSequenceClassification"])  # type: ignore[call-arg]
    _with_score_spread(BertForSequenceClassification(config), seed).save_pretrained(path)
    _copy_minilm_tokenizer(path)
    return path
