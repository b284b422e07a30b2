"""Every metric and label the Grafana dashboard queries is in the /metrics output of a real run: a
`rerank-stream worker` subprocess on the local Kafka, Redis and Ray Serve (results and a dead letter),
the HTTP API's /metrics after a request, and Ray's own metrics endpoint of the test cluster (Serve's
series and the autoscaling policy's gauges, scraped rather than taken from a documented list)."""

from __future__ import annotations

import re
import time
from collections import defaultdict

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from deploy.dashboard import dashboard, queries
from tests.fixtures_worker import make_jobs
from tests.support.net import free_port

PROMQL_WORDS = frozenset(
    "sum min max avg count rate irate increase histogram_quantile by without on ignoring group_left group_right "
    "and or unless bool offset".split()
)
SCRAPE_LABELS = frozenset({"instance", "job"})  # added by Prometheus when it scrapes, not in /metrics


def names_in(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, label names) a PromQL expression (or Grafana's label_values()) reads."""
    values = re.fullmatch(r"\s*label_values\(\s*(\w+)\s*,\s*(\w+)\s*\)\s*", expr)
    if values:
        return {values[1]}, {values[2]}
    labels: set[str] = set()
    for body in re.findall(r"\{([^}]*)\}", expr):
        labels |= set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", body))
    for body in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
        labels |= {label.strip() for label in body.split(",") if label.strip()}
    bare = re.sub(r'\{[^}]*\}|\[[^\]]*\]|\b(?:by|without)\s*\([^)]*\)|"[^"]*"', " ", expr)
    metrics = {word for word in re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", bare) if word not in PROMQL_WORDS}
    return metrics, labels


def test_the_query_reader_finds_metrics_and_labels():
    assert names_in('sum by (le, route) (rate(x_bucket{deployment="R", status=~"4.."}[$__rate_interval]))') == (
        {"x_bucket"},
        {"le", "route", "deployment", "status"},
    )
    assert names_in("sum(rate(a_total[5m])) / (sum(rate(a_total[5m])) + sum(rate(b_total[5m])))") == (
        {"a_total", "b_total"},
        set(),
    )
    assert names_in("label_values(rerank_worker_consumed_total, feed)") == ({"rerank_worker_consumed_total"}, {"feed"})


def _samples(text: str) -> dict[str, list[set[str]]]:
    """Sample name -> the label-name sets it was exported with (parsed as Prometheus would)."""
    out: dict[str, list[set[str]]] = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name].append(set(sample.labels))
    return out


def missing_from(exprs: list[str], samples: dict[str, list[set[str]]]) -> list[str]:
    """What the expressions read that the samples lack: metrics, or labels no series of its metrics carries."""
    problems = []
    for expr in exprs:
        metrics, labels = names_in(expr)
        for metric in sorted(metrics - samples.keys()):
            problems.append(f"{metric} (in {expr})")
        carried = set().union(*(label_set for m in metrics for label_set in samples.get(m, [])))
        for label in sorted(labels - carried - SCRAPE_LABELS):
            problems.append(f"label {label} on {sorted(metrics)} (in {expr})")
    return problems


def test_the_metric_check_can_fail():
    samples = {"a_total": [{"feed"}]}
    assert missing_from(["sum by (feed) (rate(a_total[1m]))"], samples) == []
    assert missing_from(["sum by (kind) (rate(a_total[1m])) + b"], samples) == [
        "b (in sum by (kind) (rate(a_total[1m])) + b)",
        "label kind on ['a_total', 'b'] (in sum by (kind) (rate(a_total[1m])) + b)",
    ]


def _ray_metrics_url() -> str:
    import ray

    node = next(n for n in ray.nodes() if n["Alive"])
    return f"http://127.0.0.1:{node['MetricsExportPort']}/metrics"


@pytest.mark.slow
def test_every_dashboard_query_reads_metrics_of_a_real_run(
    serve_stack, extra_app, make_pipeline, kafka_bootstrap, unique_name
):
    exprs = queries(dashboard())
    # An app whose autoscaling policy reads Kafka lag (topics that do not exist: a backlog of 0), so the
    # policy's gauges get values; the Reranker's own series come from the requests below.
    feeds = {"recommendation": {"topic": f"{unique_name}.none", "instruction": "x"}}
    extra_app(
        "dashboard",
        scale_on_kafka_lag=True,
        max_replicas=2,
        lag_poll_interval_s=0.5,
        kafka={"bootstrap_servers": kafka_bootstrap, "group_id": f"{unique_name}.g", "feeds": feeds},
    )

    port = free_port()
    pipeline = make_pipeline()
    worker = pipeline.start_worker(RERANK_WORKER_METRICS_PORT=str(port))
    worker.wait_ready()
    jobs = make_jobs(unique_name, 2, docs=3)
    pipeline.produce(jobs)
    pipeline.send_raw(pipeline.settings.kafka.feeds["recommendation"].topic, b"not json")
    pipeline.wait_for([j.job_id for j in jobs], dlq=1)

    with httpx.Client(base_url=serve_stack.base_url, timeout=60) as http:
        body = {"query": "coffee", "documents": ["a quiet cafe", "a loud club"]}
        assert http.post("/v1/rerank", json=body).status_code == 200
        http_text = http.get("/metrics").text
        deadline = time.monotonic() + 30
        while True:  # the worker reports lag after its first commits
            worker_text = http.get(f"http://127.0.0.1:{port}/metrics").text
            if "rerank_worker_consumer_lag{" in worker_text or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        app_samples = {**_samples(worker_text), **_samples(http_text)}

        # Ray exports every ~10 s: poll until what the dashboard reads from Ray is there.
        deadline = time.monotonic() + 90
        while True:
            samples = {**_samples(http.get(_ray_metrics_url()).text), **app_samples}
            problems = missing_from(exprs, samples)
            if not problems or time.monotonic() > deadline:
                break
            time.sleep(2)
    assert not problems, "the dashboard reads what no process exports:\n" + "\n".join(problems)
