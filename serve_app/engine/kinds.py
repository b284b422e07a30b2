"""What a model kind is: the scorer protocol every kind implements and the spec the registry holds.

A kind is one module (its scorer class and `SPEC`) plus one line in registry.py; the engine only goes
through these two types, so nothing else changes when a kind is added. Also: helpers scorers share.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from .api import ModelKindError
from .batching import pad_left


@runtime_checkable
class KindScorer(Protocol):
    """The three stages of scoring, kept apart so tokenisation stays out of the forward pass and jobs share batches.

    encode: (query, documents, instruction) -> one job's model inputs, one item per document;
    raw_scores: several encoded jobs -> one raw score (logit, cosine) per document, jobs batched together;
    activate: raw score -> [0, 1] score, same order;
    document_budget: how many document tokens one (query, document) input holds (long_documents.py cuts
    and splits documents to it, so every kind gets truncation direction, caps and chunking alike).
    Constructed as `cls(model, tokenizer, path=..., max_length=..., max_batch_tokens=...)`.
    """

    kind: str
    default_instruction: str | None  # used when a request has none; None: the kind takes no instruction

    def encode(self, query: str, documents: Sequence[str], instruction: str | None) -> list[Any]: ...

    def raw_scores(self, jobs: Sequence[list[Any]]) -> list[list[float]]: ...

    def activate(self, raw: float) -> float: ...

    def document_budget(self, query: str, instruction: str | None) -> int: ...


def architectures(config) -> list[str]:
    return list(getattr(config, "architectures", None) or [])


def has_architecture(suffix: str) -> Callable[[Path, Any], bool]:
    """Detection predicate: the config declares an architecture whose class name ends with suffix."""
    return lambda path, config: any(a.endswith(suffix) for a in architectures(config))


@dataclass(frozen=True)
class KindSpec:
    """One registry entry: how to recognise, load and score a kind."""

    name: str  # the RERANK_MODEL_KIND value
    scorer: Callable[..., Any]  # a class implementing KindScorer
    model_class: str  # transformers Auto class that loads the weights (a name: transformers loads lazily)
    detect: Callable[[Path, Any], bool]  # (model dir, config) -> does the model look like this kind
    priority: int  # detection order, highest first: a head type must win over the bare architecture
    # Parts of weight names that must come from the checkpoint: transformers fills missing ones randomly.
    head_keys: tuple[str, ...] = ()
    # Detected kind ("*": any other kind) -> why serving it as this kind gives meaningless scores;
    # {path} and {detected} are filled in.
    refusals: Mapping[str, str] = field(default_factory=dict)

    def refusal(self, detected: str, path: Path) -> str | None:
        if detected == self.name:
            return None
        why = self.refusals.get(detected, self.refusals.get("*"))
        return why.format(path=path, detected=detected) if why else None

    def load_model(self, path: Path, dtype: torch.dtype):
        import transformers

        auto = getattr(transformers, self.model_class)
        model, info = auto.from_pretrained(path, output_loading_info=True, dtype=dtype, attn_implementation="sdpa")
        missing = [k for k in info.get("missing_keys", ()) if any(h in k for h in self.head_keys)]
        if missing:
            raise ModelKindError(
                f"{path} has no trained classification head (missing {missing[:3]}): it would give random scores"
            )
        return model


def sigmoid(raw: float) -> float:
    """Logit -> probability, in float64 so scores near 0 or 1 keep their order."""
    return float(torch.sigmoid(torch.tensor(raw, dtype=torch.float64)))


def left_padded(seqs: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids, attention mask, position ids) of left-padded rows; positions count from each row's first real token,
    so a padded row gets the same positions (and scores) as the row alone."""
    ids, mask = pad_left(seqs, pad_id)
    mask_t = torch.tensor(mask, device=device)
    return torch.tensor(ids, device=device), mask_t, (mask_t.cumsum(-1) - 1).clamp(min=0)
