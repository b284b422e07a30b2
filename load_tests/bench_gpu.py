"""The engine on a GPU: one-job latency, docs/s at saturation and peak memory, per model size.

Issue 13's GPU questions, answered on whatever CUDA device runs this: how long one job of 100
documents x ~256 tokens takes (Qwen3-Reranker's published figure: 80 ms on an A100), how many
documents per second the engine scores when jobs queue up (``score_many``: the replica's
cross-job batching), what the official recipe does on the same inputs, and how the token budget
of a micro-batch moves both. Architectures are the real Qwen3-Reranker 0.6B / 4B / 8B shapes with
random weights (no hub at run time): cost profiles are the true ones, scores are not meaningful.
0.6B goes through ``load_engine`` from a checkpoint; 4B and 8B are initialised on the GPU and
wrapped in the same ``RerankEngine`` + scorer (writing 16 GB of random weights would only time
the disk). The LAST stdout line is one JSON object.

    python -m load_tests.bench_gpu [--sizes 0.6b,4b,8b] [--save]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from typing import cast

import torch

from load_tests.bench_engine import INSTRUCTION, QUERY, make_documents, model_dir
from schemas.settings import ModelSettings
from serve_app.engine import ModelInfo, ScoreRequest, load_engine
from serve_app.engine.engine import RerankEngine
from serve_app.engine.kinds import KindScorer
from serve_app.engine.qwen3 import Qwen3Scorer
from tests.support.reference_recipe import official_recipe_scores

# Published Qwen3 shapes (hidden, intermediate, layers, heads, kv heads, tied embeddings).
SHAPES = {
    "4b": dict(
        hidden_size=2560,
        intermediate_size=9728,
        num_hidden_layers=36,
        num_attention_heads=32,
        num_key_value_heads=8,
        tie_word_embeddings=True,
    ),
    "8b": dict(
        hidden_size=4096,
        intermediate_size=12288,
        num_hidden_layers=36,
        num_attention_heads=32,
        num_key_value_heads=8,
        tie_word_embeddings=False,
    ),
}


def sync() -> None:
    torch.cuda.synchronize()


def median_ms(fn, runs: int) -> tuple[float, float]:
    """Median and max wall time of ``runs`` calls, in ms (after one warm-up call)."""
    fn()
    times = []
    for _ in range(runs):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), max(times)


def documents_near(tokenizer, n: int, lo: int, hi: int, rng: random.Random) -> list[str]:
    """n documents of lo-hi tokens (make_documents draws 16-512; keep those in range)."""
    out: list[str] = []
    while len(out) < n:
        for doc in make_documents(tokenizer, 4 * n, rng):
            if lo <= len(tokenizer.encode(doc, add_special_tokens=False)) <= hi and len(out) < n:
                out.append(doc)
    return out


def random_engine(size: str, tokenizer, budget: int) -> RerankEngine:
    """A 4B/8B-shaped Qwen3 reranker with random bf16 weights, built on the GPU."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(
        vocab_size=151669,
        head_dim=128,
        max_position_embeddings=40960,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **SHAPES[size],  # type: ignore[arg-type]
    )
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    prev = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("cuda"):
            model = Qwen3ForCausalLM(config).eval()
    finally:
        torch.set_default_dtype(prev)
    scorer = cast(KindScorer, Qwen3Scorer(model, tokenizer, max_length=8192, max_batch_tokens=budget))
    info = ModelInfo(f"qwen3-reranker-{size}-random", None, "qwen3-reranker", "cuda", "bfloat16", 8192, False)
    return RerankEngine(info, scorer, tokenizer)


def compile_stack(engine: RerankEngine) -> bool:
    """torch.compile the lean decoder pass (fuses the elementwise glue); False when the kind has none."""
    stack = getattr(getattr(engine._scorer, "runner", None), "stack", None)  # type: ignore[attr-defined]
    if stack is None:
        return False
    stack._run = torch.compile(stack._run, dynamic=True)
    return True


def measure(engine: RerankEngine, tokenizer, runs: int, sat_jobs: int, rng: random.Random) -> dict:
    job = documents_near(tokenizer, 100, 224, 288, rng)
    lat, lat_max = median_ms(lambda: engine.score(QUERY, job, INSTRUCTION), runs)
    jobs = [make_documents(tokenizer, 100, rng) for _ in range(sat_jobs)]
    requests = [ScoreRequest(QUERY, j, INSTRUCTION) for j in jobs]
    sat_ms, _ = median_ms(lambda: engine.score_many(requests), 3)
    return {
        "latency_100x256_ms": round(lat, 1),
        "latency_100x256_max_ms": round(lat_max, 1),
        "saturation_docs_per_s": round(sat_jobs * 100 / (sat_ms / 1000), 1),
        "saturation_jobs": sat_jobs,
    }


def recipe_latency_ms(engine: RerankEngine, tokenizer) -> float:
    """The official recipe on the same 100 x ~256-token job, same model and dtype."""
    model = engine._scorer.model  # type: ignore[attr-defined]
    job = documents_near(tokenizer, 100, 224, 288, random.Random(0))
    with torch.inference_mode():
        ms, _ = median_ms(lambda: official_recipe_scores(model, tokenizer, QUERY, job, INSTRUCTION), 3)
    return ms


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="0.6b", help="comma list of 0.6b, 4b, 8b")
    ap.add_argument("--budgets", default="16384,32768,65536", help="max_batch_tokens values tried on 0.6B")
    ap.add_argument("--runs", type=int, default=10, help="timed one-job runs per point (median reported)")
    ap.add_argument("--saturation-jobs", type=int, default=16)
    ap.add_argument("--compile", action="store_true", help="torch.compile the decoder pass (experimental)")
    ap.add_argument("--save", action="store_true", help="write load_tests/results/gpu-<UTC timestamp>.json")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("bench_gpu needs a CUDA device")
    result: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "dtype": "bfloat16"}
    budgets = [int(b) for b in args.budgets.split(",")]
    sizes = args.sizes.split(",")
    tokenizer = None
    if "0.6b" in sizes:
        points = {}
        for budget in budgets:
            torch.cuda.reset_peak_memory_stats()
            settings = ModelSettings(model=str(model_dir(28)), device="cuda", dtype="bfloat16", max_batch_tokens=budget)
            engine = load_engine(settings)
            if args.compile:
                result["compiled"] = compile_stack(engine)
            tokenizer = engine._tokenizer  # type: ignore[attr-defined]
            point = measure(engine, tokenizer, args.runs, args.saturation_jobs, random.Random(0))
            point["peak_gpu_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
            points[str(budget)] = point
            print(f"0.6b budget {budget}: {point}", flush=True)
            if budget == budgets[-1]:
                recipe_ms = recipe_latency_ms(engine, tokenizer)
                result["0.6b_recipe_latency_100x256_ms"] = round(recipe_ms, 1)
                print(f"0.6b official recipe, one job: {recipe_ms:.1f} ms", flush=True)
            del engine
            torch.cuda.empty_cache()
        result["0.6b"] = points
        best = min(points, key=lambda b: points[b]["latency_100x256_ms"])
        result["latency_100x256_ms"] = points[best]["latency_100x256_ms"]
        result["best_budget"] = int(best)
    for size in (s for s in sizes if s in SHAPES):
        if tokenizer is None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(model_dir(28))
        torch.cuda.reset_peak_memory_stats()
        engine = random_engine(size, tokenizer, budgets[-1])
        if args.compile:
            compile_stack(engine)
        point = measure(engine, tokenizer, args.runs, max(4, args.saturation_jobs // 4), random.Random(0))
        point["peak_gpu_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        result[size] = point
        print(f"{size} budget {budgets[-1]}: {point}", flush=True)
        del engine
        torch.cuda.empty_cache()
    if args.save:
        from load_tests.report import write_run

        write_run("gpu", result)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
