"""``rerank-stream demo``: the whole pipeline on this machine, end to end, in under 3 minutes.

Starts Ray + the Serve app (configured model; ``auto`` without reranker weights offline means
the packaged MiniLM fallback, announced), a worker, and demo-only topics; produces the bundled
multilingual jobs, prints every result, replays the same jobs to show the cache at work, then
stops and deletes everything it started. Uses run-unique topics and cache prefix so a demo
never sees an earlier run's data.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import threading
import time
import uuid
from importlib import resources

from schemas.messages import DeadLetter, RerankJob, RerankResult
from schemas.settings import Settings, load_settings
from workers.topics import delete_isolated, isolated_settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML config file (default: $RERANK_CONFIG).")
    parser.add_argument("--timeout", type=float, default=120.0, help="Seconds to wait for all results of a round.")


def _say(msg: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def load_demo_jobs(run_id: str, round_name: str) -> list[RerankJob]:
    data = json.loads(resources.files("workers").joinpath("data/demo_jobs.json").read_text("utf-8"))
    jobs = []
    for feed in ("recommendation", "moderation"):
        for i, spec in enumerate(data[feed]):
            jobs.append(RerankJob(job_id=f"{run_id}-{round_name}-{feed[:3]}-{i}", feed=feed, **spec))
    return jobs


def print_result(job: RerankJob, res: RerankResult, latency_ms: float) -> None:
    text = {c.id: c.text for c in job.candidates}
    head = "MODERATION" if job.feed == "moderation" else "RECOMMENDATION"
    print(f"\n┌ {head}  {job.job_id}   {latency_ms:.0f} ms end to end, {res.cached}/{len(job.candidates)} from cache")
    print(f"│ query: {job.query}")
    for r in res.ranked:
        mark = "  FLAGGED" if r.id in res.flagged else ""
        snippet = text[r.id] if len(text[r.id]) <= 70 else text[r.id][:67] + "..."
        print(f"│ {r.rank:>2}. {r.score:6.3f}  {r.id:<11} {snippet}{mark}")
    if job.feed == "moderation":
        print(f"│ flagged (score >= {job.threshold}): {', '.join(res.flagged) or 'none'}")
    print("└" + "─" * 60)


def _produce_and_collect(
    settings: Settings, jobs: list[RerankJob], timeout: float
) -> dict[str, tuple[RerankResult, float]]:
    from workers.kafka_io import make_consumer, make_producer

    consumer = make_consumer(settings, group_id=f"{settings.kafka.group_id}-reader-{uuid.uuid4().hex[:4]}")
    consumer.subscribe([settings.kafka.results_topic, settings.kafka.dlq_topic])
    while not consumer.assignment():  # join before producing, so no result is missed
        consumer.poll(timeout_ms=200)
    producer = make_producer(settings)
    for topic in {settings.kafka.feeds[j.feed].topic for j in jobs}:
        producer.partitions_for(topic)  # connect and fetch metadata first: that wait is not the pipeline's latency
    sent_at: dict[str, float] = {}
    for job in jobs:
        sent_at[job.job_id] = time.perf_counter()
        producer.send(settings.kafka.feeds[job.feed].topic, job.model_dump_json().encode(), key=job.job_id.encode())
    producer.flush()
    producer.close()
    wanted = {j.job_id for j in jobs}
    got: dict[str, tuple[RerankResult, float]] = {}
    deadline = time.monotonic() + timeout
    while wanted - got.keys() and time.monotonic() < deadline:
        for recs in consumer.poll(timeout_ms=200).values():
            for rec in recs:
                if rec.topic == settings.kafka.dlq_topic:
                    _say(f"DEAD LETTER: {DeadLetter.model_validate_json(rec.value).reason}")
                    continue
                res = RerankResult.model_validate_json(rec.value)
                if res.job_id in wanted and res.job_id not in got:
                    got[res.job_id] = (res, (time.perf_counter() - sent_at[res.job_id]) * 1000)
    consumer.close()
    return got


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level="WARNING", format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.ERROR)  # rebalance chatter is not demo output
    t_start = time.perf_counter()
    run_id = uuid.uuid4().hex[:6]
    settings = isolated_settings(load_settings(args.config), "demo", run_id)
    from serve_app import runtime
    from serve_app.scoring.client import ServeScoreClient
    from workers.worker import Worker

    _say(f"starting Ray + Serve with model {settings.model.model!r} (first start takes a while)...")
    started = runtime.start(settings)
    worker = None
    thread = None
    try:
        handle = runtime.get_score_handle(settings)
        client = ServeScoreClient(handle, settings.worker.scoring_timeout_s)
        info = client.info()
        fallback = bool(getattr(info, "fallback", False))
        if fallback:
            print("\n" + "!" * 78)
            print("!! No Qwen3-Reranker weights available offline: serving the packaged")
            print(f"!! FALLBACK model {info.id} ({info.kind}). Scores are cosine-based.")
            print("!" * 78 + "\n", flush=True)
        _say(f"serving {info.id} (kind {info.kind}, revision {info.revision})")
        _say(
            f"Kafka {settings.kafka.bootstrap_servers}, Redis {settings.redis.url}; creating demo topics and starting the worker"
        )
        from workers.topics import ensure_topics

        ensure_topics(settings)
        worker = Worker(settings, client, worker_id=f"demo-{run_id}")
        thread = threading.Thread(target=worker.run, name="demo-worker", daemon=True)
        thread.start()

        rounds: dict[str, list[float]] = {}
        for round_name, title in (
            ("cold", "first pass: every score computed by the model"),
            ("replay", "replay: same jobs, scores from the Redis cache"),
        ):
            jobs = load_demo_jobs(run_id, round_name)
            _say(f"{title} — producing {len(jobs)} jobs")
            got = _produce_and_collect(settings, jobs, args.timeout)
            missing = [j.job_id for j in jobs if j.job_id not in got]
            if missing:
                _say(f"FAILED: no result for {missing} within {args.timeout:.0f}s")
                return 1
            if round_name == "cold":
                for job in jobs:
                    print_result(job, *got[job.job_id])
            lat = [got[j.job_id][1] for j in jobs]
            cached = sum(got[j.job_id][0].cached for j in jobs)
            total = sum(len(j.candidates) for j in jobs)
            model_ms = sum(got[j.job_id][0].timings.model_ms for j in jobs)
            rounds[round_name] = lat
            _say(
                f"{round_name}: {len(jobs)} results, {cached}/{total} scores from cache, model time {model_ms:.0f} ms, "
                f"median latency {statistics.median(lat):.0f} ms"
            )
        cold, warm = statistics.median(rounds["cold"]), statistics.median(rounds["replay"])
        print(
            f"\nCache effect: median end-to-end latency {cold:.0f} ms -> {warm:.0f} ms "
            f"({cold / max(warm, 0.001):.1f}x faster); cache stats {worker.cache.stats}\n",
            flush=True,
        )
        return 0
    finally:
        _say("stopping worker, Serve and Ray; deleting demo topics")
        if worker is not None:
            worker.stop()
            if thread is not None:
                thread.join(timeout=60)
        try:
            runtime.stop(started)
        except Exception as exc:  # noqa: BLE001
            _say(f"stopping Serve failed: {exc!r}")
        delete_isolated(settings)
        _say(f"done in {time.perf_counter() - t_start:.0f} s")
