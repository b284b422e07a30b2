"""Sequence-classification cross-encoders: one logit per (query, document) pair, score = sigmoid.

Encoder cross-encoders (BERT, XLM-R: BGE-reranker, ms-marco MiniLM) take the pair as two segments
and only the document is truncated. Decoder conversions of Qwen3-Reranker ('-seq-cls') need the
Qwen3 prompt, so they reuse the Qwen3 prompt encoder and the causal kind's decoder runner (left
padding, the job's shared prompt prefix computed once), with the score layer as the head.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from .api import ModelKindError
from .batching import pad_id_of, pad_right, run_micro_batches, split_sizes
from .decoder_runner import DecoderRunner
from .kinds import KindSpec, has_architecture, sigmoid
from .prompt import QWEN3_DEFAULT_INSTRUCTION, Qwen3PromptEncoder


def uses_qwen3_prompt(config, tokenizer) -> bool:
    return str(getattr(config, "model_type", "")).startswith("qwen") and "<|im_start|>" in tokenizer.get_vocab()


class SeqClsScorer:
    kind = "seq-cls"
    activate = staticmethod(sigmoid)

    def __init__(self, model, tokenizer, *, path: Path | None = None, max_length: int, max_batch_tokens: int):
        if int(getattr(model.config, "num_labels", 1)) != 1:
            raise ModelKindError(f"seq-cls models must have one output label, this one has {model.config.num_labels}")
        self.model = model
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        self.max_length = max_length
        self.max_batch_tokens = max_batch_tokens
        self.decoder = uses_qwen3_prompt(model.config, tokenizer)
        self.pad_id = pad_id_of(tokenizer)
        if self.decoder:
            self.prompt = Qwen3PromptEncoder(tokenizer, max_length)
            head = model.score  # read at the last position (left padding), not via pad_token_id
            # fp32 like the causal kind's yes/no rows: the score is one large dot product.
            self._head_weight = head.weight.detach().to(torch.float32).clone()
            self._head_bias = None if head.bias is None else head.bias.detach().to(torch.float32).clone()
            self.runner = DecoderRunner(
                model.base_model, self._project, pad_id=self.pad_id, max_batch_tokens=max_batch_tokens
            )
        self.default_instruction = QWEN3_DEFAULT_INSTRUCTION if self.decoder else None

    def document_budget(self, query: str, instruction: str | None) -> int:
        if self.decoder:
            return self.prompt.document_budget(query, self._instruction(instruction))
        return self.max_length - len(self.tokenizer(query, "")["input_ids"])  # [CLS] query [SEP] ... [SEP]

    def _instruction(self, instruction: str | None) -> str:
        return instruction or self.default_instruction or ""

    def encode(self, query: str, documents: Sequence[str], instruction: str | None):
        if not documents:
            return []
        if self.decoder:
            seqs = self.prompt.encode(query, documents, self._instruction(instruction))
            return [(ids, None) for ids in seqs]
        queries = [query] * len(documents)
        try:
            enc = self.tokenizer(queries, list(documents), truncation="only_second", max_length=self.max_length)
        except Exception:  # noqa: BLE001 - the query alone exceeds max_length: truncate both, query last resort
            enc = self.tokenizer(queries, list(documents), truncation="longest_first", max_length=self.max_length)
        types = enc.get("token_type_ids") or [None] * len(documents)
        return list(zip(enc["input_ids"], types))

    def raw_scores(self, jobs) -> list[list[float]]:
        if self.decoder:
            return self.runner.raw_scores([[ids for ids, _ in job] for job in jobs])
        items = [item for job in jobs for item in job]
        flat = run_micro_batches(items, [len(ids) for ids, _ in items], self.max_batch_tokens, self._forward)
        return split_sizes(flat, [len(job) for job in jobs])

    def _project(self, last_hidden: torch.Tensor) -> list[float]:
        logits = last_hidden.to(torch.float32) @ self._head_weight.T
        if self._head_bias is not None:
            logits = logits + self._head_bias
        return logits[:, 0].tolist()

    def _forward(self, items) -> list[float]:
        ids, mask = pad_right([ids for ids, _ in items], self.pad_id)
        ids_t, mask_t = torch.tensor(ids, device=self.device), torch.tensor(mask, device=self.device)
        kwargs = {}
        if items[0][1] is not None:
            types, _ = pad_right([t for _, t in items], 0)
            kwargs["token_type_ids"] = torch.tensor(types, device=self.device)
        logits = self.model(input_ids=ids_t, attention_mask=mask_t, **kwargs).logits
        return logits[:, 0].to(torch.float32).tolist()


SPEC = KindSpec(
    name="seq-cls",
    scorer=SeqClsScorer,
    model_class="AutoModelForSequenceClassification",
    detect=has_architecture("ForSequenceClassification"),
    priority=30,
    head_keys=("score", "classifier", "head"),
    refusals={
        "qwen3-reranker": (
            "{path} is a causal LM (e.g. the original Qwen3-Reranker checkpoint): loading it as a sequence "
            "classifier attaches a random head and gives random scores. Use RERANK_MODEL_KIND=qwen3-reranker "
            "(or auto), or a converted '-seq-cls' checkpoint."
        ),
    },
)
