"""Engine vs the naive official Qwen3-Reranker recipe, same model, same inputs, same run.

The model is the real Qwen3-Reranker-0.6B architecture (28 layers, width 1024, vocab 151,669) with
random weights, so the cost profile is the true one. Document lengths are uniform in 16-512 tokens,
multilingual. Baseline: one left-padded batch per job with full-vocabulary logits. Engine: the
served path (last-position yes/no logits, length-sorted token-budget micro-batches, shared-prefix
KV reuse). Timings are medians over repetitions; the LAST stdout line is one JSON object.

    python -m load_tests.bench_engine [--quick] [--save]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch

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


def make_documents(tokenizer, n: int, rng: random.Random) -> list[str]:
    """n multilingual documents with token lengths uniform in 16-512."""
    sentences = [s for s in training_corpus()[:17]]
    docs = []
    for _ in range(n):
        target = rng.randint(16, 512)
        ids: list[int] = []
        while len(ids) < target:
            ids += tokenizer.encode(rng.choice(sentences) + " ", add_special_tokens=False)
        docs.append(tokenizer.decode(ids[:target]))
    return docs


def timed(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        result = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--quick", action="store_true", help="one job of 12 documents, one repetition (< 3 min on 2 CPU cores)"
    )
    ap.add_argument("--save", action="store_true", help="write load_tests/results/engine-<UTC timestamp>.json")
    ap.add_argument("--jobs", type=int, help="jobs (default 1 quick, 3 full)")
    ap.add_argument("--docs", type=int, help="documents per job (default 12 quick, 50 full CPU, 100 full GPU)")
    ap.add_argument("--repeats", type=int, help="timed repetitions, median reported (default 1 quick, 3 full)")
    ap.add_argument("--device", default="auto")
    ap.add_argument(
        "--dtype",
        default="auto",
        help="auto = bfloat16 on CUDA and on CPUs with native bf16 (AMX, AVX512-BF16), else float32",
    )
    ap.add_argument("--max-batch-tokens", type=int, default=16384)
    args = ap.parse_args(argv)
    gpu = torch.cuda.is_available() and args.device != "cpu"
    jobs_n = args.jobs or (1 if args.quick else 3)
    docs_n = args.docs or (12 if args.quick else (100 if gpu else 50))
    repeats = args.repeats or (1 if args.quick else 3)

    path = model_dir(28)
    t0 = time.perf_counter()
    engine = load_engine(
        ModelSettings(model=str(path), device=args.device, dtype=args.dtype, max_batch_tokens=args.max_batch_tokens)
    )
    print(
        f"loaded {engine.info.fingerprint} on {engine.info.device} ({engine.info.dtype}) in "
        f"{time.perf_counter() - t0:.1f}s",
        flush=True,
    )
    model, tokenizer = engine._scorer.model, engine._tokenizer  # type: ignore[attr-defined]
    rng = random.Random(0)
    jobs = [make_documents(tokenizer, docs_n, rng) for _ in range(jobs_n)]
    total_docs = jobs_n * docs_n
    lengths = [n for job in jobs for n in engine.count_tokens(job)]
    print(
        f"workload: {jobs_n} job(s) x {docs_n} docs, doc tokens {min(lengths)}-{max(lengths)} "
        f"(mean {statistics.mean(lengths):.0f})",
        flush=True,
    )

    # warm-up both paths on a tiny input (allocator, kernels)
    engine.score(QUERY, ["warm up"], INSTRUCTION)
    official_recipe_scores(model, tokenizer, QUERY, ["warm up"], INSTRUCTION)

    def run_baseline():
        return [official_recipe_scores(model, tokenizer, QUERY, job, INSTRUCTION)[0] for job in jobs]

    def run_engine():
        return [engine.score(QUERY, job, INSTRUCTION) for job in jobs]

    with torch.inference_mode():
        base_s, base_scores = timed(run_baseline, repeats)
    print(f"baseline: {base_s:.2f}s  {total_docs / base_s:.2f} docs/s", flush=True)
    eng_s, eng_scores = timed(run_engine, repeats)
    print(f"engine:   {eng_s:.2f}s  {total_docs / eng_s:.2f} docs/s", flush=True)
    diff = max(abs(a - b) for bj, ej in zip(base_scores, eng_scores) for a, b in zip(bj, ej))  # type: ignore[call-overload]
    result = {
        "baseline_docs_per_s": round(total_docs / base_s, 3),
        "engine_docs_per_s": round(total_docs / eng_s, 3),
        "speedup": round(base_s / eng_s, 3),
        "max_abs_diff": float(f"{diff:.3e}"),
        "model": "Qwen3-Reranker-0.6B architecture (28 layers, random weights)",
        "device": engine.info.device if not gpu else torch.cuda.get_device_name(),
        "dtype": engine.info.dtype,
        "jobs": jobs_n,
        "docs_per_job": docs_n,
        "repeats": repeats,
        "mean_doc_tokens": round(statistics.mean(lengths), 1),
        "torch_threads": torch.get_num_threads(),
    }
    if gpu:
        result["peak_gpu_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    if args.save:
        from load_tests.report import write_run

        write_run("engine", result)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
