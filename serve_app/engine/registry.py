"""The model-kind registry: RERANK_MODEL_KIND value -> KindSpec. Adding a kind = its module + one line here.

Detection and the kind checks read this table only, so they can never disagree with what can be loaded.
"""

from __future__ import annotations

from pathlib import Path

from . import bi_encoder, qwen3, seq_cls
from .api import ModelKindError
from .kinds import KindSpec, architectures

_BUILTIN = (  # one line per kind
    qwen3.SPEC,
    seq_cls.SPEC,
    bi_encoder.SPEC,
)
KINDS: dict[str, KindSpec] = {spec.name: spec for spec in _BUILTIN}


def kind_choices() -> tuple[str, ...]:
    """The values RERANK_MODEL_KIND accepts."""
    return ("auto", *KINDS)


def detect_kind(path: Path, config) -> str:
    """Model kind from the model's own files: the registered predicates, highest priority first."""
    for spec in sorted(KINDS.values(), key=lambda s: -s.priority):
        if spec.detect(path, config):
            return spec.name
    raise ModelKindError(
        f"cannot tell the kind of model at {path} (architectures={architectures(config)}); set RERANK_MODEL_KIND"
    )


def check_kind(requested: str, detected: str, path: Path) -> str:
    """The kind to serve; refuses combinations that silently give meaningless scores."""
    if requested == "auto":
        return detected
    spec = KINDS.get(requested)
    if spec is None:
        raise ModelKindError(f"RERANK_MODEL_KIND={requested!r} is not one of {', '.join(kind_choices())}")
    why = spec.refusal(detected, path)
    if why:
        raise ModelKindError(why)
    return requested
