"""Pipeline efficiency: the same jobs scored (a) by direct engine calls in this process, (b) through
Kafka -> worker -> Serve -> Redis -> Kafka with a cold cache, (c) replayed with every score cached.

Same model (the packaged all-MiniLM-L6-v2), same machine, same run; the Serve replica gets every
core (one replica, ``num_cpus`` = cores), as the engine does in (a). Jobs have 20 documents.
The LAST stdout line is one JSON object.

    python -m load_tests.bench_pipeline [--quick] [--save]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
import uuid

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def make_jobs(n: int, docs: int, run_id: str, seed: int = 0):
    """n distinct jobs (distinct queries: the cold pass really is cold), both feeds."""
    from load_tests import corpus
    from schemas.messages import Candidate, RerankJob

    rng = random.Random(seed)
    jobs = []
    for i in range(n):
        lang = rng.choice(corpus.LANGS)
        feed = "moderation" if i % 3 == 0 else "recommendation"
        cands = [Candidate(id=f"c{k}", text=corpus.document(rng, lang)) for k in range(docs)]
        jobs.append(
            RerankJob(job_id=f"{run_id}-{i}", feed=feed, query=f"{corpus.query(rng, lang)} {i}", candidates=cands)
        )
    return jobs


def through_pipeline(pipe, collector, jobs) -> tuple[float, list[float], dict]:
    """Produce all jobs at once; seconds from the first send to the last outcome, and latencies."""
    t0 = time.perf_counter()
    sent = {j.job_id: pipe.produce(j).created_at for j in jobs}
    pipe.flush()
    ok = collector.wait_for(set(sent), 300)
    elapsed = time.perf_counter() - t0
    if not ok:
        print(f"WARNING: {len(set(sent) - collector.outcomes.keys())} jobs without outcome", file=sys.stderr)
    latencies = [collector.outcomes[j].arrived_ms - c for j, c in sent.items() if j in collector.outcomes]
    return elapsed, latencies, sent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="200 jobs cold, 1,000 replayed (< 3 min)")
    ap.add_argument("--jobs", type=int)
    ap.add_argument("--docs", type=int, default=20)
    ap.add_argument("--save", action="store_true", help="write load_tests/results/pipeline-<timestamp>.json")
    args = ap.parse_args(argv)
    n = args.jobs or (200 if args.quick else 1000)
    replays = 5

    import logging

    logging.basicConfig(level="WARNING")
    logging.getLogger("kafka").setLevel(logging.ERROR)
    import torch

    from load_tests.collector import Collector
    from load_tests.harness import LocalPipeline
    from load_tests.report import percentile, write_run
    from load_tests.run import machine
    from schemas.settings import Settings, load_settings
    from serve_app.engine import load_engine
    from serve_app.engine.loader import minilm_dir
    from workers.topics import isolated_settings

    cores = os.cpu_count() or 1
    run_id = uuid.uuid4().hex[:6]
    base = load_settings()
    settings = isolated_settings(
        Settings.model_validate(
            {
                **base.model_dump(),
                "model": {"model": str(minilm_dir()), "device": "cpu"},
                "serve": {
                    **base.serve.model_dump(),
                    "app_name": f"bench-{run_id}",
                    "num_cpus": cores,
                    "min_replicas": 1,
                    "max_replicas": 1,
                    "scale_on_kafka_lag": False,
                    "max_queued_requests": -1,
                },
            }
        ),
        "bench",
        run_id,
    )
    jobs = make_jobs(n, args.docs, run_id)
    docs = n * args.docs
    instructions = {name: f.instruction for name, f in settings.kafka.feeds.items()}

    engine = load_engine(settings.model)
    torch.set_num_threads(cores)
    engine.score("warm up", ["warm up"] * 4)
    t0 = time.perf_counter()
    for job in jobs:
        engine.score(job.query, [c.text for c in job.candidates], instructions[job.feed])
    engine_s = time.perf_counter() - t0
    del engine
    print(f"(a) engine:   {docs / engine_s:8.1f} docs/s ({engine_s * 1000 / n:.1f} ms per job)", flush=True)

    with LocalPipeline(settings) as pipe:
        collector = Collector(settings).start()
        through_pipeline(pipe, collector, make_jobs(8, args.docs, f"{run_id}-warm", seed=99))  # warm-up
        pipe_s, pipe_lat, sent = through_pipeline(pipe, collector, jobs)
        print(f"(b) pipeline: {docs / pipe_s:8.1f} docs/s, p50 {percentile(pipe_lat, 50):.0f} ms", flush=True)
        replay = [j.model_copy(update={"job_id": f"{j.job_id}-r{r}"}) for r in range(replays) for j in jobs]
        replay_s, replay_lat, replay_sent = through_pipeline(pipe, collector, replay)
        print(
            f"(c) replay:   {len(replay) / replay_s:8.1f} jobs/s, p99 {percentile(replay_lat, 99):.0f} ms", flush=True
        )
        collector.stop()
        produced = set(sent) | set(replay_sent)
        outcomes = {j: o for j, o in collector.outcomes.items() if j in produced}
        cached = sum(o.cached for j, o in outcomes.items() if j in replay_sent)

    result = {
        "engine_docs_per_s": round(docs / engine_s, 1),
        "pipeline_docs_per_s": round(docs / pipe_s, 1),
        "efficiency": round(engine_s / pipe_s, 3),
        "replay_jobs_per_s": round(len(replay) / replay_s, 1),
        "replay_p99_ms": round(percentile(replay_lat, 99), 1),
        "lost": len(produced) - len(outcomes),
        "pipeline_p50_ms": round(percentile(pipe_lat, 50), 1),
        "replay_cache_hit_ratio": round(cached / (len(replay) * args.docs), 4),
        "dead_letters": sum(1 for o in outcomes.values() if o.dead_letter),
        "duplicates": collector.duplicates,
        "jobs": n,
        "docs_per_job": args.docs,
        "replayed_jobs": len(replay),
        "model": "all-MiniLM-L6-v2 (packaged)",
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    if args.save:
        write_run("pipeline", result)
    print(json.dumps(result), flush=True)
    return 0 if result["lost"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
