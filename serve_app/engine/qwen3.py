"""Qwen3-Reranker scoring: logit_yes - logit_no at the last position, computed cheaply.

Only the base model runs; the last position's hidden state is projected onto the two lm_head rows
(`yes`, `no`) instead of the full 151k-token vocabulary at every position. Documents are sorted by
length into token-budget micro-batches. The tokens every document of a job shares (system prompt,
instruction, query) are run once and their KV cache is reused for all documents of the job.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import DynamicCache

from .api import ModelKindError
from .batching import common_prefix_length, pad_id_of, run_micro_batches
from .kinds import KindSpec, has_architecture, left_padded, sigmoid
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
    activate = staticmethod(sigmoid)

    def __init__(
        self,
        model,
        tokenizer,
        *,
        path: Path | None = None,
        max_length: int,
        max_batch_tokens: int,
        prefix_reuse: bool = True,
    ):
        self.model = model  # kept for callers that need the full LM (the benchmark baseline)
        self.base = model.get_decoder()
        self.device = next(model.parameters()).device
        yes, no = yes_no_ids(tokenizer)
        weight = model.get_output_embeddings().weight
        # fp32 head rows: the yes-no difference of two large logits is sensitive to rounding.
        self.head = weight[[yes, no]].detach().to(torch.float32).clone()
        self.pad_id = pad_id_of(tokenizer)
        self.prompt = Qwen3PromptEncoder(tokenizer, max_length)
        self.max_batch_tokens = max_batch_tokens
        self.prefix_reuse = prefix_reuse

    def encode(self, query: str, documents: Sequence[str], instruction: str | None) -> list[list[int]]:
        return self.prompt.encode(query, documents, self.default_instruction if instruction is None else instruction)

    def raw_scores(self, jobs: Sequence[list[list[int]]]) -> list[list[float]]:
        out: list[list[float]] = [[0.0] * len(j) for j in jobs]
        pooled: list[tuple[int, int]] = []  # (job, doc) scored without prefix reuse, batched across jobs
        for j, seqs in enumerate(jobs):
            shared = self._shared_prefix(seqs)
            if shared:
                out[j] = self._score_with_prefix(seqs[0][:shared], [s[shared:] for s in seqs])
            else:
                pooled.extend((j, d) for d in range(len(seqs)))
        seqs = [jobs[j][d] for j, d in pooled]
        scores = run_micro_batches(seqs, [len(s) for s in seqs], self.max_batch_tokens, self._forward)
        for (j, d), s in zip(pooled, scores):
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
        ids_t, mask_t, pos = left_padded(seqs, self.pad_id, self.device)
        hidden = self.base(input_ids=ids_t, attention_mask=mask_t, position_ids=pos, use_cache=False).last_hidden_state
        return self._project(hidden[:, -1])

    def _score_with_prefix(self, prefix: list[int], suffixes: list[list[int]]) -> list[float]:
        p = len(prefix)
        cache = self.base(input_ids=torch.tensor([prefix], device=self.device), use_cache=True).past_key_values
        kv = [(layer.keys, layer.values) for layer in cache.layers]

        def forward(rows: list[list[int]]) -> list[float]:
            b = len(rows)
            ids_t, mask_t, pos = left_padded(rows, self.pad_id, self.device)
            full_mask = torch.cat([torch.ones(b, p, dtype=mask_t.dtype, device=self.device), mask_t], dim=1)
            rows_kv = [(k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)) for k, v in kv]
            batch_cache = DynamicCache(ddp_cache_data=rows_kv)
            hidden = self.base(
                input_ids=ids_t,
                attention_mask=full_mask,
                position_ids=p + pos,
                past_key_values=batch_cache,
                use_cache=True,
            ).last_hidden_state
            return self._project(hidden[:, -1])

        # Rows attend to the prefix too; count it once per row in the budget.
        return run_micro_batches(suffixes, [len(s) for s in suffixes], max(self.max_batch_tokens - p, 1), forward)


SPEC = KindSpec(
    name="qwen3-reranker",
    scorer=Qwen3Scorer,
    model_class="AutoModelForCausalLM",
    detect=has_architecture("ForCausalLM"),
    priority=20,
    refusals={"*": "{path} is a {detected} model, not a causal-LM reranker; use RERANK_MODEL_KIND=auto"},
)
