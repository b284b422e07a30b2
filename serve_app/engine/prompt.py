"""The Qwen3-Reranker prompt (official recipe) and its tokenisation.

Kept apart from the model code so the exact strings live in one place: the model was trained on
them and one character off changes every score. Tokenisation follows the official recipe: the
body is tokenised alone and truncated (from the end, so only the document loses tokens), then the
prefix and suffix ids are added around it and are never truncated.
"""

from __future__ import annotations

from collections.abc import Sequence

QWEN3_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
    'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
QWEN3_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
QWEN3_DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"


def qwen3_body(query: str, document: str, instruction: str) -> str:
    """The user turn of one (instruction, query, document) pair, exactly as the model was trained."""
    return f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}"


class Qwen3PromptEncoder:
    """Turns (query, documents, instruction) into token id lists of the full prompt.

    Prefix and suffix ids are computed once; the per-pair work is one batched tokenizer call.
    """

    def __init__(self, tokenizer, max_length: int):
        self.tokenizer = tokenizer
        self.prefix_ids: list[int] = tokenizer.encode(QWEN3_PREFIX, add_special_tokens=False)
        self.suffix_ids: list[int] = tokenizer.encode(QWEN3_SUFFIX, add_special_tokens=False)
        self.max_length = max_length
        self.body_budget = max_length - len(self.prefix_ids) - len(self.suffix_ids)
        if self.body_budget < 16:
            raise ValueError(f"max_length {max_length} leaves no room for the prompt body")

    def document_budget(self, query: str, instruction: str) -> int:
        """Document tokens that fit next to this instruction and query (the body's fixed part is never cut)."""
        fixed = self.tokenizer(qwen3_body(query, "", instruction), add_special_tokens=False)["input_ids"]
        return self.body_budget - len(fixed)

    def encode(self, query: str, documents: Sequence[str], instruction: str) -> list[list[int]]:
        if not documents:
            return []
        bodies = [qwen3_body(query, d, instruction) for d in documents]
        enc = self.tokenizer(
            bodies,
            add_special_tokens=False,
            truncation=True,
            max_length=self.body_budget,
            return_attention_mask=False,
        )
        return [self.prefix_ids + ids + self.suffix_ids for ids in enc["input_ids"]]
