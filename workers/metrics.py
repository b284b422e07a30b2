"""Prometheus metrics of the worker (one set per process; Ray actors are separate processes)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

CONSUMED = Counter("rerank_worker_consumed_total", "Job records consumed.", ["feed"])
PUBLISHED = Counter("rerank_worker_published_total", "Results published.", ["feed"])
DEAD_LETTERED = Counter("rerank_worker_dead_lettered_total", "Dead letters published.", ["feed", "kind"])
CACHE_HITS = Counter("rerank_worker_cache_hits_total", "Candidate scores served from the cache.")
CACHE_MISSES = Counter("rerank_worker_cache_misses_total", "Candidate scores computed by the model.")
JOB_LATENCY = Histogram(
    "rerank_worker_job_seconds",
    "created_at until the result was handed to the producer.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
JOB_ID_REUSED = Counter(
    "rerank_worker_job_id_reused_total", "Jobs whose job_id was seen before with different content.", ["feed"]
)
IN_FLIGHT = Gauge("rerank_worker_in_flight", "Jobs being scored.")
LAG = Gauge(
    "rerank_worker_consumer_lag", "High watermark minus position, per assigned partition.", ["topic", "partition"]
)


CACHE_BYPASSED = Gauge(
    "rerank_worker_cache_bypassed", "Cache operations skipped or failed because Redis was unavailable (per document)."
)


def track_cache(cache) -> None:
    """Export the cache's own bypass counter (the cache module stays free of prometheus)."""
    CACHE_BYPASSED.set_function(lambda: cache.stats["bypassed"])


def serve_metrics(port: int | None) -> None:
    if port is not None:
        start_http_server(port)
