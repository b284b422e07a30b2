"""The Grafana dashboard of rerank-stream, generated from the short panel list below.

Queries read the metrics the processes export: the worker's (``workers/metrics.py``), the HTTP
API's (``ApiMetrics`` in ``serve_app/http_api.py``) and Ray's, where Serve's own series and the
autoscaling policy's gauges (``serve_app/autoscaling.py``) get the ``ray_`` prefix. A test checks
every metric and label named here against the ``/metrics`` output of a real run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DASHBOARD_FILE = Path(__file__).resolve().parent / "grafana" / "rerank-stream.json"
UID = "rerank-stream"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"
FEED = 'feed=~"$feed"'


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    title: str
    unit: str
    description: str
    queries: list[Query] = field(default_factory=list)


def _quantiles(inner: str, legend: str, by: str = "le") -> list[Query]:
    """p50 / p95 / p99 of a histogram's rate (``inner`` = the bucket series with its selector)."""
    return [
        Query(f"histogram_quantile({q}, sum by ({by}) (rate({inner}[{RATE}])))", f"p{round(q * 100)}{legend}")
        for q in (0.5, 0.95, 0.99)
    ]


ROWS: list[tuple[str, list[Panel]]] = [
    (
        "Throughput",
        [
            Panel(
                "Jobs per feed",
                "ops",
                "Kafka jobs consumed and results published per second, by feed.",
                [
                    Query(f"sum by (feed) (rate(rerank_worker_consumed_total{{{FEED}}}[{RATE}]))", "consumed {{feed}}"),
                    Query(
                        f"sum by (feed) (rate(rerank_worker_published_total{{{FEED}}}[{RATE}]))", "published {{feed}}"
                    ),
                ],
            ),
            Panel(
                "HTTP requests",
                "reqps",
                "Requests per second by route and status (the Serve HTTP API).",
                [Query(f"sum by (route, status) (rate(rerank_http_requests_total[{RATE}]))", "{{route}} {{status}}")],
            ),
        ],
    ),
    (
        "Latency",
        [
            Panel(
                "Job latency (created_at to result)",
                "s",
                "Kafka jobs: from the producer's created_at until the result is handed to the producer.",
                _quantiles("rerank_worker_job_seconds_bucket", ""),
            ),
            Panel(
                "HTTP latency",
                "s",
                "HTTP requests by route, as the ingress measures them.",
                _quantiles("rerank_http_request_seconds_bucket", " {{route}}", by="le, route"),
            ),
            Panel(
                "Reranker replica latency",
                "ms",
                "Time a Reranker replica spends on one scoring call (Ray Serve's own histogram).",
                _quantiles('ray_serve_deployment_processing_latency_ms_bucket{deployment="Reranker"}', ""),
            ),
        ],
    ),
    (
        "Cache",
        [
            Panel(
                "Cache hit ratio",
                "percentunit",
                "Share of (query, document) scores served from the Redis cache, Kafka and HTTP paths.",
                [
                    Query(
                        f"sum(rate(rerank_worker_cache_hits_total[{RATE}])) / (sum(rate(rerank_worker_cache_hits_total[{RATE}]))"
                        f" + sum(rate(rerank_worker_cache_misses_total[{RATE}])))",
                        "workers",
                    ),
                    Query(
                        f'sum(rate(rerank_http_documents_total{{source="cache"}}[{RATE}]))'
                        f" / sum(rate(rerank_http_documents_total[{RATE}]))",
                        "HTTP",
                    ),
                ],
            ),
            Panel(
                "Cache bypassed",
                "short",
                "Documents whose cache read or write was skipped because Redis was unavailable (per worker, since start).",
                [Query("sum by (instance) (rerank_worker_cache_bypassed)", "{{instance}}")],
            ),
        ],
    ),
    (
        "Scaling",
        [
            Panel(
                "Consumer lag",
                "short",
                "Jobs waiting in the input topics: per topic as the consumers see it, and the total the autoscaling policy reads.",
                [
                    Query("sum by (topic) (rerank_worker_consumer_lag)", "{{topic}}"),
                    Query("max(ray_rerank_autoscaler_kafka_lag)", "seen by the Serve autoscaler"),
                ],
            ),
            Panel(
                "Replicas and consumers",
                "short",
                "Healthy Reranker replicas and what the policy asks for; consumer processes and jobs in flight.",
                [
                    Query('sum(ray_serve_deployment_replica_healthy{deployment="Reranker"})', "Reranker replicas"),
                    Query("max(ray_rerank_autoscaler_desired_replicas)", "desired replicas"),
                    Query("count(rerank_worker_in_flight)", "consumers"),
                    Query("sum(rerank_worker_in_flight)", "jobs in flight"),
                ],
            ),
        ],
    ),
    (
        "Errors",
        [
            Panel(
                "Dead letters by kind",
                "ops",
                "Dead letters published per second, by reason (see docs/architecture.md, whose fault).",
                [Query(f"sum by (kind) (rate(rerank_worker_dead_lettered_total{{{FEED}}}[{RATE}]))", "{{kind}}")],
            ),
            Panel(
                "HTTP errors",
                "reqps",
                "Requests answered 4xx or 5xx per second, by route and status.",
                [
                    Query(
                        f'sum by (route, status) (rate(rerank_http_requests_total{{status=~"4..|5.."}}[{RATE}]))',
                        "{{route}} {{status}}",
                    )
                ],
            ),
        ],
    ),
]

VARIABLES: list[dict[str, Any]] = [
    {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus", "current": {}},
    {
        "name": "feed",
        "label": "Feed",
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": "label_values(rerank_worker_consumed_total, feed)", "refId": "feed"},
        "definition": "label_values(rerank_worker_consumed_total, feed)",
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {},
        "refresh": 2,
    },
]


def _panel(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    return {
        "id": panel_id,
        "type": "timeseries",
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": q.expr, "legendFormat": q.legend}
            for i, q in enumerate(panel.queries)
        ],
    }


def dashboard() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    y = 0
    for title, row in ROWS:
        panels.append(
            {
                "id": len(panels) + 1,
                "type": "row",
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        y += 1
        for i, panel in enumerate(row):
            panels.append(_panel(panel, len(panels) + 1, 12 * (i % 2), y + 8 * (i // 2)))
        y += 8 * ((len(row) + 1) // 2)
    return {
        "uid": UID,
        "title": "rerank-stream",
        "description": "Workers, HTTP API and Ray Serve of rerank-stream (generated by deploy/dashboard.py).",
        "tags": ["rerank-stream"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "timezone": "browser",
        "annotations": {"list": []},
        "templating": {"list": VARIABLES},
        "panels": panels,
    }


def queries(doc: dict[str, Any]) -> list[str]:
    """Every PromQL expression of a dashboard document: panel targets and query variables."""
    exprs = [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in doc["templating"]["list"] if v["type"] == "query"]
    return exprs


def render_dashboard() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"
