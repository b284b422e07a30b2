"""A local multi-node Ray cluster (deploy/local/ray.sh: head + 2 worker nodes): `rerank-stream serve`
and `rerank-stream consumers` join it through serve.ray_address, Reranker replicas and consumers land
on both worker nodes, and killing one node reschedules its replicas and consumers with no job lost."""

from __future__ import annotations

import json
import threading
import time

import pytest

from load_tests.cluster import Cli, RayCluster, wait_until
from tests.fixtures_worker import make_jobs
from tests.support.net import free_port

pytestmark = pytest.mark.slow


@pytest.fixture
def ray_cluster(tmp_path):
    cluster = RayCluster(tmp_path / "state", free_port())
    try:
        yield cluster.start(workers=2)
    finally:
        cluster.stop()


def _counts(look: dict, app: str) -> dict[str, set[str]]:
    """deployment -> the rerank-node labels of the nodes its running replicas are on."""
    labels = look["nodes"]
    return {
        key.split("/", 1)[1]: {labels.get(node, "dead") for node in nodes}
        for key, nodes in look["replicas"].items()
        if key.split("/", 1)[0] in (app, f"{app}-consumers")
    }


def test_replicas_and_consumers_spread_over_nodes_and_survive_a_node_kill(
    ray_cluster, make_pipeline, tiny_qwen_dir, unique_name
):
    app = f"mn{unique_name[-12:]}".replace(".", "-")
    p = make_pipeline()  # topics (2 feeds x 2 partitions), its Redis prefix and group
    env = {**p.env, **ray_cluster.client_env}  # serve.ray_address: the multi-node cluster, not the suite's
    env.update(
        {
            "RERANK_MODEL": str(tiny_qwen_dir),
            "RERANK_MODEL_DEVICE": "cpu",
            "RERANK_MODEL_DTYPE": "float32",
            "RERANK_SERVE_APP_NAME": app,
            "RERANK_SERVE_DEPLOYMENT_NAME": "Reranker",
            "RERANK_SERVE_HTTP_PORT": str(free_port()),
            "RERANK_SERVE_PROXY_LOCATION": "HeadOnly",  # one machine: proxies on every node would share a port
            "RERANK_SERVE_NUM_CPUS": "0.5",
            "RERANK_SERVE_MIN_REPLICAS": "2",
            "RERANK_SERVE_MAX_REPLICAS": "2",
            "RERANK_SERVE_SCALE_ON_KAFKA_LAG": "false",
            "RERANK_WORKER_MIN_CONSUMERS": "2",
            "RERANK_WORKER_MAX_CONSUMERS": "2",
            "RERANK_WORKER_CONSUMER_NUM_CPUS": "0.25",
        }
    )
    serve = Cli("serve", env)
    consumers = None
    try:
        serve.wait_for("serving on", timeout=240)
        consumers = Cli("consumers", env)
        consumers.wait_for("consumers ready", timeout=180)
        look = wait_until(
            lambda: (c := _counts(ray_cluster.placement(), app)).get("Reranker") and c.get("KafkaConsumer") and c,
            60,
            "replicas placed",
        )
        print(f"\nplacement: {json.dumps({k: sorted(v) for k, v in look.items()})}")
        assert look["Reranker"] == {"worker-1", "worker-2"}, look  # Serve spreads replicas over nodes
        assert look["KafkaConsumer"] == {"worker-1", "worker-2"}, look

        jobs = make_jobs("n", 120, docs=6) + make_jobs("nm", 40, docs=6, feed="moderation")
        stop = threading.Event()

        def produce() -> None:
            for i in range(0, len(jobs), 8):  # ~40 jobs/s over ~4 s, then the rest after the kill
                if stop.is_set():
                    return
                p.produce(jobs[i : i + 8])
                time.sleep(0.2)

        producer = threading.Thread(target=produce, daemon=True)
        producer.start()
        time.sleep(1.5)
        killed_at = time.monotonic()
        ray_cluster.kill_node(1)
        producer.join(60)
        p.wait_for([j.job_id for j in jobs], timeout=180)
        answered_in = time.monotonic() - killed_at
        # Until Ray declares the node dead (missed health checks) Serve still lists its replicas as running:
        # wait for the rescheduled ones, not just for two of each.
        after = wait_until(
            lambda: (
                (c := _counts(ray_cluster.placement(), app))
                and len(ray_cluster.placement()["replicas"].get(f"{app}/Reranker", [])) == 2
                and len(ray_cluster.placement()["replicas"].get(f"{app}-consumers/KafkaConsumer", [])) == 2
                and not (c.get("Reranker", set()) | c.get("KafkaConsumer", set())) & {"worker-1", "dead"}
                and c
            ),
            120,
            "2 Reranker replicas and 2 consumers running again, none on the killed node",
        )
        print(
            f"after the kill: {json.dumps({k: sorted(v) for k, v in after.items()})}; all jobs answered {answered_in:.1f} s after it"
        )
        assert "worker-1" not in after["Reranker"] | after["KafkaConsumer"]
        assert not p.dead_letters
        dupes = [rs for rs in p.results.values() if len(rs) > 1]
        for rs in dupes:  # only the same job ranked again
            assert all([r.id for r in x.ranked] == [r.id for r in rs[0].ranked] for x in rs)
    finally:
        if consumers is not None:
            consumers.stop()
        serve.stop()
