"""Qwen3-Reranker scoring: logit_yes - logit_no at the last position, computed cheaply.

Only the base model runs; the last position's hidden state is projected onto the two lm_head rows
(`yes`, `no`) instead of the full 151k-token vocabulary at every position. The decoder runner
(decoder_runner.py, shared with the '-seq-cls' conversions) sorts documents into token-budget
micro-batches and runs the tokens every document of a job shares (system prompt, instruction,
query) once, reusing their KV cache for all documents of the job.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from .api import ModelKindError
from .batching import pad_id_of
from .decoder_runner import DecoderRunner
from .kinds import KindSpec, has_architecture, sigmoid
from .prompt import QWEN3_DEFAULT_INSTRUCTION, Qwen3PromptEncoder


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
        yes, no = yes_no_ids(tokenizer)
        weight = model.get_output_embeddings().weight
        # fp32 head rows: the yes-no difference of two large logits is sensitive to rounding.
        self.head = weight[[yes, no]].detach().to(torch.float32).clone()
        self.prompt = Qwen3PromptEncoder(tokenizer, max_length)
        self.runner = DecoderRunner(
            self.base,
            self._project,
            pad_id=pad_id_of(tokenizer),
            max_batch_tokens=max_batch_tokens,
            prefix_reuse=prefix_reuse,
        )

    @property
    def prefix_reuse(self) -> bool:
        return self.runner.prefix_reuse

    @prefix_reuse.setter
    def prefix_reuse(self, on: bool) -> None:
        self.runner.prefix_reuse = on

    def encode(self, query: str, documents: Sequence[str], instruction: str | None) -> list[list[int]]:
        return self.prompt.encode(query, documents, self._instruction(instruction))

    def document_budget(self, query: str, instruction: str | None) -> int:
        return self.prompt.document_budget(query, self._instruction(instruction))

    def _instruction(self, instruction: str | None) -> str:
        return self.default_instruction if instruction is None else instruction

    def raw_scores(self, jobs: Sequence[list[list[int]]]) -> list[list[float]]:
        return self.runner.raw_scores(jobs)

    def _project(self, last_hidden: torch.Tensor) -> list[float]:
        logits = last_hidden.to(torch.float32) @ self.head.T
        return (logits[:, 0] - logits[:, 1]).tolist()


SPEC = KindSpec(
    name="qwen3-reranker",
    scorer=Qwen3Scorer,
    model_class="AutoModelForCausalLM",
    detect=has_architecture("ForCausalLM"),
    priority=20,
    refusals={"*": "{path} is a {detected} model, not a causal-LM reranker; use RERANK_MODEL_KIND=auto"},
)
