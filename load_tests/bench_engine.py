"""Engine vs the naive official Qwen3-Reranker recipe, same model, same inputs, same run.

The model is the real Qwen3-Reranker-0.6B architecture (28 layers, width 1024, vocab 151,669) with
random weights, so the cost profile is the true one. Document lengths are uniform in 16-512 tokens,
multilingual. Baseline: one left-padded batch per job with full-vocabulary logits. Engine: the
served path (last-position yes/no logits, length-sorted token-budget micro-batches, shared-prefix
KV reuse, the lean Qwen3 forward). Both run in each of ``--dtypes`` (default fp32, then the engine's
default dtype: bf16 on CUDA and on CPUs with native bf16), the recipe in the same dtype as the
engine; baseline and engine take turns, and timings are medians over repetitions. The accuracy cost
of the cheaper dtype is the engine in it against the engine in fp32 on this corpus: max abs diff,
top-10 overlap, Kendall tau (``bf16_*``). The LAST stdout line is one JSON object.

    python -m load_tests.bench_engine [--quick] [--save]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch

from load_tests.accuracy import compare_scores
from schemas.settings import ModelSettings
from serve_app.engine import load_engine
from tests.support.reference_recipe import official_recipe_scores
from tests.support.synthetic_models import build_qwen3_reranker_0_6b_random, training_corpus

QUERY = "Which passages explain how the capital city's public transport and museums attract tourists?"
INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"


def model_dir(num_layers: int) -> Path:
    """Build the random 0.6B checkpoint once and keep it in the user cache (1.2 GB, bf16)."""
    path = Path.home() / ".cache" / "rerank-stream" / f"qwen3-reranker-0.6b-random-L{num_layers}"
    if not (path / "config.json").is_file():
        t0 = time.perf_counter()
        build_qwen3_reranker_0_6b_random(path, num_layers=num_layers)
        print(f"built random 0.6B checkpoint at {path} in {time.perf_counter() - t0:.1f}s", flush=True)
    return path


def make_documents(tokenizer, n: int, rng: random.Random, shortest: int = 16, longest: int = 512) -> list[str]:
    """n multilingual documents with token lengths uniform in shortest-longest."""
    sentences = [s for s in training_corpus()[:17]]
    docs = []
    for _ in range(n):
        target = rng.randint(shortest, longest)
        ids: list[int] = []
        while len(ids) < target:
            ids += tokenizer.encode(rng.choice(sentences) + " ", add_special_tokens=False)
        docs.append(tokenizer.decode(ids[:target]))
    return docs


def flops_ratio(config, tokenizer, jobs: list[list[str]]) -> float:
    """Recipe FLOPs / engine FLOPs on these jobs: the speedup an engine running its matrix products exactly as
    efficiently as the recipe's would reach (the compute bound of ``speedup``).

    Recipe: every row padded to its job's longest, full attention over the padded width, the vocabulary
    projection at every position. Engine (counted low: real tokens only, no micro-batch padding, the
    last layer in full): the shared prefix once, each document's own tokens attending to the prefix and
    causally to themselves, two head rows per document.
    """
    from serve_app.engine.batching import common_prefix_length
    from serve_app.engine.prompt import QWEN3_PREFIX, QWEN3_SUFFIX

    c = config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    q_dim, kv_dim = c.num_attention_heads * head_dim, c.num_key_value_heads * head_dim
    linear = 2 * (c.hidden_size * (2 * q_dim + 2 * kv_dim) + 3 * c.hidden_size * c.intermediate_size)  # per token
    layers = c.num_hidden_layers

    def attention(queries: float, keys: float) -> float:  # QK^T and PV
        return 4 * queries * keys * q_dim * layers

    prefix = tokenizer.encode(QWEN3_PREFIX, add_special_tokens=False)
    suffix = tokenizer.encode(QWEN3_SUFFIX, add_special_tokens=False)
    recipe = engine = 0.0
    for docs in jobs:
        pairs = [f"<Instruct>: {INSTRUCTION}\n<Query>: {QUERY}\n<Document>: {d}" for d in docs]
        seqs = [prefix + ids + suffix for ids in tokenizer(pairs, add_special_tokens=False)["input_ids"]]
        width = max(len(q) for q in seqs)
        recipe += len(seqs) * width * (linear * layers + 2 * c.hidden_size * c.vocab_size) + len(seqs) * attention(
            width, width
        )
        shared = min(common_prefix_length(seqs), min(len(q) for q in seqs) - 1)
        engine += shared * linear * layers + attention(shared, shared / 2)
        for q in seqs:
            own = len(q) - shared
            engine += own * linear * layers + attention(own, shared + own / 2) + 2 * 2 * c.hidden_size
    return recipe / engine


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def interleaved(
    fns: dict[str, Callable[[], object]], repeats: int
) -> tuple[dict[str, float], dict[str, object], dict[str, float]]:
    """Median seconds of each function, run in turns (a, b, a, b, ...) so load drift hits all alike; last results;
    and the best (least disturbed) seconds of each, since on a shared machine noise only ever adds time."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    results: dict[str, object] = {}
    for _ in range(repeats):
        for name, fn in fns.items():
            _sync()
            t0 = time.perf_counter()
            results[name] = fn()
            _sync()
            times[name].append(time.perf_counter() - t0)
            print(f"  {name}: {times[name][-1]:.2f}s", flush=True)
    return {name: statistics.median(t) for name, t in times.items()}, results, {n: min(t) for n, t in times.items()}


def run_dtype(args, dtype: str, jobs_of_tokenizer, repeats: int) -> dict:
    """Official recipe vs engine in one dtype, same model, same inputs; scores returned for accuracy comparisons."""
    t0 = time.perf_counter()
    engine = load_engine(
        ModelSettings(model=str(model_dir(28)), device=args.device, dtype=dtype, max_batch_tokens=args.max_batch_tokens)
    )
    print(
        f"loaded {engine.info.fingerprint} on {engine.info.device} ({engine.info.dtype}) in "
        f"{time.perf_counter() - t0:.1f}s",
        flush=True,
    )
    model, tokenizer = engine._scorer.model, engine._tokenizer  # type: ignore[attr-defined]
    jobs = jobs_of_tokenizer(tokenizer)
    # warm-up both paths on a tiny input (allocator, kernels)
    engine.score(QUERY, ["warm up"], INSTRUCTION)
    official_recipe_scores(model, tokenizer, QUERY, ["warm up"], INSTRUCTION)

    def run_baseline():
        with torch.inference_mode():
            return [official_recipe_scores(model, tokenizer, QUERY, job, INSTRUCTION)[0] for job in jobs]

    def run_engine():
        return [engine.score(QUERY, job, INSTRUCTION) for job in jobs]

    secs, scores, best = interleaved({"baseline": run_baseline, "engine": run_engine}, repeats)
    total = sum(len(j) for j in jobs)
    lengths = [n for job in jobs for n in engine.count_tokens(job)]
    out = {
        "dtype": engine.info.dtype,
        "baseline_docs_per_s": round(total / secs["baseline"], 3),
        "engine_docs_per_s": round(total / secs["engine"], 3),
        "speedup": round(secs["baseline"] / secs["engine"], 3),
        "speedup_best": round(best["baseline"] / best["engine"], 3),
        "flops_ratio": round(flops_ratio(model.config, tokenizer, jobs), 3),
        "max_abs_diff": compare_scores(scores["baseline"], scores["engine"])["max_abs_diff"],  # type: ignore[arg-type]
        "scores": scores["engine"],
        "lengths": lengths,
        "device": engine.info.device,
    }
    print(
        f"{out['dtype']}: baseline {out['baseline_docs_per_s']} docs/s, engine {out['engine_docs_per_s']} docs/s",
        flush=True,
    )
    return out  # the model goes with this frame


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--quick",
        action="store_true",
        help="one job of 12 documents, one repetition per dtype (< 5 min on 2 CPU cores)",
    )
    ap.add_argument("--save", action="store_true", help="write load_tests/results/engine-<UTC timestamp>.json")
    ap.add_argument("--jobs", type=int, help="jobs (default 1 quick, 3 full)")
    ap.add_argument("--docs", type=int, help="documents per job (default 12 quick, 50 full CPU, 100 full GPU)")
    ap.add_argument("--repeats", type=int, help="interleaved repetitions, medians reported (default 1 quick, 3 full)")
    ap.add_argument("--device", default="auto")
    ap.add_argument(
        "--dtypes",
        default="float32,auto",
        help="dtypes to measure, first = the reference for the accuracy cost of the others; auto = bfloat16 on CUDA "
        "and on CPUs with native bf16 (AMX, AVX512-BF16), else float32 (then measured once)",
    )
    ap.add_argument("--max-batch-tokens", type=int, default=16384)
    args = ap.parse_args(argv)
    gpu = torch.cuda.is_available() and args.device != "cpu"
    jobs_n = args.jobs or (1 if args.quick else 3)
    docs_n = args.docs or (12 if args.quick else (100 if gpu else 50))
    repeats = args.repeats or (1 if args.quick else 3)
    model_dir(28)  # build once, before any timing

    def jobs_of(tokenizer) -> list[list[str]]:
        rng = random.Random(0)
        return [make_documents(tokenizer, docs_n, rng) for _ in range(jobs_n)]

    runs: list[dict] = []
    for dtype in args.dtypes.split(","):
        run = run_dtype(args, dtype, jobs_of, repeats)
        gc.collect()  # one model copy at a time
        if all(r["dtype"] != run["dtype"] for r in runs):
            runs.append(run)
    ref = runs[0]
    lengths = ref["lengths"]
    result = {
        k: ref[k]
        for k in ("baseline_docs_per_s", "engine_docs_per_s", "speedup", "speedup_best", "flops_ratio", "max_abs_diff")
    }
    for other in runs[1:]:
        tag = {"bfloat16": "bf16", "float16": "fp16"}.get(other["dtype"], other["dtype"])
        result.update(
            {f"{tag}_{k}": other[k] for k in ("baseline_docs_per_s", "engine_docs_per_s", "speedup", "speedup_best")}
        )
        result[f"{tag}_vs_recipe_max_abs_diff"] = other["max_abs_diff"]  # same dtype on both sides
        # what the cheaper dtype costs: the engine in it against the engine in the reference dtype
        result.update({f"{tag}_{k}": v for k, v in compare_scores(ref["scores"], other["scores"]).items()})
    result.update(
        {
            "model": "Qwen3-Reranker-0.6B architecture (28 layers, random weights)",
            "device": ref["device"] if not gpu else torch.cuda.get_device_name(),
            "dtype": ref["dtype"],
            "jobs": jobs_n,
            "docs_per_job": docs_n,
            "repeats": repeats,
            "mean_doc_tokens": round(statistics.mean(lengths), 1),
            "torch_threads": torch.get_num_threads(),
        }
    )
    if gpu:
        result["peak_gpu_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    if args.save:
        from load_tests.report import write_run

        write_run("engine", result)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
