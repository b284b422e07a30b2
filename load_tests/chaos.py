"""Fault schedule on the cluster mode: ``python -m load_tests.chaos`` (``make chaos``).

Starts its own three-broker Kafka, Redis and multi-node Ray cluster (never the default broker or
Redis), ``rerank-stream serve`` (2 Reranker replicas, the packaged model) and ``rerank-stream
consumers`` (2..4 consumers) joining it, produces steady load and, on a schedule, SIGKILLs a consumer
twice, a Reranker replica, stops Redis for 15 s, SIGKILLs the leader broker of an input partition
and restarts it, and SIGKILLs a Ray worker node. Prints and saves a timeline (throughput, p99, lag,
consumers and replicas, fault marks: ``load_tests/results/chaos-<time>.png`` and ``.json``); the LAST
stdout line is one JSON object: produced, results, dead_letters, duplicates, duplicates_identical,
lost (must be 0), longest_gap_s and the output gap after each fault. Exit 1 when anything was lost.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

GAP_WINDOW_S = 30.0  # the gap after a fault: longest silence of the output within this window


@dataclass(frozen=True)
class Fault:
    at_s: float
    name: str
    until_s: float | None = None  # when the fault is undone (Redis back, broker restarted)


SCHEDULE = (
    Fault(25, "worker SIGKILL 1"),
    Fault(45, "worker SIGKILL 2"),
    Fault(65, "Reranker replica SIGKILL"),
    Fault(85, "Redis stopped 15 s", until_s=100),
    Fault(115, "leader broker SIGKILL + restart", until_s=130),
    Fault(145, "Ray worker node SIGKILL"),
)
LOAD_S = 210.0  # the last fault's recovery happens under load too


def longest_gap(arrivals: list[float], start: float, end: float) -> float:
    """Longest stretch in [start, end] without an arrival (arrivals in seconds, any order)."""
    inside = sorted(t for t in arrivals if start <= t <= end)
    points = [start, *inside, end]
    return round(max(b - a for a, b in zip(points, points[1:])), 2)


@dataclass
class Run:
    """Everything the run started, so ``teardown`` stops exactly that (also after a failure)."""

    state: Path
    ray: Any = None
    kafka: Any = None
    redis_env: dict[str, str] = field(default_factory=dict)
    clis: list[Any] = field(default_factory=list)

    def redis(self, command: str) -> None:
        from load_tests.cluster import Script

        Script("redis.sh", self.state, self.redis_env)(command)

    def teardown(self) -> None:
        for cli in reversed(self.clis):
            cli.stop(timeout=90)
        for part in (self.ray, self.kafka):
            if part is not None:
                part.stop()
        if self.redis_env:
            try:
                self.redis("stop")
            except Exception as exc:  # noqa: BLE001 - teardown goes on
                print(f"redis stop: {exc}", file=sys.stderr)


def environment(run_id: str, kafka: Any, ray: Any, redis_port: int, http_port: int) -> dict[str, str]:
    """The settings every process of the run shares (as RERANK_* variables)."""
    from schemas.settings import DEFAULT_FEEDS

    feeds = {n: {"topic": f"chaos.{run_id}.jobs.{n}", "instruction": f.instruction} for n, f in DEFAULT_FEEDS.items()}
    return {
        **ray.client_env,
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "RERANK_KAFKA_FEEDS": json.dumps(feeds),
        "RERANK_KAFKA_RESULTS_TOPIC": f"chaos.{run_id}.results",
        "RERANK_KAFKA_DLQ_TOPIC": f"chaos.{run_id}.dlq",
        "RERANK_KAFKA_GROUP_ID": f"chaos-{run_id}",
        "RERANK_KAFKA_AUTO_CREATE_TOPICS": "true",
        "RERANK_KAFKA_TOPIC_PARTITIONS": "2",
        "RERANK_KAFKA_REPLICATION_FACTOR": "3",
        "RERANK_KAFKA_MIN_INSYNC_REPLICAS": "2",
        "RERANK_SERVE_APP_NAME": f"chaos-{run_id}",
        "RERANK_SERVE_HTTP_PORT": str(http_port),
        "RERANK_SERVE_PROXY_LOCATION": "HeadOnly",
        "RERANK_SERVE_NUM_CPUS": "0.5",
        "RERANK_SERVE_MIN_REPLICAS": "2",
        "RERANK_SERVE_MAX_REPLICAS": "2",
        "RERANK_SERVE_SCALE_ON_KAFKA_LAG": "false",
        "RERANK_MODEL_DEVICE": "cpu",
        "RERANK_WORKER_MIN_CONSUMERS": "2",
        "RERANK_WORKER_MAX_CONSUMERS": "4",
        "RERANK_WORKER_LAG_PER_CONSUMER": "30",
        "RERANK_WORKER_ACTIVATION_LAG": "5",
        "RERANK_WORKER_CONSUMER_UPSCALE_DELAY_S": "5",
        "RERANK_WORKER_CONSUMER_DOWNSCALE_DELAY_S": "20",
        "RERANK_WORKER_CONSUMER_NUM_CPUS": "0.25",
        "RERANK_WORKER_SCORING_TIMEOUT_S": "30",
        "RERANK_WORKER_COMMIT_INTERVAL_S": "0.5",
        "RERANK_WORKER_LOG_INTERVAL_S": "10",
    }


def start(run: Run, run_id: str) -> dict[str, str]:
    from load_tests.cluster import Cli, KafkaCluster, RayCluster, free_port

    print("starting three Kafka brokers, Redis, Ray (head + 2 worker nodes) ...", file=sys.stderr, flush=True)
    run.kafka = KafkaCluster(run.state).start()
    redis_port = free_port()
    run.redis_env = {"REDIS_LOCAL_PORT": str(redis_port)}
    run.redis("start")
    run.ray = RayCluster(run.state, free_port(), worker_cpus=2).start(workers=2)
    env = environment(run_id, run.kafka, run.ray, redis_port, free_port())
    print("starting rerank-stream serve and consumers ...", file=sys.stderr, flush=True)
    serve = Cli("serve", env)
    run.clis.append(serve)
    serve.wait_for("serving on", timeout=600)
    consumers = Cli("consumers", env)
    run.clis.append(consumers)
    consumers.wait_for("consumers ready", timeout=300)
    return env


class Look:
    """This process's view of the Serve apps (it joins the run's Ray cluster as a driver)."""

    def __init__(self, settings: Any):
        import ray

        ray.init(address=settings.serve.ray_address, log_to_driver=False, logging_level=logging.ERROR)
        self.settings = settings

    def replicas(self, deployment: str) -> list[dict[str, Any]]:
        from ray.serve.context import _get_global_client

        from workers import consumer_deployment

        s = self.settings
        app = consumer_deployment.app_name(s) if deployment == consumer_deployment.DEPLOYMENT else s.serve.app_name
        client = _get_global_client()
        assert client is not None
        details = client.get_serve_details().get("applications", {}).get(app) or {}
        dep = details.get("deployments", {}).get(deployment) or {}
        return [r for r in dep.get("replicas", []) if str(r.get("state", "")).endswith("RUNNING")]

    def kill_replica(self, deployment: str) -> str:
        target = self.replicas(deployment)[0]
        os.kill(int(target["pid"]), signal.SIGKILL)
        return f"pid {target['pid']}"


class Sampler:
    """Once a second: running consumers and Reranker replicas, and the group's lag."""

    def __init__(self, look: Look):
        from serve_app.lag import KafkaLagSource

        self.look = look
        self.lag = KafkaLagSource(look.settings.kafka, look.settings.kafka.group_id)
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from workers.consumer_deployment import DEPLOYMENT

        while not self._stop.is_set():
            sample: dict[str, Any] = {"t": time.time()}
            for key, deployment in (("consumers", DEPLOYMENT), ("replicas", self.look.settings.serve.deployment_name)):
                try:
                    sample[key] = len(self.look.replicas(deployment))
                except Exception:  # noqa: BLE001 - e.g. mid node failure: no sample
                    sample[key] = None
            try:
                sample["lag"] = self.lag.read().total
            except Exception:  # noqa: BLE001 - a broker is down
                sample["lag"] = None
                self.lag.close()
            self.samples.append(sample)
            self._stop.wait(1.0)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)
        self.lag.close()


def collector_class():
    """The load collector, also keeping each result's ranking (duplicates must be identical)."""
    from load_tests.collector import Collector
    from schemas.messages import RerankResult

    class RankingCollector(Collector):
        def __init__(self, settings: Any):
            super().__init__(settings)
            self.rankings: dict[str, list[list[tuple[str, int]]]] = {}
            self.duplicate_ms: list[int] = []  # arrival of every duplicate (which fault caused it)

        def _record(self, rec, arrived: int) -> None:
            if rec.topic == self.settings.kafka.results_topic:
                res = RerankResult.model_validate_json(rec.value)
                self.rankings.setdefault(res.job_id, []).append([(r.id, r.rank) for r in res.ranked])
                if len(self.rankings[res.job_id]) > 1:
                    self.duplicate_ms.append(arrived)
            super()._record(rec, arrived)

    return RankingCollector


def inject(fault: Fault, run: Run, look: Look, settings: Any) -> str:
    from workers.consumer_deployment import DEPLOYMENT

    if fault.name.startswith("worker"):
        return look.kill_replica(DEPLOYMENT)
    if fault.name.startswith("Reranker"):
        return look.kill_replica(settings.serve.deployment_name)
    if fault.name.startswith("Redis"):
        run.redis("stop")
        return "redis stopped"
    if fault.name.startswith("leader broker"):
        leader = run.kafka.leader(settings.kafka.input_topics[0], 0)
        run.kafka.kill_broker(leader)
        return f"broker {leader}"
    if fault.name.startswith("Ray worker node"):
        run.ray.kill_node(1)
        return "worker-1"
    raise ValueError(fault.name)


def undo(fault: Fault, run: Run, detail: str) -> None:
    if fault.name.startswith("Redis"):
        run.redis("start")
    elif fault.name.startswith("leader broker"):
        run.kafka.start_broker(int(detail.split()[-1]))


def load(run: Run, settings: Any, rate: float) -> dict[str, Any]:
    from load_tests.generator import JobGenerator
    from load_tests.profiles import Profile
    from schemas.messages import now_ms
    from workers.kafka_io import make_producer

    look = Look(settings)
    collector = collector_class()(settings).start()
    sampler = Sampler(look).start()
    profile = Profile("chaos", rate=rate, duration_s=LOAD_S, max_jobs=10**6, candidates=(5, 20), queries=150)
    gen = JobGenerator(profile, seed=12)
    producer = make_producer(settings, linger_ms=5)
    produced: dict[str, tuple[int, int]] = {}
    failed: list[str] = []
    faults: list[dict[str, Any]] = []
    pending = list(SCHEDULE)
    undoing: list[tuple[Fault, str]] = []
    t0 = time.monotonic()
    started_ms = now_ms()
    next_at = t0
    try:
        while (elapsed := time.monotonic() - t0) < LOAD_S:
            if pending and elapsed >= pending[0].at_s:
                fault = pending.pop(0)
                detail = inject(fault, run, look, settings)
                faults.append({"t_s": round(elapsed, 1), "fault": fault.name, "detail": detail, "at_ms": now_ms()})
                print(f"[{elapsed:6.1f} s] fault: {fault.name} ({detail})", file=sys.stderr, flush=True)
                if fault.until_s is not None:
                    undoing.append((fault, detail))
            for fault, detail in list(undoing):
                if fault.until_s is not None and elapsed >= fault.until_s:
                    undo(fault, run, detail)
                    undoing.remove((fault, detail))
                    print(f"[{elapsed:6.1f} s] undone: {fault.name}", file=sys.stderr, flush=True)
            job = gen.next_job().model_copy(update={"created_at": now_ms()})
            topic = settings.kafka.feeds[job.feed].topic
            fut = producer.send(topic, job.model_dump_json().encode(), key=job.job_id.encode())
            fut.add_callback(lambda _md, j=job: produced.__setitem__(j.job_id, (j.created_at, len(j.candidates))))
            fut.add_errback(lambda exc, j=job: failed.append(f"{j.job_id}: {exc!r}"))
            next_at += 1 / rate
            time.sleep(max(0.0, next_at - time.monotonic()))
        for fault, detail in undoing:
            undo(fault, run, detail)
        producer.flush(120)
        print(f"load done: {len(produced)} jobs acknowledged; draining ...", file=sys.stderr, flush=True)
        collector.wait_for(set(produced), 240)
    finally:
        producer.close()
        sampler.stop()
        collector.stop()
    return {
        "started_ms": started_ms,
        "produced": produced,
        "failed_sends": failed,
        "faults": faults,
        "samples": sampler.samples,
        "collector": collector,
    }


def summarize(raw: dict[str, Any]) -> dict[str, Any]:
    from load_tests.report import summarize as base_summary
    from load_tests.report import timeline

    produced, collector, started_ms = raw["produced"], raw["collector"], raw["started_ms"]
    outcomes = collector.outcomes
    base = base_summary(produced, outcomes, started_ms, collector.duplicates)
    arrivals = sorted(o.arrived_ms / 1000 for j, o in outcomes.items() if j in produced)
    end = max(arrivals, default=started_ms / 1000)
    gaps = {
        f["fault"]: longest_gap(arrivals, f["at_ms"] / 1000, min(f["at_ms"] / 1000 + GAP_WINDOW_S, end))
        for f in raw["faults"]
    }
    dupes = {j: r for j, r in collector.rankings.items() if len(r) > 1}
    line = {
        "produced": len(produced),
        "results": base["results"],
        "dead_letters": base["dlq"],
        "duplicates": collector.duplicates,
        "duplicates_identical": all(all(x == r[0] for x in r) for r in dupes.values()),
        "lost": base["lost"],
        "failed_sends": len(raw["failed_sends"]),
        "longest_gap_s": longest_gap(arrivals, arrivals[0], end) if arrivals else None,
        "gap_after_fault_s": gaps,
        "duplicates_after_fault": {
            f["fault"]: sum(1 for d in collector.duplicate_ms if 0 <= d - f["at_ms"] < GAP_WINDOW_S * 1000)
            for f in raw["faults"]
        },
        "p50_ms": base["p50_ms"],
        "p95_ms": base["p95_ms"],
        "p99_ms": base["p99_ms"],
    }
    return {"summary": line, "timeline": timeline(produced, outcomes, started_ms, window_s=5), "base": base}


def plot(record: dict[str, Any], path: Path) -> Path:
    """One figure: throughput and p99 (top), lag (middle), consumers and replicas (bottom), faults marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = record["started_ms"] / 1000
    rows, samples = record["timeline"], record["samples"]
    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, figsize=(11, 8), sharex=True)
    ts = [r["t_s"] + 2.5 for r in rows]
    ax1.plot(ts, [r["jobs_per_s"] for r in rows], color="tab:green", label="results/s")
    ax1.set_ylabel("results/s (5 s windows)")
    ax1b = ax1.twinx()
    ax1b.plot(ts, [r["p99_ms"] / 1000 for r in rows], color="tab:red", label="p99 (s)")
    ax1b.set_ylabel("p99 end-to-end (s)")
    ax1.legend(loc="upper left", fontsize=8)
    ax1b.legend(loc="upper right", fontsize=8)
    ax1.set_title(f"chaos run: {record['summary']['produced']} jobs, lost {record['summary']['lost']}")
    st = [s["t"] - t0 for s in samples]
    ax2.plot(st, [s.get("lag") for s in samples], color="tab:orange")
    ax2.set_ylabel("consumer lag (jobs)")
    ax3.step(st, [s.get("consumers") for s in samples], where="post", label="consumers")
    ax3.step(st, [s.get("replicas") for s in samples], where="post", label="Reranker replicas")
    ax3.set_ylabel("running")
    ax3.set_xlabel("seconds since the load started")
    ax3.legend(loc="lower left")
    for f in record["faults"]:
        for ax in (ax1, ax2, ax3):
            ax.axvline(f["t_s"], color="grey", linestyle="--", linewidth=1)
        ax1.annotate(f["fault"], (f["t_s"], 1), xycoords=("data", "axes fraction"), rotation=90, va="top", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def print_timeline(record: dict[str, Any]) -> None:
    t0 = record["started_ms"] / 1000
    marks = {int(f["t_s"] // 5) * 5: f["fault"] for f in record["faults"]}
    print(f"{'t_s':>5} {'results/s':>9} {'p99_s':>6} {'lag':>5} {'consumers':>9} {'replicas':>8}  fault")
    for r in record["timeline"]:
        window = [s for s in record["samples"] if r["t_s"] <= s["t"] - t0 < r["t_s"] + 5]
        last = window[-1] if window else {}
        print(
            f"{r['t_s']:>5} {r['jobs_per_s']:>9.1f} {r['p99_ms'] / 1000:>6.1f} {last.get('lag')!s:>5}"
            f" {last.get('consumers')!s:>9} {last.get('replicas')!s:>8}  {marks.get(r['t_s'], '')}"
        )


def main(argv: list[str] | None = None) -> int:
    from load_tests.report import RESULTS_DIR
    from schemas.settings import load_settings

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=6.0, help="jobs/s of steady load")
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args(argv)
    run_id = uuid.uuid4().hex[:6]
    run = Run(Path(tempfile.mkdtemp(prefix=f"chaos-{run_id}-", dir="/tmp")))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        env = start(run, run_id)
        settings = load_settings(environ={**os.environ, **env})
        raw = load(run, settings, args.rate)
    except BaseException:
        print(f"chaos run failed; state and logs kept in {run.state}", file=sys.stderr)
        raise
    finally:
        run.teardown()
    shutil.rmtree(run.state, ignore_errors=True)
    result = summarize(raw)
    record = {
        "run_id": run_id,
        "started_ms": raw["started_ms"],
        "schedule": [f.__dict__ for f in SCHEDULE],
        "faults": raw["faults"],
        "samples": raw["samples"],
        "timeline": result["timeline"],
        "summary": result["summary"],
        "failed_sends": raw["failed_sends"][:20],
    }
    print_timeline(record)
    if not args.no_save:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        path = RESULTS_DIR / f"chaos-{stamp}.json"
        path.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {path} and {plot(record, path.with_suffix('.png'))}", flush=True)
    print(json.dumps(result["summary"]), flush=True)
    return 0 if result["summary"]["lost"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
