"""Prometheus metrics of the HTTP path, per ingress replica (a registry of its own, no global state)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "rerank_http_requests_total", "HTTP requests.", ["route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "rerank_http_request_seconds",
            "Request latency.",
            ["route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.documents = Counter("rerank_http_documents_total", "Documents ranked.", ["source"], registry=self.registry)

    def observe(self, route: str) -> Observed:
        return Observed(self, route)


class Observed:
    """Counts a request by route and final status and times it (``async with metrics.observe(route)``)."""

    def __init__(self, metrics: ApiMetrics, route: str):
        self.metrics, self.route = metrics, route

    async def __aenter__(self) -> None:
        self.t0 = time.perf_counter()

    async def __aexit__(self, exc_type, exc, tb) -> None:  # None: an exception goes on
        status = 200 if exc is None else getattr(exc, "status", 500)
        self.metrics.requests.labels(self.route, str(status)).inc()
        self.metrics.latency.labels(self.route).observe(time.perf_counter() - self.t0)
