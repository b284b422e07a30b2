"""Causal-decoder rerankers read at the last position, with the shared prompt prefix computed once per job.

Both decoder kinds use it: the causal Qwen3-Reranker (head = the lm_head rows of `yes` and `no`) and
its '-seq-cls' conversions (head = the one-label score layer). Every document of a job starts with
the same tokens (system prompt, instruction, query): they are run once, and their KV cache is
shared by all of the job's documents, which then run only their own tokens. Rows are left-padded,
so every row's last real token sits at the last position; documents are sorted by length into
token-budget micro-batches. Plain Qwen3 stacks run the lean forward of qwen3_stack.py; any other
decoder runs its generic transformers forward with a KV cache.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from transformers import DynamicCache

from .batching import common_prefix_length, run_micro_batches
from .kinds import left_padded
from .qwen3_stack import Qwen3Stack, supports

# Below this many shared tokens (or documents) a separate prefix pass costs more than it saves.
MIN_SHARED_PREFIX = 16
MIN_DOCS_FOR_PREFIX = 2

Head = Callable[[torch.Tensor], list[float]]  # last positions' hidden states [rows, hidden] -> one raw score per row


class DecoderRunner:
    """Raw scores of encoded jobs (lists of token id lists) from a decoder's last position."""

    def __init__(self, base, head: Head, *, pad_id: int, max_batch_tokens: int, prefix_reuse: bool = True):
        self.base = base  # the decoder stack without an LM or classification head
        self.head = head
        self.device = next(base.parameters()).device
        self.pad_id = pad_id
        self.max_batch_tokens = max_batch_tokens
        self.prefix_reuse = prefix_reuse
        self.stack = Qwen3Stack(base, pad_id) if supports(base) else None  # None: the generic forward

    def raw_scores(self, jobs: Sequence[list[list[int]]]) -> list[list[float]]:
        out: list[list[float]] = [[0.0] * len(j) for j in jobs]
        pooled: list[tuple[int, int]] = []  # (job, doc) scored without prefix reuse, batched across jobs
        for j, seqs in enumerate(jobs):
            shared = self.shared_prefix(seqs)
            if shared:
                out[j] = self._score_with_prefix(seqs[0][:shared], [s[shared:] for s in seqs])
            else:
                pooled.extend((j, d) for d in range(len(seqs)))
        seqs = [jobs[j][d] for j, d in pooled]
        scores = run_micro_batches(seqs, [len(s) for s in seqs], self.max_batch_tokens, self._forward)
        for (j, d), s in zip(pooled, scores):
            out[j][d] = s
        return out

    def shared_prefix(self, seqs: Sequence[Sequence[int]]) -> int:
        """Tokens of a job run once for all its documents (0: no reuse)."""
        if not self.prefix_reuse or len(seqs) < MIN_DOCS_FOR_PREFIX:
            return 0
        # Every document keeps at least one token of its own, so the last position is its own.
        n = min(common_prefix_length(seqs), min(len(s) for s in seqs) - 1)
        return n if n >= MIN_SHARED_PREFIX else 0

    def _forward(self, seqs: list[list[int]]) -> list[float]:
        if self.stack is not None:
            return self.head(self.stack.last_hidden(seqs))
        ids_t, mask_t, pos = left_padded(seqs, self.pad_id, self.device)
        hidden = self.base(input_ids=ids_t, attention_mask=mask_t, position_ids=pos, use_cache=False).last_hidden_state
        return self.head(hidden[:, -1])

    def _score_with_prefix(self, prefix: list[int], suffixes: list[list[int]]) -> list[float]:
        p = len(prefix)
        stack = self.stack
        if stack is not None:
            kv = stack.prefix_kv(prefix)
        else:
            cache = self.base(input_ids=torch.tensor([prefix], device=self.device), use_cache=True).past_key_values
            kv = [(layer.keys, layer.values) for layer in cache.layers]

        def forward(rows: list[list[int]]) -> list[float]:
            if stack is not None:
                return self.head(stack.last_hidden(rows, kv))
            b = len(rows)
            ids_t, mask_t, pos = left_padded(rows, self.pad_id, self.device)
            full_mask = torch.cat([torch.ones(b, p, dtype=mask_t.dtype, device=self.device), mask_t], dim=1)
            rows_kv = [(k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)) for k, v in kv]
            hidden = self.base(
                input_ids=ids_t,
                attention_mask=full_mask,
                position_ids=p + pos,
                past_key_values=DynamicCache(ddp_cache_data=rows_kv),
                use_cache=True,
            ).last_hidden_state
            return self.head(hidden[:, -1])

        # Rows attend to the prefix too; count it once per row in the budget.
        return run_micro_batches(suffixes, [len(s) for s in suffixes], max(self.max_batch_tokens - p, 1), forward)
