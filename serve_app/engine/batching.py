"""Token-budget micro-batching (pure logic, no torch).

Padding a whole job to its longest document wastes most of the compute when lengths vary.
Sorting by length and cutting batches whose padded size (rows x longest row) stays under a token
budget removes that waste; the caller restores input order with the returned indices.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


# Measured on CPU (2 threads, jobs of 50 documents of 16-480 tokens, MiniLM cross-encoder; interleaved medians):
# caps of 0.05-0.1 were fastest (fp32 16.5-16.7 docs/s, bf16 ~37), 0.2 gave 13.1 / 28, 1.0 (no cap) 14.6 fp32;
# more, smaller forward passes cost less than the padding they avoid. 0.0 (one length per pass) was slowest.
MAX_PADDING = 0.1


def plan_micro_batches(
    lengths: Sequence[int], max_batch_tokens: int, max_padding: float = MAX_PADDING
) -> list[list[int]]:
    """Group item indices into batches, shortest first, each with rows*max_len <= max_batch_tokens
    and at most ``max_padding`` of its padded tokens being padding.

    The padding cap matters as much as the budget: a whole job often fits one budget, and padding
    it to its longest document is exactly the waste this module exists to remove. Small batches
    of similar lengths cost little (on CPU nothing; on GPU the budget still fills rows when
    lengths are alike). An item longer than the budget gets a batch of its own (it must still be
    scored). Every index appears exactly once.
    """
    if max_batch_tokens < 1:
        raise ValueError("max_batch_tokens must be positive")
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    real = 0  # real (unpadded) tokens of the current batch
    for i in order:
        longest = lengths[i]  # ascending order: the new item is the longest so far
        padded = (len(current) + 1) * longest
        if current and (padded > max_batch_tokens or padded - (real + longest) > max_padding * padded):
            batches.append(current)
            current, real = [], 0
        current.append(i)
        real += longest
    if current:
        batches.append(current)
    return batches


def run_micro_batches(
    items: Sequence[T], lengths: Sequence[int], max_batch_tokens: int, fn: Callable[[list[T]], Sequence[R]]
) -> list[R]:
    """fn over the planned micro-batches of items (fn returns one result per item); results in input order."""
    out: list = [None] * len(items)
    for batch in plan_micro_batches(lengths, max_batch_tokens):
        for i, r in zip(batch, fn([items[i] for i in batch])):
            out[i] = r
    return out


def split_sizes(flat: Sequence[R], sizes: Sequence[int]) -> list[list[R]]:
    """Cut a flat list back into consecutive pieces of the given sizes (one per job)."""
    out, k = [], 0
    for n in sizes:
        out.append(list(flat[k : k + n]))
        k += n
    return out


def pad_id_of(tokenizer) -> int:
    """Padding token id: the tokenizer's pad token, else its eos token (decoders often have no pad), else 0.

    Padded positions are masked out, so the choice only has to be a valid id.
    """
    pad = tokenizer.pad_token_id
    return int(pad if pad is not None else (tokenizer.eos_token_id or 0))


def pad_left(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[list[list[int]], list[list[int]]]:
    """Left-pad token id lists to a common length; returns (ids, attention_mask).

    Left padding keeps every sequence's last real token at the last position, which is where
    a causal reranker is read.
    """
    width = max((len(s) for s in seqs), default=0)
    ids = [[pad_id] * (width - len(s)) + list(s) for s in seqs]
    mask = [[0] * (width - len(s)) + [1] * len(s) for s in seqs]
    return ids, mask


def pad_right(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[list[list[int]], list[list[int]]]:
    """Right-pad token id lists (encoder models, which pool over the mask)."""
    width = max((len(s) for s in seqs), default=0)
    ids = [list(s) + [pad_id] * (width - len(s)) for s in seqs]
    mask = [[1] * len(s) + [0] * (width - len(s)) for s in seqs]
    return ids, mask


def common_prefix_length(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the longest token prefix shared by all sequences (0 for none)."""
    if not seqs:
        return 0
    first = seqs[0]
    n = min(len(s) for s in seqs)
    for s in seqs[1:]:
        k = 0
        while k < n and s[k] == first[k]:
            k += 1
        n = k
        if n == 0:
            break
    return n
