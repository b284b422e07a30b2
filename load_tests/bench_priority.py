"""Moderation before recommendation: moderation latency alone, then under a recommendation burst that
saturates the replica, with the feed priority on (moderation 1, recommendation 0) and off (both 0).

Per mode: one Serve app (one replica of the packaged all-MiniLM-L6-v2, 1 CPU, 1 torch thread, so a
core stays for Kafka and the worker) and one worker subprocess (`rerank-stream worker`), run-unique
topics, cache off (every job is scored). Moderation jobs (4 documents) arrive at ``--rate`` per second
for ``--seconds``: first alone, then while a producer thread sends recommendation jobs (20 documents)
at ``--burst-rate``, more than the replica can score. Latency = result arrival - created_at.
Each feed has its own in-flight budget (``--budget``); replica batches hold at most
``--batch-documents`` documents and a Serve call at most ``--chunk-documents`` (batches are not
preempted: these bound how long a moderation job waits behind the batch computing when it arrives).
The LAST stdout line is one JSON object: moderation_p99_unloaded_ms, moderation_p99_burst_ms, ratio
(burst / unloaded, priority on), ratio_without_priority, and the details.

    python -m load_tests.bench_priority [--quick] [--save]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

ROOT = Path(__file__).resolve().parent.parent
MOD_DOCS, REC_DOCS = 4, 20


def bench_settings(run_id: str, priority: bool, args: argparse.Namespace):
    """Isolated settings of one mode; the only difference between the modes is the moderation priority."""
    from schemas.settings import Settings, load_settings
    from serve_app.engine.loader import minilm_dir
    from workers.topics import isolated_settings

    base = load_settings()
    feeds = {name: f.model_dump() for name, f in base.kafka.feeds.items()}
    for name, feed in feeds.items():
        feed.update(max_in_flight=args.budget, long_documents="truncate")
        feed["priority"] = 1 if (priority and name == "moderation") else 0
    data = base.model_dump()
    data["kafka"] = {**data["kafka"], "feeds": feeds}
    data["model"] = {"model": str(minilm_dir()), "device": "cpu"}
    data["redis"] = {**data["redis"], "enabled": False}
    data["serve"] = {
        **data["serve"],
        "app_name": f"bench-prio-{run_id}",
        "num_cpus": 1,
        "torch_threads": 1,
        "min_replicas": 1,
        "max_replicas": 1,
        "scale_on_kafka_lag": False,
        "max_queued_requests": -1,
        "max_batch_size": 8,
        "max_batch_documents": args.batch_documents,
        "max_ongoing_requests": 4 * args.budget,  # every feed's budget fits: nothing waits in Serve's FIFO router
    }
    data["worker"] = {
        **data["worker"],
        "poll_max_records": 16,
        "commit_interval_s": 0.2,
        "chunk_documents": args.chunk_documents,
    }
    return isolated_settings(Settings.model_validate(data), "bench-prio", f"{run_id}-{'on' if priority else 'off'}")


def make_job(feed: str, docs: int, rng: random.Random, job_id: str):
    from load_tests import corpus
    from schemas.messages import Candidate, RerankJob

    lang = rng.choice(corpus.LANGS)
    cands = [Candidate(id=f"c{k}", text=corpus.document(rng, lang)) for k in range(docs)]
    return RerankJob(job_id=job_id, feed=feed, query=f"{corpus.query(rng, lang)} {job_id}", candidates=cands)


class Mode:
    """One app + one worker subprocess + producer + collector, torn down on exit."""

    def __init__(self, settings, run_id: str):
        self.settings, self.run_id = settings, run_id
        self.rng = random.Random(hash(run_id) & 0xFFFF)
        self.count = 0

    def __enter__(self) -> Mode:
        import ray
        import yaml

        from load_tests.collector import Collector
        from serve_app import runtime
        from workers.kafka_io import make_producer
        from workers.topics import ensure_topics

        ensure_topics(self.settings)
        self.started = runtime.start(self.settings)
        self.config = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
        yaml.safe_dump(self.settings.model_dump(mode="json", exclude_none=True), self.config)
        self.config.close()
        env = {**os.environ, "RERANK_CONFIG": self.config.name, "PYTHONUNBUFFERED": "1"}
        env["RERANK_SERVE_RAY_ADDRESS"] = ray.get_runtime_context().gcs_address
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", "worker", "--log-level", "WARNING"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.worker.stdout is not None
        for line in self.worker.stdout:  # "worker ... ready" once Kafka and the Serve app answered
            if " ready" in line:
                break
        else:
            raise RuntimeError(f"worker exited {self.worker.wait()}")
        threading.Thread(target=lambda: [None for _ in self.worker.stdout or ()], daemon=True).start()
        self.producer = make_producer(self.settings, linger_ms=0)
        self.collector = Collector(self.settings).start()
        return self

    def jobs(self, feed: str, docs: int, n: int) -> list:
        """``n`` distinct jobs, made before a phase so that making them costs nothing while it is measured."""
        made = [make_job(feed, docs, self.rng, f"{self.run_id}-{feed[:3]}-{self.count + i}") for i in range(n)]
        self.count += n
        return made

    def send(self, job) -> tuple[str, int]:
        """Send one job with created_at = now; (job_id, created_at)."""
        from schemas.messages import now_ms

        job = job.model_copy(update={"created_at": now_ms()})
        topic = self.settings.kafka.feeds[job.feed].topic
        self.producer.send(topic, job.model_dump_json().encode(), key=job.job_id.encode())
        return job.job_id, job.created_at

    def moderation(self, rate: float, seconds: float) -> list[float]:
        """Moderation jobs at ``rate`` per second; their end-to-end latencies (ms)."""
        sent: dict[str, int] = {}
        jobs = self.jobs("moderation", MOD_DOCS, int(rate * seconds))
        t0 = time.perf_counter()
        for i, job in enumerate(jobs):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            job_id, created = self.send(job)
            sent[job_id] = created
        self.producer.flush()
        if not self.collector.wait_for(set(sent), 120):
            print(f"WARNING: {len(set(sent) - self.collector.outcomes.keys())} moderation jobs late", file=sys.stderr)
        return [self.collector.outcomes[j].arrived_ms - c for j, c in sent.items() if j in self.collector.outcomes]

    def burst(self, jobs: list, rate: float, stop: threading.Event, sent: list[str]) -> None:
        """Recommendation ``jobs`` at ``rate`` per second until ``stop`` or the end (a producer thread)."""
        t0 = time.perf_counter()
        for i, job in enumerate(jobs):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0 and stop.wait(delay):
                return
            sent.append(self.send(job)[0])

    def replica_busy_s(self) -> float:
        """Seconds the replica has spent computing batches (its growth per second = how saturated it is)."""
        from serve_app import runtime

        return float(runtime.get_score_handle(self.settings).busy_seconds.remote().result(timeout_s=30))

    def __exit__(self, *exc) -> None:
        from serve_app import runtime
        from workers.topics import delete_isolated

        self.collector.stop()
        self.producer.close()
        if self.worker.poll() is None:
            self.worker.send_signal(signal.SIGKILL)  # its recommendation backlog is not worth draining
            self.worker.wait(30)
        runtime.stop(self.started)
        delete_isolated(self.settings)
        os.unlink(self.config.name)


def run_mode(priority: bool, args: argparse.Namespace, run_id: str) -> dict:
    from load_tests.report import percentile

    settings = bench_settings(run_id, priority, args)
    label = "priority on" if priority else "priority off"
    with Mode(settings, f"{run_id}{'p' if priority else 'f'}") as mode:
        mode.moderation(2, 2)  # warm-up: model, handles, connections
        unloaded = mode.moderation(args.rate, args.seconds)
        print(
            f"[{label}] unloaded: moderation p50 {percentile(unloaded, 50):.0f} ms, p99 {percentile(unloaded, 99):.0f} ms",
            flush=True,
        )
        stop, rec_sent = threading.Event(), list[str]()
        rec_jobs = mode.jobs("recommendation", REC_DOCS, int(args.burst_rate * (args.saturate_s + args.seconds + 30)))
        producer = threading.Thread(target=mode.burst, args=(rec_jobs, args.burst_rate, stop, rec_sent), daemon=True)
        producer.start()
        time.sleep(args.saturate_s)  # the replica's queue fills before measuring
        done_before = len(mode.collector.outcomes.keys() & set(rec_sent))
        busy_before, t0 = mode.replica_busy_s(), time.perf_counter()
        burst = mode.moderation(args.rate, args.seconds)
        elapsed = time.perf_counter() - t0
        busy = (mode.replica_busy_s() - busy_before) / elapsed
        rec_done = len(mode.collector.outcomes.keys() & set(rec_sent)) - done_before
        stop.set()
        producer.join(10)
        backlog = len(rec_sent) - len(mode.collector.outcomes.keys() & set(rec_sent))
        print(
            f"[{label}] burst:    moderation p50 {percentile(burst, 50):.0f} ms, p99 {percentile(burst, 99):.0f} ms; "
            f"recommendation {rec_done / elapsed:.1f} jobs/s scored, replica busy {busy:.0%} of the time, {backlog} queued",
            flush=True,
        )
    return {
        "unloaded_p50_ms": round(percentile(unloaded, 50), 1),
        "unloaded_p99_ms": round(percentile(unloaded, 99), 1),
        "burst_p50_ms": round(percentile(burst, 50), 1),
        "burst_p99_ms": round(percentile(burst, 99), 1),
        "recommendation_jobs_per_s": round(rec_done / elapsed, 2),
        "recommendation_backlog": backlog,
        "replica_busy_ratio": round(busy, 3),
        "samples": [len(unloaded), len(burst)],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="15 s per phase (about 3 min in all)")
    ap.add_argument("--seconds", type=float, help="length of each measured phase (default 15 quick, 40 full)")
    ap.add_argument("--rate", type=float, default=5.0, help="moderation jobs per second")
    ap.add_argument("--burst-rate", type=float, default=12.0, help="recommendation jobs per second in the burst")
    ap.add_argument("--saturate-s", type=float, default=3.0, help="burst time before moderation is measured")
    ap.add_argument("--budget", type=int, default=8, help="in-flight jobs per feed per worker")
    ap.add_argument("--batch-documents", type=int, default=10, help="serve.max_batch_documents")
    ap.add_argument("--chunk-documents", type=int, default=10, help="worker.chunk_documents (documents per Serve call)")
    ap.add_argument("--save", action="store_true", help="write load_tests/results/priority-<timestamp>.json")
    args = ap.parse_args(argv)
    args.seconds = args.seconds or (15.0 if args.quick else 40.0)

    import logging

    logging.basicConfig(level="WARNING")
    logging.getLogger("kafka").setLevel(logging.ERROR)
    import ray

    from load_tests.report import write_run
    from load_tests.run import machine

    run_id = uuid.uuid4().hex[:6]
    ray.init(include_dashboard=False, log_to_driver=False)
    try:
        on = run_mode(True, args, run_id)
        off = run_mode(False, args, run_id)
    finally:
        ray.shutdown()
    result = {
        "moderation_p99_unloaded_ms": on["unloaded_p99_ms"],
        "moderation_p99_burst_ms": on["burst_p99_ms"],
        "ratio": round(on["burst_p99_ms"] / on["unloaded_p99_ms"], 2),
        "ratio_without_priority": round(off["burst_p99_ms"] / off["unloaded_p99_ms"], 2),
        "moderation_p50_unloaded_ms": on["unloaded_p50_ms"],
        "moderation_p50_burst_ms": on["burst_p50_ms"],
        "moderation_p99_unloaded_without_priority_ms": off["unloaded_p99_ms"],
        "moderation_p99_burst_without_priority_ms": off["burst_p99_ms"],
        "moderation_p50_burst_without_priority_ms": off["burst_p50_ms"],
        "recommendation_jobs_per_s": on["recommendation_jobs_per_s"],
        "recommendation_jobs_per_s_without_priority": off["recommendation_jobs_per_s"],
        "replica_busy_ratio_burst": on["replica_busy_ratio"],
        "replica_busy_ratio_burst_without_priority": off["replica_busy_ratio"],
        "with_priority": on,
        "without_priority": off,
        "moderation_rate_per_s": args.rate,
        "burst_rate_per_s": args.burst_rate,
        "seconds_per_phase": args.seconds,
        "budget_per_feed": args.budget,
        "max_batch_documents": args.batch_documents,
        "chunk_documents": args.chunk_documents,
        "docs_per_job": {"moderation": MOD_DOCS, "recommendation": REC_DOCS},
        "model": "all-MiniLM-L6-v2 (packaged), 1 replica, 1 CPU, 1 torch thread",
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    if args.save:
        write_run("priority", result)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
