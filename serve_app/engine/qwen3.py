"""Qwen3-Reranker scoring: logit_yes - logit_no at the last position, computed cheaply.

Only the base model runs; the last position's hidden state is projected onto the two lm_head rows
(`yes`, `no`) instead of the full 151k-token vocabulary at every position. Documents are sorted by
length into token-budget micro-batches. The tokens every document of a job shares (system prompt,
instruction, query) are run once and their KV cache is reused for all documents of the job.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import DynamicCache

from .api import ModelKindError
from .batching import common_prefix_length, pad_left, plan_micro_batches
from .prompt import QWEN3_DEFAULT_INSTRUCTION, Qwen3PromptEncoder

# Below this many shared tokens (or documents) a separate prefix pass costs more than it saves.
MIN_SHARED_PREFIX = 16
MIN_DOCS_FOR_PREFIX = 2


def yes_no_ids(tokenizer) -> tuple[int, int]:
    """Token ids of `yes` and `no`, looked up (never hard-coded); both must be single tokens."""
    ids = []
    for word in ("yes", "no"):
        tid = tokenizer.convert_tokens_to_ids(word)
        if tid is None or tid == tokenizer.unk_token_id or tokenizer.encode(word, add_special_tokens=False) != [tid]:
            raise ModelKindError(f"tokenizer has no single token {word!r}: not a Qwen3-Reranker-style model")
        ids.append(int(tid))
    return ids[0], ids[1]


class Qwen3Scorer:
    kind = "qwen3-reranker"
    default_instruction = QWEN3_DEFAULT_INSTRUCTION

    def __init__(self, model, tokenizer, *, max_length: int, max_batch_tokens: int, prefix_reuse: bool = True):
        self.model = model  # kept for callers that need the full LM (the benchmark baseline)
        self.base = model.get_decoder()
        self.device = next(model.parameters()).device
        yes, no = yes_no_ids(tokenizer)
        weight = model.get_output_embeddings().weight
        # fp32 head rows: the yes-no difference of two large logits is sensitive to rounding.
        self.head = weight[[yes, no]].detach().to(torch.float32).clone()
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else (tokenizer.eos_token_id or 0))
        self.prompt = Qwen3PromptEncoder(tokenizer, max_length)
        self.max_batch_tokens = max_batch_tokens
        self.prefix_reuse = prefix_reuse

    def encode(self, query: str, documents: Sequence[str], instruction: str | None) -> list[list[int]]:
        return self.prompt.encode(query, documents, instruction if instruction is not None else self.default_instruction)

    @staticmethod
    def activate(raw: float) -> float:
        return float(torch.sigmoid(torch.tensor(raw, dtype=torch.float64)))

    def raw_scores(self, jobs: Sequence[list[list[int]]]) -> list[list[float]]:
        out: list[list[float]] = [[0.0] * len(j) for j in jobs]
        pooled: list[tuple[int, int]] = []  # (job, doc) scored without prefix reuse, batched across jobs
        for j, seqs in enumerate(jobs):
            shared = self._shared_prefix(seqs)
            if shared:
                scores = self._score_with_prefix(seqs[0][:shared], [s[shared:] for s in seqs])
                out[j] = scores
            else:
                pooled.extend((j, d) for d in range(len(seqs)))
        if pooled:
            seqs = [jobs[j][d] for j, d in pooled]
            for batch in plan_micro_batches([len(s) for s in seqs], self.max_batch_tokens):
                scores = self._forward([seqs[i] for i in batch])
                for i, s in zip(batch, scores):
                    j, d = pooled[i]
                    out[j][d] = s
        return out

    def _shared_prefix(self, seqs: list[list[int]]) -> int:
        if not self.prefix_reuse or len(seqs) < MIN_DOCS_FOR_PREFIX:
            return 0
        # Every document keeps at least one token of its own, so the last position is its own.
        n = min(common_prefix_length(seqs), min(len(s) for s in seqs) - 1)
        return n if n >= MIN_SHARED_PREFIX else 0

    def _project(self, last_hidden: torch.Tensor) -> list[float]:
        logits = last_hidden.to(torch.float32) @ self.head.T
        return (logits[:, 0] - logits[:, 1]).tolist()

    def _forward(self, seqs: list[list[int]]) -> list[float]:
        ids, mask = pad_left(seqs, self.pad_id)
        ids_t = torch.tensor(ids, device=self.device)
        mask_t = torch.tensor(mask, device=self.device)
        pos = (mask_t.cumsum(-1) - 1).clamp(min=0)
        hidden = self.base(input_ids=ids_t, attention_mask=mask_t, position_ids=pos, use_cache=False).last_hidden_state
        return self._project(hidden[:, -1])

    def _score_with_prefix(self, prefix: list[int], suffixes: list[list[int]]) -> list[float]:
        p = len(prefix)
        out = self.base(input_ids=torch.tensor([prefix], device=self.device), use_cache=True)
        cache = out.past_key_values
        kv = [(layer.keys, layer.values) for layer in cache.layers]
        scores = [0.0] * len(suffixes)
        # Rows attend to the prefix too; count it once per row in the budget.
        lengths = [len(s) for s in suffixes]
        budget = max(self.max_batch_tokens - p, 1)
        for batch in plan_micro_batches(lengths, budget):
            b = len(batch)
            ids, mask = pad_left([suffixes[i] for i in batch], self.pad_id)
            ids_t = torch.tensor(ids, device=self.device)
            mask_t = torch.tensor(mask, device=self.device)
            full_mask = torch.cat([torch.ones(b, p, dtype=mask_t.dtype, device=self.device), mask_t], dim=1)
            pos = p + (mask_t.cumsum(-1) - 1).clamp(min=0)
            batch_cache = DynamicCache(ddp_cache_data=[(k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)) for k, v in kv])
            hidden = self.base(
                input_ids=ids_t, attention_mask=full_mask, position_ids=pos, past_key_values=batch_cache, use_cache=True
            ).last_hidden_state
            for i, s in zip(batch, self._project(hidden[:, -1])):
                scores[i] = s
        return scores
