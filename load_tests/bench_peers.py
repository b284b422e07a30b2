"""Engine vs what users pick instead, on the same cross-encoder, inputs and threads, in one interleaved run.

Model: an ms-marco-MiniLM-L-6-shaped cross-encoder (the packaged all-MiniLM-L6-v2 encoder under a
seeded one-label head); the full run adds a BERT-base-sized one (random weights). Jobs: one query and
50 multilingual documents of 16-480 tokens (pairs fit 512 tokens: nobody truncates). Contenders
(load_tests/peers.py): this engine in fp32 and at its default dtype, sentence-transformers
`CrossEncoder.predict` on torch (fp32, bf16) and on ONNX Runtime (fp32 export, int8 dynamic
quantisation), plain transformers. Each round times every contender on the same jobs, in a rotated
order; docs/s are medians over rounds. Every contender's logits are checked against the engine's
fp32 logits (max abs diff), so nobody wins by computing something else. The LAST stdout line is one
JSON object: engine_docs_per_s (default dtype), best_peer, best_peer_docs_per_s, ratio (engine at its
default dtype / best peer at any precision), ratio_fp32 (engine fp32 / best fp32 peer), max_abs_diff
(engine fp32 vs any fp32 peer), bf16_max_abs_diff (engine bf16 vs engine fp32), dtype, and per
contender `<key>_docs_per_s` / `<key>_max_abs_diff`.

    python -m load_tests.bench_peers [--quick] [--save]     (make bench-peers installs the peers)
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

from load_tests import peers
from load_tests.accuracy import compare_scores
from load_tests.bench_engine import make_documents
from tests.support.synthetic_models import build_bert_base_cross_encoder, build_minilm_cross_encoder

MODELS = {
    "minilm": (
        "ms-marco-MiniLM-L-6-shaped cross-encoder (all-MiniLM-L6-v2 encoder + seeded head)",
        build_minilm_cross_encoder,
    ),
    "bert_base": ("BERT-base-sized cross-encoder (12 x 768, random weights)", build_bert_base_cross_encoder),
}
QUERIES = [
    "Which passages explain how the capital city's public transport and museums attract tourists?",
    "Quelle est la capitale de la France et pourquoi les touristes la visitent-ils ?",
    "机器学习模型如何判断文档与查询的相关性？",
]


def model_path(kind: str) -> Path:
    path = Path.home() / ".cache" / "rerank-stream" / f"peers-{kind.replace('_', '-')}-cross-encoder"
    if not (path / "config.json").is_file():
        MODELS[kind][1](path)
    return path


def make_jobs(tokenizer, n_jobs: int, docs: int) -> list[tuple[str, list[str]]]:
    rng = random.Random(0)
    return [(QUERIES[i % len(QUERIES)], make_documents(tokenizer, docs, rng, 16, 480)) for i in range(n_jobs)]


def contenders(path: Path, threads: int) -> list[peers.Contender]:
    onnx_fp32, onnx_int8 = peers.export_onnx(path)
    out = [peers.engine(path, "float32")]
    default = peers.engine(path, "auto")
    if default.precision != "float32":
        out.append(default)
    out += [
        peers.sentence_transformers_torch(path),
        peers.sentence_transformers_torch(path, torch.bfloat16),
        peers.sentence_transformers_onnx(path, onnx_fp32, threads, "float32"),
        peers.sentence_transformers_onnx(path, onnx_int8, threads, "int8"),
        peers.plain_transformers(path),
    ]
    return out


def bench_model(kind: str, n_jobs: int, docs: int, rounds: int, threads: int) -> dict:
    from transformers import AutoTokenizer

    path = model_path(kind)
    jobs = make_jobs(AutoTokenizer.from_pretrained(path), n_jobs, docs)
    total = n_jobs * docs
    runners = contenders(path, threads)
    for c in runners:  # warm-up: allocators, kernels, ORT's first-run planning
        c.score_job(jobs[0][0], jobs[0][1][:8])
    times: dict[str, list[float]] = {c.key: [] for c in runners}
    scores: dict[str, list[list[float]]] = {}
    for r in range(rounds):
        order = runners[r % len(runners) :] + runners[: r % len(runners)]
        for c in order:
            t0 = time.perf_counter()
            scores[c.key] = [c.score_job(q, d) for q, d in jobs]
            times[c.key].append(time.perf_counter() - t0)
        print(f"{kind} round {r + 1}: " + ", ".join(f"{k} {total / v[-1]:.1f}" for k, v in times.items()), flush=True)

    docs_per_s = {k: total / statistics.median(v) for k, v in times.items()}
    reference = scores["engine_float32"]
    diffs = {c.key: compare_scores(reference, scores[c.key])["max_abs_diff"] for c in runners}
    by_key = {c.key: c for c in runners}
    default = next((c for c in runners if not c.peer and c.precision != "float32"), runners[0])
    peer_list = [c for c in runners if c.peer]
    best = max(peer_list, key=lambda c: docs_per_s[c.key])
    best_fp32 = max((c for c in peer_list if c.precision == "float32"), key=lambda c: docs_per_s[c.key])
    result: dict = {
        "engine_docs_per_s": round(docs_per_s[default.key], 1),
        "best_peer": best.name,
        "best_peer_docs_per_s": round(docs_per_s[best.key], 1),
        "ratio": round(docs_per_s[default.key] / docs_per_s[best.key], 3),
        "ratio_fp32": round(docs_per_s["engine_float32"] / docs_per_s[best_fp32.key], 3),
        "best_fp32_peer": best_fp32.name,
        "max_abs_diff": max(diffs[c.key] for c in peer_list if c.precision == "float32"),
        "bf16_max_abs_diff": diffs[default.key] if default.precision != "float32" else 0.0,
        "dtype": default.precision,
    }
    if default.precision != "float32":
        cost = compare_scores(reference, scores[default.key])
        result.update({f"bf16_{k}": v for k, v in cost.items() if k != "max_abs_diff"})
    for key in times:
        result[f"{key}_docs_per_s"] = round(docs_per_s[key], 1)
        result[f"{key}_max_abs_diff"] = diffs[key]
        result[f"{key}_kendall_tau_min"] = compare_scores(reference, scores[key])["kendall_tau_min"]
    result["model"] = MODELS[kind][0]
    result["logit_range"] = round(max(max(s) - min(s) for s in reference), 2)  # scores that move: diffs mean something
    result["contenders"] = {c.key: c.name for c in by_key.values()}
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="MiniLM only, 1 job x 50 documents, 3 rounds")
    ap.add_argument("--save", action="store_true", help="write load_tests/results/peers-<UTC timestamp>.json")
    ap.add_argument("--jobs", type=int, help="jobs per round (default 1 quick, 3 full)")
    ap.add_argument("--docs", type=int, default=50, help="documents per job")
    ap.add_argument("--rounds", type=int, help="interleaved timing rounds, medians reported (default 3 quick, 5 full)")
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1), help="torch and ONNX Runtime threads")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    jobs = args.jobs or (1 if args.quick else 3)
    rounds = args.rounds or (3 if args.quick else 5)

    result = bench_model("minilm", jobs, args.docs, rounds, args.threads)
    if not args.quick:
        bert = bench_model("bert_base", 1, args.docs, 3, args.threads)
        for key in ("engine_docs_per_s", "best_peer", "best_peer_docs_per_s", "ratio", "ratio_fp32", "max_abs_diff"):
            result[f"bert_base_{key}"] = bert[key]
        result["bert_base"] = bert
    result.update(
        {
            "jobs": jobs,
            "docs_per_job": args.docs,
            "rounds": rounds,
            "threads": args.threads,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        }
    )
    if args.save:
        from load_tests.report import write_run

        write_run("peers", result)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
