"""No message can stop a consumer group: foreign producers (librdkafka via confluent-kafka, and kcat)
send valid jobs with every codec plus poison records into a running two-worker group. Every bad
record ends as exactly one dead letter, every good job behind it is answered, no worker exits."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from schemas.messages import ErrorKind
from tests.fixtures_worker import make_jobs

pytestmark = pytest.mark.slow

CODECS = ("gzip", "snappy", "lz4", "zstd")


def _poison(topic_feed: str) -> list[tuple[str, bytes | None, set[ErrorKind]]]:
    """(name, value, acceptable dead-letter kinds) for each poison record."""
    job = {"job_id": "p", "feed": topic_feed, "query": "q", "candidates": [{"id": "a", "text": "x"}]}
    return [
        (
            "lone-surrogate-query",
            json.dumps({**job, "job_id": "p-sur-q", "query": "\ud800"}).encode(),
            {ErrorKind.invalid_text},
        ),
        (
            "lone-surrogate-text",
            json.dumps({**job, "job_id": "p-sur-t", "candidates": [{"id": "a", "text": "ok \udfff"}]}).encode(),
            {ErrorKind.invalid_text},
        ),
        ("deep-nesting", b"[" * 10_000 + b"]" * 10_000, {ErrorKind.too_deep}),
        (
            "deep-nesting-in-job",
            json.dumps({**job, "job_id": "p-deep"}).encode()[:-1] + b',"x":' + b"[" * 10_000 + b"]" * 10_000 + b"}",
            {ErrorKind.too_deep},
        ),
        (
            "invalid-but-800kb",
            json.dumps({**job, "job_id": "p-big", "candidates": [], "pad": "x" * 800_000}).encode(),
            {ErrorKind.schema_violation},
        ),
        (
            "huge-int",
            json.dumps({**job, "job_id": "p-int"}).encode()[:-1] + b',"top_k":' + b"9" * 5000 + b"}",
            {ErrorKind.invalid_json},
        ),
        ("nan", json.dumps({**job, "job_id": "p-nan"}).encode()[:-1] + b',"threshold":NaN}', {ErrorKind.invalid_json}),
        ("not-utf8", b"\xff\xfe\xfd", {ErrorKind.undecodable}),
        ("null", None, {ErrorKind.undecodable}),
        ("array", b"[1,2,3]", {ErrorKind.schema_violation}),
    ]


def test_foreign_producers_poison_and_every_codec_into_a_two_worker_group(make_pipeline, kafka_bootstrap):
    from confluent_kafka import Producer

    p = make_pipeline(RERANK_KAFKA_TOPIC_PARTITIONS="2")
    rec_topic = p.settings.kafka.feeds["recommendation"].topic
    workers = [p.start_worker(), p.start_worker()]
    for w in workers:
        w.wait_ready()
    good, bad = [], []
    for codec in CODECS:
        producer = Producer(
            {
                "bootstrap.servers": kafka_bootstrap,
                "compression.type": codec,
                "linger.ms": 20,
                "message.max.bytes": 4_000_000,
                "acks": "all",
            }
        )
        jobs = make_jobs(f"poison-{codec}", 6, docs=4)
        for k, job in enumerate(jobs):
            producer.produce(rec_topic, job.model_dump_json().encode(), key=job.job_id.encode(), partition=k % 2)
            if k == 2:  # poison in the middle of each codec's batch, on both partitions
                for name, value, kinds in _poison("recommendation"):
                    for part in (0, 1):
                        producer.produce(rec_topic, value, key=f"{codec}-{name}-{part}".encode(), partition=part)
                        bad.append((name, kinds))
        assert producer.flush(30) == 0, f"{codec}: undelivered messages"
        good += [j.job_id for j in jobs]
    p.wait_for(good, timeout=120, dlq=len(bad))
    time.sleep(1)
    p.poll(0.5)
    assert len(p.dead_letters) == len(bad), sorted(d.reason[:80] for d in p.dead_letters)
    got = sorted(d.error_kind for d in p.dead_letters)
    assert got == sorted(k for _, kinds in bad for k in list(kinds)[:1]), got
    assert all(d.reason for d in p.dead_letters)
    assert all(len(r) >= 1 for r in p.results.values()) and set(good) <= p.results.keys()
    for w in workers:
        assert w.proc.poll() is None, f"worker {w.name} exited:\n{w.output[-3000:]}"
        assert "Traceback" not in w.output, w.output[-3000:]


def test_kcat_poison_with_zstd_is_dead_lettered(make_pipeline, kafka_bootstrap):
    kcat = subprocess.run(["deploy/local/tools.sh", "ensure-kcat"], capture_output=True, text=True, timeout=600)
    assert kcat.returncode == 0, kcat.stderr
    p = make_pipeline(RERANK_KAFKA_TOPIC_PARTITIONS="2")
    rec_topic = p.settings.kafka.feeds["recommendation"].topic
    w = p.start_worker()
    w.wait_ready()
    job = make_jobs("kcat", 1, docs=3)[0]
    lines = [
        b'{"job_id": "k1", "feed": "recommendation", "query": "\\ud800", "candidates": [{"id": "a", "text": "x"}]}',
        b"{not json",
        job.model_dump_json().encode(),
    ]
    proc = subprocess.run(
        [kcat.stdout.strip(), "-P", "-b", kafka_bootstrap, "-t", rec_topic, "-z", "zstd", "-p", "0"],
        input=b"\n".join(lines) + b"\n",
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    p.wait_for([job.job_id], timeout=60, dlq=2)
    assert sorted(d.error_kind for d in p.dead_letters) == sorted([ErrorKind.invalid_text, ErrorKind.invalid_json])
    assert w.proc.poll() is None
