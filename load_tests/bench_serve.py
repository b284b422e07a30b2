"""The same jobs scored three ways in one run: direct engine calls, the Serve handle, HTTP.

Model: the packaged all-MiniLM-L6-v2 (a real model; ~20+ ms per 16-document job on 2 CPU cores,
so the model dominates). The engine path scores jobs one after the other in this process; the
handle and HTTP paths send them with ``--concurrency`` in flight, so ``@serve.batch`` can merge
them. Efficiency = docs/s of a path / docs/s of the direct engine. The HTTP path goes through the
Redis score cache with a run-unique (cold) key prefix. The LAST stdout line is one JSON object.

    python -m load_tests.bench_serve [--quick] [--save]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import random
import statistics
import time
import uuid
from datetime import UTC, datetime

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def make_jobs(n: int, docs: int, seed: int = 0) -> list[tuple[str, list[str]]]:
    """Multilingual jobs: sentences of several scripts stitched into 2-4 sentence documents."""
    from tests.support.synthetic_models import training_corpus

    sentences = sorted({s for s in training_corpus() if len(s) > 20})
    rng = random.Random(seed)
    jobs = []
    for i in range(n):
        query = f"{rng.choice(sentences)} ({i})"
        jobs.append((query, [" ".join(rng.sample(sentences, rng.randint(2, 4))) for _ in range(docs)]))
    return jobs


def run_concurrent(fn, jobs, concurrency: int) -> tuple[float, list[float]]:
    """Wall seconds for all jobs and per-job latencies (ms), `concurrency` in flight."""

    def one(job):
        t = time.perf_counter()
        fn(job)
        return (time.perf_counter() - t) * 1000

    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(concurrency) as pool:
        lat = list(pool.map(one, jobs))
    return time.perf_counter() - t0, lat


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="60 jobs x 16 docs (< 3 min on 2 cores)")
    ap.add_argument("--jobs", type=int)
    ap.add_argument("--docs", type=int, default=16)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--save", action="store_true", help="write load_tests/results/serve-<UTC timestamp>.json")
    args = ap.parse_args(argv)
    n_jobs = args.jobs or (60 if args.quick else 300)

    import httpx
    import torch

    from load_tests.report import percentile
    from schemas.settings import Settings, load_settings
    from serve_app import runtime
    from serve_app.engine import ScoreRequest, load_engine
    from serve_app.engine.loader import minilm_dir
    from tests.support.net import free_port

    cores = os.cpu_count() or 1
    base = load_settings()
    settings = Settings.model_validate(
        {
            **base.model_dump(),
            "model": {"model": str(minilm_dir()), "device": "cpu"},
            "redis": {**base.redis.model_dump(), "key_prefix": f"bench:{uuid.uuid4().hex[:8]}:"},
            "serve": {
                **base.serve.model_dump(),
                "app_name": "bench",
                "http_port": free_port(),
                "num_cpus": cores,
                "min_replicas": 1,
                "max_replicas": 1,
                "scale_on_kafka_lag": False,
                "max_queued_requests": -1,
            },
        }
    )
    jobs = make_jobs(n_jobs, args.docs)
    docs_total = n_jobs * args.docs

    engine = load_engine(settings.model)
    torch.set_num_threads(cores)
    engine.score("warm up", ["warm up"] * 4)
    t0 = time.perf_counter()
    for query, docs in jobs:
        engine.score(query, docs)
    engine_s = time.perf_counter() - t0
    print(f"engine: {docs_total / engine_s:.0f} docs/s ({engine_s * 1000 / n_jobs:.1f} ms per job)", flush=True)
    del engine

    print("starting Ray + Serve ...", flush=True)
    started = runtime.start(settings)
    try:
        handle = runtime.get_score_handle(settings)

        def via_handle(job):
            return handle.score.remote(ScoreRequest(job[0], job[1])).result(timeout_s=120)

        url = f"http://127.0.0.1:{settings.serve.http_port}/v1/rerank"
        client = httpx.Client(timeout=120, limits=httpx.Limits(max_connections=args.concurrency))

        def via_http(job):
            r = client.post(url, json={"query": job[0], "documents": job[1]})
            r.raise_for_status()

        run_concurrent(via_handle, make_jobs(args.concurrency, args.docs, seed=1), args.concurrency)  # warm-up
        run_concurrent(via_http, make_jobs(args.concurrency, args.docs, seed=2), args.concurrency)
        handle_s, handle_lat = run_concurrent(via_handle, jobs, args.concurrency)
        print(f"handle: {docs_total / handle_s:.0f} docs/s, p50 {statistics.median(handle_lat):.0f} ms", flush=True)
        http_s, http_lat = run_concurrent(via_http, jobs, args.concurrency)
        print(f"http:   {docs_total / http_s:.0f} docs/s, p50 {statistics.median(http_lat):.0f} ms", flush=True)
        batches = handle.batch_stats.remote().result()
        client.close()
    finally:
        runtime.stop(started)

    result = {
        "engine_docs_per_s": round(docs_total / engine_s, 1),
        "handle_docs_per_s": round(docs_total / handle_s, 1),
        "http_docs_per_s": round(docs_total / http_s, 1),
        "handle_efficiency": round(engine_s / handle_s, 3),
        "http_efficiency": round(engine_s / http_s, 3),
        "p50_ms": round(statistics.median(http_lat), 1),
        "p99_ms": round(percentile(http_lat, 99), 1),
        "handle_p50_ms": round(statistics.median(handle_lat), 1),
        "mean_jobs_per_batch": round(sum(k * v for k, v in batches.items()) / max(1, sum(batches.values())), 2),
        "jobs": n_jobs,
        "docs_per_job": args.docs,
        "concurrency": args.concurrency,
        "model": "all-MiniLM-L6-v2 (packaged)",
        "device": "cpu",
        "cores": cores,
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
    }
    if args.save:
        from load_tests.report import write_run

        write_run("serve", result)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
