"""Sequence-classification cross-encoders: one logit per (query, document) pair, score = sigmoid.

Encoder cross-encoders (BERT, XLM-R: BGE-reranker, ms-marco MiniLM) take the pair as two segments
and only the document is truncated. Decoder conversions of Qwen3-Reranker ('-seq-cls') need the
Qwen3 prompt, so they reuse the Qwen3 prompt encoder and left padding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .api import ModelKindError
from .batching import pad_left, pad_right, plan_micro_batches
from .prompt import QWEN3_DEFAULT_INSTRUCTION, Qwen3PromptEncoder


def uses_qwen3_prompt(config, tokenizer) -> bool:
    return str(getattr(config, "model_type", "")).startswith("qwen") and "<|im_start|>" in tokenizer.get_vocab()


class SeqClsScorer:
    kind = "seq-cls"

    def __init__(self, model, tokenizer, *, max_length: int, max_batch_tokens: int):
        if int(getattr(model.config, "num_labels", 1)) != 1:
            raise ModelKindError(f"seq-cls models must have one output label, this one has {model.config.num_labels}")
        self.model = model
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        self.max_length = max_length
        self.max_batch_tokens = max_batch_tokens
        self.decoder = uses_qwen3_prompt(model.config, tokenizer)
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else (tokenizer.eos_token_id or 0))
        if self.decoder:
            self.prompt = Qwen3PromptEncoder(tokenizer, max_length)
            if model.config.pad_token_id is None:  # the head finds the last non-pad token by this id
                model.config.pad_token_id = self.pad_id
        self.default_instruction = QWEN3_DEFAULT_INSTRUCTION if self.decoder else None

    def encode(self, query: str, documents: Sequence[str], instruction: str | None):
        if not documents:
            return []
        if self.decoder:
            return [(ids, None) for ids in self.prompt.encode(query, documents, instruction or self.default_instruction)]
        queries = [query] * len(documents)
        try:
            enc = self.tokenizer(queries, list(documents), truncation="only_second", max_length=self.max_length)
        except Exception:  # the query alone exceeds max_length: truncate both, query last resort
            enc = self.tokenizer(queries, list(documents), truncation="longest_first", max_length=self.max_length)
        types = enc.get("token_type_ids") or [None] * len(documents)
        return list(zip(enc["input_ids"], types))

    @staticmethod
    def activate(raw: float) -> float:
        return float(torch.sigmoid(torch.tensor(raw, dtype=torch.float64)))

    def raw_scores(self, jobs) -> list[list[float]]:
        flat = [(j, d) for j, items in enumerate(jobs) for d in range(len(items))]
        items = [jobs[j][d] for j, d in flat]
        out: list[list[float]] = [[0.0] * len(items_j) for items_j in jobs]
        for batch in plan_micro_batches([len(ids) for ids, _ in items], self.max_batch_tokens):
            for i, s in zip(batch, self._forward([items[i] for i in batch])):
                j, d = flat[i]
                out[j][d] = s
        return out

    def _forward(self, items) -> list[float]:
        seqs = [ids for ids, _ in items]
        kwargs = {}
        if self.decoder:
            ids, mask = pad_left(seqs, self.pad_id)
            mask_t = torch.tensor(mask, device=self.device)
            kwargs["position_ids"] = (mask_t.cumsum(-1) - 1).clamp(min=0)
        else:
            ids, mask = pad_right(seqs, self.pad_id)
            mask_t = torch.tensor(mask, device=self.device)
            if items[0][1] is not None:
                types, _ = pad_right([t for _, t in items], 0)
                kwargs["token_type_ids"] = torch.tensor(types, device=self.device)
        logits = self.model(input_ids=torch.tensor(ids, device=self.device), attention_mask=mask_t, **kwargs).logits
        return logits[:, 0].to(torch.float32).tolist()
