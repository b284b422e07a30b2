"""Bi-encoder embedding models (sentence-transformers layout): cosine(query, document).

Pooling follows the model's own 1_Pooling/config.json, so any sentence-transformers model pools
the way it was trained. Used for the packaged all-MiniLM-L6-v2 offline fallback.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from .batching import pad_id_of, pad_right, run_micro_batches, split_sizes
from .kinds import KindSpec, has_architecture

POOLING_MODES = ("cls", "mean", "max", "mean_sqrt_len", "lasttoken")


def read_pooling_mode(path: Path) -> str:
    """The pooling mode declared by the model directory; mean when it declares none."""
    modules = path / "modules.json"
    pooling_dir = path / "1_Pooling"
    if modules.is_file():
        for m in json.loads(modules.read_text()):
            if m.get("type", "").endswith("Pooling"):
                pooling_dir = path / m.get("path", "1_Pooling")
    cfg_file = pooling_dir / "config.json"
    if not cfg_file.is_file():
        return "mean"
    cfg = json.loads(cfg_file.read_text())
    if cfg.get("pooling_mode") in POOLING_MODES:
        return cfg["pooling_mode"]
    for mode, key in (
        ("cls", "pooling_mode_cls_token"),
        ("max", "pooling_mode_max_tokens"),
        ("mean_sqrt_len", "pooling_mode_mean_sqrt_len_tokens"),
        ("lasttoken", "pooling_mode_lasttoken"),
        ("mean", "pooling_mode_mean_tokens"),
    ):
        if cfg.get(key):
            return mode
    return "mean"


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Sentence embeddings from token states of right-padded sequences."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "cls":
        return hidden[:, 0]
    if mode == "max":
        return hidden.masked_fill(m == 0, float("-inf")).max(dim=1).values
    if mode == "lasttoken":
        return hidden[torch.arange(hidden.shape[0]), mask.sum(1) - 1]
    summed = (hidden * m).sum(1)
    count = m.sum(1).clamp(min=1)
    return summed / (count.sqrt() if mode == "mean_sqrt_len" else count)


class BiEncoderScorer:
    kind = "bi-encoder"
    default_instruction = None  # instructions are ignored: plain embedding models take none

    def __init__(self, model, tokenizer, *, path: Path, max_length: int, max_batch_tokens: int):
        self.model = model
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        self.max_length = max_length
        self.max_batch_tokens = max_batch_tokens
        self.pooling = read_pooling_mode(path)
        self.pad_id = pad_id_of(tokenizer)
        self.uses_token_types = "token_type_ids" in getattr(tokenizer, "model_input_names", ())

    def document_budget(self, query: str, instruction: str | None) -> int:
        return self.max_length - len(self.tokenizer("")["input_ids"])  # the document is embedded alone

    def encode(self, query: str, documents: Sequence[str], instruction: str | None):
        if not documents:
            return []
        enc = self.tokenizer([query, *documents], truncation=True, max_length=self.max_length)
        return enc["input_ids"]  # [query, doc1, doc2, ...]

    @staticmethod
    def activate(raw: float) -> float:
        return (raw + 1.0) / 2.0  # cosine in [-1, 1] -> [0, 1], same order

    def raw_scores(self, jobs) -> list[list[float]]:
        seqs = [s for texts in jobs for s in texts]
        emb: list[torch.Tensor] = run_micro_batches(seqs, [len(s) for s in seqs], self.max_batch_tokens, self._embed)  # type: ignore[arg-type]
        out: list[list[float]] = []
        for vecs in split_sizes(emb, [len(texts) for texts in jobs]):
            if not vecs:
                out.append([])
                continue
            block = torch.stack(vecs)
            out.append(torch.nn.functional.cosine_similarity(block[1:], block[:1], dim=-1).tolist())
        return out

    def _embed(self, seqs) -> torch.Tensor:
        ids, mask = pad_right(seqs, self.pad_id)
        ids_t = torch.tensor(ids, device=self.device)
        mask_t = torch.tensor(mask, device=self.device)
        kwargs = {"token_type_ids": torch.zeros_like(ids_t)} if self.uses_token_types else {}
        hidden = self.model(input_ids=ids_t, attention_mask=mask_t, **kwargs).last_hidden_state
        return pool(hidden.to(torch.float32), mask_t, self.pooling)


SPEC = KindSpec(
    name="bi-encoder",
    scorer=BiEncoderScorer,
    model_class="AutoModel",
    detect=lambda path, config: (path / "modules.json").is_file() or has_architecture("Model")(path, config),
    priority=10,
    refusals={"seq-cls": "{path} has a classification head (a cross-encoder); use RERANK_MODEL_KIND=seq-cls"},
)
