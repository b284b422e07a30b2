"""The contenders of bench_peers: one cross-encoder scored the ways users score it instead of this engine.

Every contender maps (query, documents) -> one raw logit per document, in input order, for one job
at a time (a user scores one query's candidates per call), with the same torch / ONNX Runtime thread
count. Loading and exporting happen before timing. The peers (sentence-transformers, ONNX Runtime,
onnx/onnxscript for the export) are the optional `peers` extra: `make bench-peers` installs them.

sentence-transformers' own ONNX backend loads models through optimum-onnx, which does not support
transformers 5; the "ONNX backend" contenders therefore run `CrossEncoder.predict` with the ONNX
Runtime session of the same export plugged in as its model, which is what that backend does (its
batching, its tokenisation, ONNX Runtime for the forward pass).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

ScoreJob = Callable[[str, list[str]], list[float]]
MAX_LENGTH = 512


@dataclass
class Contender:
    key: str  # short id for result keys
    name: str
    precision: str  # float32 | bfloat16 | int8
    score_job: ScoreJob
    peer: bool = True  # False: this engine (the thing compared against the peers)


def engine(path: Path, dtype: str) -> Contender:
    from schemas.settings import ModelSettings
    from serve_app.engine import load_engine

    eng = load_engine(ModelSettings(model=str(path), device="cpu", dtype=dtype, max_length=MAX_LENGTH))
    return Contender(
        f"engine_{eng.info.dtype}",
        f"engine {eng.info.dtype}",
        eng.info.dtype,
        lambda q, docs: eng.score(q, docs, raw_scores=True),
        peer=False,
    )


def _cross_encoder(path: Path, dtype: torch.dtype = torch.float32):
    from sentence_transformers import CrossEncoder

    return CrossEncoder(str(path), device="cpu", max_length=MAX_LENGTH, model_kwargs={"dtype": dtype})


def _predict(ce) -> ScoreJob:
    identity = torch.nn.Identity()  # raw logits, like the engine's raw_scores

    def score(q: str, docs: list[str]) -> list[float]:
        out = ce.predict([(q, d) for d in docs], activation_fn=identity, show_progress_bar=False)
        return [float(x) for x in out]

    return score


def sentence_transformers_torch(path: Path, dtype: torch.dtype = torch.float32) -> Contender:
    precision = str(dtype).removeprefix("torch.")
    name = "sentence-transformers CrossEncoder (torch" + (", bf16)" if dtype == torch.bfloat16 else ")")
    return Contender(f"st_torch_{precision}", name, precision, _predict(_cross_encoder(path, dtype)))


class _OrtSequenceClassifier(torch.nn.Module):
    """Stands in for the transformers model inside a CrossEncoder: same inputs, ONNX Runtime computes the logits."""

    def __init__(self, session, config):
        super().__init__()
        self.session, self.config = session, config
        self.names = [i.name for i in session.get_inputs()]

    def forward(self, input_ids, attention_mask, token_type_ids=None, **_: Any) -> dict[str, torch.Tensor]:
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        if given["token_type_ids"] is None:
            given["token_type_ids"] = torch.zeros_like(input_ids)
        feeds = {n: given[n].numpy() for n in self.names}
        return {"logits": torch.from_numpy(self.session.run(None, feeds)[0])}


def ort_session(onnx_file: Path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(onnx_file), opts, providers=["CPUExecutionProvider"])


def sentence_transformers_onnx(path: Path, onnx_file: Path, threads: int, precision: str) -> Contender:
    ce = _cross_encoder(path)
    transformer = ce[0]
    transformer.model = _OrtSequenceClassifier(ort_session(onnx_file, threads), transformer.model.config)
    label = "ONNX Runtime" if precision == "float32" else "ONNX Runtime, int8 dynamic quantisation"
    return Contender(f"st_onnx_{precision}", f"sentence-transformers CrossEncoder ({label})", precision, _predict(ce))


def plain_transformers(path: Path) -> Contender:
    """The model card recipe: tokenizer(pairs, padding=True) and one forward pass per job."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32).eval()

    def score(q: str, docs: list[str]) -> list[float]:
        enc = tok([q] * len(docs), docs, padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
        with torch.inference_mode():
            return model(**enc).logits[:, 0].tolist()

    return Contender("transformers_float32", "transformers (one padded batch per job)", "float32", score)


def export_onnx(path: Path) -> tuple[Path, Path]:
    """fp32 ONNX export of the model (torch.onnx, dynamo) and its int8 dynamic quantisation; cached in path/onnx."""
    out = path / "onnx"
    fp32, int8 = out / "model.onnx", out / "model_qint8.onnx"
    if fp32.is_file() and int8.is_file():
        return fp32, int8
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    t0 = time.perf_counter()
    out.mkdir(exist_ok=True)
    model = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32, attn_implementation="eager")
    tok = AutoTokenizer.from_pretrained(path)
    example = dict(
        tok(["a query", "another query"], ["a document", "a longer document text"], padding=True, return_tensors="pt")
    )
    rows, cols = torch.export.Dim("rows"), torch.export.Dim("cols")
    torch.onnx.export(
        model.eval(),
        (),
        str(fp32),
        kwargs=example,
        dynamic_shapes={k: {0: rows, 1: cols} for k in example},
        dynamo=True,
        verbose=False,
    )
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
    print(f"exported {fp32.name} and {int8.name} in {time.perf_counter() - t0:.0f}s", flush=True)
    return fp32, int8
