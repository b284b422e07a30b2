"""Load generator: ``python -m load_tests.run --profile smoke|steady|burst|zipf [--rate R] [--duration S]``.

Produces generated jobs to the input topics at the profile's rate, measures every job's outcome
from the output and dead-letter topics, samples replicas and lag, then writes
``load_tests/results/<profile>-<timestamp>.{json,md}`` and PNG plots. Starts the Serve app and a
worker in this process on run-unique topics (``--external``: use the configured topics and the
pipeline already running there). The LAST stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import uuid
from dataclasses import asdict
from datetime import UTC, datetime

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

KEYS = ("jobs", "jobs_per_s", "docs_per_s", "p50_ms", "p95_ms", "p99_ms", "cache_hit_ratio", "dlq", "lost")


def progress(label: str, done: int, total: int, extra: str = "") -> None:
    width = 30
    filled = int(width * done / max(total, 1))
    sys.stderr.write(f"\r{label:<8} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} {extra}   ")
    sys.stderr.flush()


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def run_profile(profile, settings, *, external: bool = False, drain_s: float = 180, seed: int = 0) -> dict:
    from load_tests.collector import Collector
    from load_tests.generator import JobGenerator
    from load_tests.harness import LocalPipeline
    from load_tests.report import summarize, timeline
    from load_tests.sampler import Sampler
    from schemas.messages import now_ms

    gen = JobGenerator(profile, seed=seed)
    produced: dict[str, tuple[int, int]] = {}
    with LocalPipeline(settings, external=external) as pipe:
        collector = Collector(settings).start()
        sampler = Sampler(settings).start()
        started_ms = now_ms()
        t0 = time.monotonic()
        next_at = t0
        while len(produced) < profile.max_jobs and time.monotonic() - t0 < profile.duration_s:
            rate = profile.rate_at(time.monotonic() - t0)
            if rate:
                next_at += 1 / rate
                time.sleep(max(0.0, next_at - time.monotonic()))
            job = pipe.produce(gen.next_job())
            produced[job.job_id] = (job.created_at, len(job.candidates))
            if len(produced) % 10 == 0:
                progress("produce", len(produced), profile.max_jobs, f"done {len(collector.outcomes)}")
        pipe.flush()
        collector.wait_for(set(produced), drain_s, lambda d: progress("drain", d, len(produced)))
        sys.stderr.write("\n")
        sampler.stop()
        collector.stop()
        cache = pipe.cache_stats()
    summary = summarize(produced, collector.outcomes, started_ms, collector.duplicates)
    return {
        "profile": profile.name,
        "profile_config": asdict(profile),
        "started_ms": started_ms,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "model": settings.model.model,
        "summary": summary,
        "worker_cache": cache,
        "timeline": timeline(produced, collector.outcomes, started_ms),
        "samples": sampler.samples,
    }


def main(argv: list[str] | None = None) -> int:
    from load_tests.profiles import PROFILES
    from load_tests.report import write_run
    from schemas.settings import load_settings
    from workers.topics import isolated_settings

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", choices=sorted(PROFILES), default="smoke")
    ap.add_argument("--rate", type=float, help="jobs/s (0 = as fast as possible)")
    ap.add_argument("--duration", type=float, help="seconds of production")
    ap.add_argument("--external", action="store_true", help="use the configured topics and running pipeline")
    ap.add_argument("--no-save", action="store_true", help="do not write result files")
    args = ap.parse_args(argv)
    import logging

    logging.basicConfig(level="WARNING")
    logging.getLogger("kafka").setLevel(logging.ERROR)
    profile = PROFILES[args.profile].with_overrides(None if args.rate is None else (args.rate or None), args.duration)
    if args.rate == 0:
        from dataclasses import replace

        profile = replace(profile, rate=None)
    base = load_settings()
    settings = base if args.external else isolated_settings(base, "load", uuid.uuid4().hex[:6])
    record = run_profile(profile, settings, external=args.external)
    if not args.no_save:
        path = write_run(profile.name, record)
        print(f"wrote {path} (+ .md and plots)", flush=True)
    print(json.dumps({k: record["summary"][k] for k in KEYS}), flush=True)
    return 0 if record["summary"]["lost"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
