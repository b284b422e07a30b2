"""The official Qwen3-Reranker recipe, written plainly: the yardstick for parity tests and the benchmark.

Deliberately naive and independent of the engine's code paths: one left-padded batch per call,
the full vocabulary projection at every position (model(...).logits), softmax over [no, yes] at
the last position. Only the prompt strings are shared (they are facts, not logic).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from serve_app.engine.prompt import QWEN3_DEFAULT_INSTRUCTION, QWEN3_PREFIX, QWEN3_SUFFIX


@torch.no_grad()
def official_recipe_scores(
    model, tokenizer, query: str, documents: Sequence[str], instruction: str | None = None, max_length: int = 8192
) -> tuple[list[float], list[float]]:
    """(probabilities of `yes`, logit_yes - logit_no) for each document, one padded batch."""
    instruction = QWEN3_DEFAULT_INSTRUCTION if instruction is None else instruction
    prefix = tokenizer.encode(QWEN3_PREFIX, add_special_tokens=False)
    suffix = tokenizer.encode(QWEN3_SUFFIX, add_special_tokens=False)
    pairs = [f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {d}" for d in documents]
    enc = tokenizer(
        pairs,
        padding=False,
        truncation="longest_first",
        return_attention_mask=False,
        max_length=max_length - len(prefix) - len(suffix),
    )
    seqs = [prefix + ids + suffix for ids in enc["input_ids"]]
    width = max(len(s) for s in seqs)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(s)) + s for s in seqs])
    attention_mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs])
    device = next(model.parameters()).device
    logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits[:, -1, :]
    yes = tokenizer.convert_tokens_to_ids("yes")
    no = tokenizer.convert_tokens_to_ids("no")
    pair = torch.stack([logits[:, no], logits[:, yes]], dim=1).float()
    probs = torch.nn.functional.log_softmax(pair, dim=1)[:, 1].exp()
    return probs.tolist(), (pair[:, 1] - pair[:, 0]).tolist()
