"""Pipeline efficiency: the same jobs scored (a) by direct engine calls in this process, (b) through
Kafka -> worker -> Serve -> Redis -> Kafka with a cold cache, (c) replayed with every score cached,
all at once (throughput; three replays, the median reported) and (d) paced at ``--cached-rate`` jobs/s (end-to-end latency of cached jobs).

Same model (the packaged all-MiniLM-L6-v2), same machine, same run; the Serve replica gets every
core (one replica, ``num_cpus`` = cores), as the engine does in (a). The worker runs in a process of
its own (a Ray actor, as ``rerank-stream worker --ray`` runs it), so the load generator and the
collector in this process do not share its GIL. The baseline (a) batches jobs
across jobs exactly as the replica's ``PriorityBatcher`` does (``engine.score_many`` over
``serve.max_batch_size`` jobs), so ``efficiency`` = (a) / (b) measures the pipeline's overhead, not
batching; (a) runs right before and after (b) on the same jobs, and ``--rounds`` repeats (a, b, a) on
fresh jobs (efficiency = the median round), so load drift on a shared machine hits both sides.
Jobs have 20 documents. The LAST stdout line is one JSON object.

    python -m load_tests.bench_pipeline [--quick] [--save]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
import uuid

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
REPLAY_RUNS = 3  # all-cached replays of 10 x the jobs each; replay_jobs_per_s is their median
RAY_WORKER_NICENESS = 15  # Ray's default worker_niceness (RAY_worker_niceness)


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
    """Produce all jobs at once (serialised beforehand); seconds from the first send to the last outcome, and
    latencies."""
    from schemas.messages import now_ms

    prepared = [(j.job_id, pipe.prepare(j)) for j in jobs]
    start_ms = now_ms()
    sent = {job_id: pipe.send_prepared(p) for job_id, p in prepared}
    pipe.flush()
    ok = collector.wait_for(set(sent), 300)
    if not ok:
        print(f"WARNING: {len(set(sent) - collector.outcomes.keys())} jobs without outcome", file=sys.stderr)
    arrived = [collector.outcomes[j].arrived_ms for j in sent if j in collector.outcomes]
    # Until the last outcome *arrived*, not until wait_for noticed it (it looks every 0.1 s: 10% of a 1 s replay).
    elapsed = max(0.001, (max(arrived, default=start_ms) - start_ms) / 1000)
    latencies = [collector.outcomes[j].arrived_ms - c for j, c in sent.items() if j in collector.outcomes]
    return elapsed, latencies, sent


def paced(pipe, collector, jobs, rate: float) -> list[float]:
    """Send jobs at ``rate`` per second (not all at once); end-to-end latencies in ms."""
    t0 = time.perf_counter()
    sent = {}
    for i, job in enumerate(jobs):
        delay = t0 + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        sent[job.job_id] = pipe.produce(job).created_at
    pipe.flush()
    collector.wait_for(set(sent), 120)
    return [collector.outcomes[j].arrived_ms - c for j, c in sent.items() if j in collector.outcomes]


def engine_baseline(engine, jobs, settings) -> tuple[float, int]:
    """(seconds, batches) for the jobs scored as the pipeline scores them, minus the pipeline: the worker's
    requests (``JobProcessor.request_for``: feed instruction, long-document mode, priority), all queued at
    once in the replica's own ``PriorityBatcher`` (serve.max_batch_size, serve.max_batch_documents, one
    priority per batch), one ``engine.score_many`` per batch, in this process."""
    from serve_app.priority_batching import PriorityBatcher
    from serve_app.scoring import ScoringCore
    from serve_app.scoring.client import EngineScoreClient
    from workers.processing import JobProcessor

    processor = JobProcessor(settings, EngineScoreClient(engine), ScoringCore(None), "baseline")
    requests = [processor.request_for(j) for j in jobs]
    serve = settings.serve

    async def run(batch):
        return engine.score_many(batch)

    async def score_all() -> int:
        batcher = PriorityBatcher(run, serve.max_batch_size, 0.0, serve.max_batch_documents)
        await asyncio.gather(*(batcher.submit(r) for r in requests))
        return batcher.batches

    t0 = time.perf_counter()
    batches = asyncio.run(score_all())
    return time.perf_counter() - t0, batches


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="200 jobs cold, 2,000 replayed (< 3 min)")
    ap.add_argument("--jobs", type=int)
    ap.add_argument("--docs", type=int, default=20)
    ap.add_argument("--save", action="store_true", help="write load_tests/results/pipeline-<timestamp>.json")
    ap.add_argument(
        "--rounds", type=int, default=1, help="(a, b, a) rounds on fresh jobs; efficiency = median of the rounds"
    )
    ap.add_argument("--cached-rate", type=float, default=200.0, help="jobs/s of the paced all-cached replay (d)")
    ap.add_argument("--cached-seconds", type=float, help="length of (d) (default 5 quick, 20 full)")
    args = ap.parse_args(argv)
    n = args.jobs or (200 if args.quick else 1000)
    replays = 10  # replayed jobs = 10 x jobs: long enough that the pipeline's fill and drain latency (~0.1 s) is not the measure

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

    # Ray runs its workers (the Serve replica, the worker actor) at niceness 15: the load generator, the
    # collector and the direct-engine baseline run at the same, so neither side preempts the other.
    os.nice(max(0, RAY_WORKER_NICENESS - os.nice(0)))
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

    engine = load_engine(settings.model)
    torch.set_num_threads(cores)
    warm = make_jobs(40, args.docs, f"{run_id}-warm", seed=99)  # both sides warm up on these (kernels, shapes)
    engine_baseline(engine, warm, settings)
    job_sets = [jobs] + [make_jobs(n, args.docs, f"{run_id}-{r}", seed=r) for r in range(1, args.rounds)]
    engine_runs: list[float] = []
    pipe_runs: list[float] = []
    efficiencies: list[float] = []
    sent: dict[str, int] = {}

    with LocalPipeline(settings, worker_processes=True) as pipe:
        collector = Collector(settings).start()
        through_pipeline(pipe, collector, warm)  # warm-up
        for r, round_jobs in enumerate(job_sets):  # a, b, a on the same fresh jobs: load drift hits both sides
            before, batches = engine_baseline(engine, round_jobs, settings)
            print(f"(a) engine:   {docs / before:8.1f} docs/s ({n / batches:.1f} jobs per score_many call)", flush=True)
            pipe_s, pipe_lat, round_sent = through_pipeline(pipe, collector, round_jobs)
            sent.update(round_sent)
            print(f"(b) pipeline: {docs / pipe_s:8.1f} docs/s, p50 {percentile(pipe_lat, 50):.0f} ms", flush=True)
            after = engine_baseline(engine, round_jobs, settings)[0]  # Serve idle now: same conditions
            print(f"(a) engine:   {docs / after:8.1f} docs/s (again, after the pipeline)", flush=True)
            engine_runs += [before, after]
            pipe_runs.append(pipe_s)
            efficiencies.append((before + after) / 2 / pipe_s)
            if r == 0:
                first_lat = pipe_lat
        pipe_lat = first_lat
        del engine
        replay_runs: list[float] = []  # seconds per replay; the median is reported (a replay lasts ~1 s: noisy)
        replay_lat: list[float] = []
        replay_sent: dict[str, int] = {}
        for k in range(REPLAY_RUNS):
            replay = [j.model_copy(update={"job_id": f"{j.job_id}-r{k}-{r}"}) for r in range(replays) for j in jobs]
            run_s, run_lat, run_sent = through_pipeline(pipe, collector, replay)
            replay_runs.append(run_s)
            replay_lat += run_lat
            replay_sent.update(run_sent)
            print(f"(c) replay:   {len(replay) / run_s:8.1f} jobs/s, p99 {percentile(run_lat, 99):.0f} ms", flush=True)
        replay_s = statistics.median(replay_runs)
        seconds = args.cached_seconds or (5.0 if args.quick else 20.0)
        count = int(args.cached_rate * seconds)
        steady = [jobs[i % n].model_copy(update={"job_id": f"{jobs[i % n].job_id}-p{i}"}) for i in range(count)]
        cached_lat = paced(pipe, collector, steady, args.cached_rate)
        print(
            f"(d) cached at {args.cached_rate:.0f} jobs/s: p50 {percentile(cached_lat, 50):.1f} ms, "
            f"p99 {percentile(cached_lat, 99):.1f} ms",
            flush=True,
        )
        collector.stop()
        replay_sent = {**replay_sent, **{j.job_id: 0 for j in steady}}
        produced = set(sent) | set(replay_sent)
        outcomes = {j: o for j, o in collector.outcomes.items() if j in produced}
        cached = sum(o.cached for j, o in outcomes.items() if j in replay_sent)

    engine_s, pipe_s = statistics.median(engine_runs), statistics.median(pipe_runs)
    result = {
        "engine_docs_per_s": round(docs / engine_s, 1),
        "pipeline_docs_per_s": round(docs / pipe_s, 1),
        "efficiency": round(statistics.median(efficiencies), 3),
        "replay_jobs_per_s": round(len(replay) / replay_s, 1),
        "replay_runs_jobs_per_s": [round(len(replay) / r, 1) for r in replay_runs],
        "replay_p99_ms": round(percentile(replay_lat, 99), 1),
        "cached_p50_ms": round(percentile(cached_lat, 50), 1),
        "cached_p99_ms": round(percentile(cached_lat, 99), 1),
        "cached_rate_jobs_per_s": args.cached_rate,
        "lost": len(produced) - len(outcomes),
        "pipeline_p50_ms": round(percentile(pipe_lat, 50), 1),
        "replay_cache_hit_ratio": round(cached / (len(replay_sent) * args.docs), 4),
        "dead_letters": sum(1 for o in outcomes.values() if o.dead_letter),
        "duplicates": collector.duplicates,
        "jobs": n,
        "docs_per_job": args.docs,
        "replayed_jobs": len(replay),  # per replay run
        "engine_runs_docs_per_s": [round(docs / s, 1) for s in engine_runs],
        "pipeline_runs_docs_per_s": [round(docs / s, 1) for s in pipe_runs],
        "efficiency_rounds": [round(e, 3) for e in efficiencies],
        "engine_jobs_per_call": round(n / batches, 2),
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
