"""Every standard Kafka codec is consumed, whoever produced the batch, and every producer codec round-trips.

Producers in other languages (librdkafka via confluent-kafka and kcat, the Java client) pick their own
codec; the worker's kafka-python consumer must decode all of them. A spy on kafka-python's batch
decoder proves each batch really arrived compressed with the codec under test.
"""

from __future__ import annotations

import json
import random
import subprocess
import time
from pathlib import Path

import pytest
from kafka import TopicPartition
from kafka.admin import NewTopic
from kafka.record.default_records import DefaultRecordBatch

from schemas.settings import Settings, load_settings
from workers.kafka_io import make_consumer, make_producer, missing_codecs

ROOT = Path(__file__).resolve().parent.parent
CODECS = ("gzip", "snappy", "lz4", "zstd")
CODEC_IDS = {
    "gzip": DefaultRecordBatch.CODEC_GZIP,
    "snappy": DefaultRecordBatch.CODEC_SNAPPY,
    "lz4": DefaultRecordBatch.CODEC_LZ4,
    "zstd": DefaultRecordBatch.CODEC_ZSTD,
}
N = 30


def settings_with(compression_type: str, bootstrap: str) -> Settings:
    base = load_settings()
    kafka = {**base.kafka.model_dump(), "bootstrap_servers": bootstrap, "compression_type": compression_type}
    return Settings.model_validate({**base.model_dump(), "kafka": kafka})


def messages(tag: str, n: int = N) -> list[bytes]:
    """Result-shaped JSON values (ids, scores, multilingual text): compressible like the real ones, no two alike."""
    from load_tests import corpus

    rng = random.Random(tag)
    out = []
    for i in range(n):
        ranked = [{"id": f"doc-{k}", "score": round(rng.random(), 6), "rank": k + 1} for k in range(20)]
        body = {"job_id": f"{tag}-{i}", "query": corpus.query(rng), "ranked": ranked, "note": corpus.document(rng)}
        out.append(json.dumps(body, ensure_ascii=False).encode())
    return out


@pytest.fixture
def decoded_codecs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Codec ids of the compressed batches kafka-python decoded during the test."""
    seen: list[int] = []
    original = DefaultRecordBatch._assert_has_codec

    def spy(self, compression_type):
        seen.append(compression_type)
        return original(self, compression_type)

    monkeypatch.setattr(DefaultRecordBatch, "_assert_has_codec", spy)
    return seen


@pytest.fixture(scope="session")
def kcat() -> str:
    """kcat, installed with apt-get by deploy/local/tools.sh when missing."""
    proc = subprocess.run([ROOT / "deploy/local/tools.sh", "ensure-kcat"], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0 or not proc.stdout.strip():
        pytest.fail(f"kcat is required by the codec tests and could not be provided:\n{proc.stderr}")
    return proc.stdout.strip().splitlines()[-1]


def confluent_producer_cls():
    try:
        from confluent_kafka import Producer
    except ImportError as exc:
        pytest.fail(f"confluent-kafka is a dev dependency of these tests: pip install -e '.[dev]' ({exc})")
    return Producer


def new_topic(kafka_admin, name: str) -> str:
    kafka_admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])
    return name


def read_back(settings: Settings, topic: str, want: int, timeout_s: float = 30.0) -> list[bytes]:
    """Every value of the topic, in order, through the worker's own consumer factory."""
    consumer = make_consumer(settings, group_id=f"{topic}-reader")
    got: list[bytes] = []
    try:
        consumer.assign([TopicPartition(topic, 0)])
        consumer.seek_to_beginning()
        deadline = time.monotonic() + timeout_s
        while len(got) < want and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                got.extend(r.value for r in records)
    finally:
        consumer.close()
    return got


@pytest.mark.parametrize("codec", CODECS)
def test_librdkafka_batches_are_consumed(codec, kafka_bootstrap, kafka_admin, unique_name, decoded_codecs):
    topic = new_topic(kafka_admin, f"{unique_name}-rdk")
    values = messages(topic)
    producer = confluent_producer_cls()(
        {"bootstrap.servers": kafka_bootstrap, "compression.type": codec, "acks": "all", "linger.ms": 20}
    )
    errors: list[str] = []

    def delivered(err, _msg) -> None:
        if err is not None:
            errors.append(str(err))

    for v in values:
        producer.produce(topic, v, on_delivery=delivered)
    assert producer.flush(30) == 0 and not errors, errors

    assert read_back(settings_with("gzip", kafka_bootstrap), topic, len(values)) == values
    assert set(decoded_codecs) == {CODEC_IDS[codec]}


@pytest.mark.parametrize("codec", CODECS)
def test_kcat_batches_are_consumed(codec, kcat, kafka_bootstrap, kafka_admin, unique_name, decoded_codecs):
    topic = new_topic(kafka_admin, f"{unique_name}-kcat")
    values = messages(topic)
    proc = subprocess.run(
        [kcat, "-P", "-b", kafka_bootstrap, "-t", topic, "-z", codec, "-X", "linger.ms=20", "-X", "acks=all"],
        input=b"\n".join(values) + b"\n",
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")

    assert read_back(settings_with("gzip", kafka_bootstrap), topic, len(values)) == values
    assert set(decoded_codecs) == {CODEC_IDS[codec]}


@pytest.mark.parametrize("compression_type", ("none", *CODECS))
def test_make_producer_codec_round_trips(compression_type, kafka_bootstrap, kafka_admin, unique_name, decoded_codecs):
    settings = settings_with(compression_type, kafka_bootstrap)
    topic = new_topic(kafka_admin, f"{unique_name}-kp")
    values = messages(topic)
    producer = make_producer(settings)
    assert producer.config["compression_type"] == (None if compression_type == "none" else compression_type)
    try:
        for fut in [producer.send(topic, v) for v in values]:
            fut.get(timeout=30)
    finally:
        producer.close()

    assert read_back(settings, topic, len(values)) == values
    expected = set() if compression_type == "none" else {CODEC_IDS[compression_type]}
    assert set(decoded_codecs) == expected


def test_every_codec_is_installed():
    """lz4, python-snappy and zstandard are runtime dependencies: without them poll() fails mid-stream."""
    assert missing_codecs() == []


def test_consumer_refuses_to_start_without_a_codec(monkeypatch: pytest.MonkeyPatch):
    from kafka import codec

    monkeypatch.setattr(codec, "has_zstd", lambda: False)
    with pytest.raises(RuntimeError, match="zstd"):
        make_consumer(load_settings())
