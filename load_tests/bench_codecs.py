"""Kafka codecs on this machine: produce and consume throughput and compression ratio, per codec.

Realistic wire messages (RerankResult: the worker's output, whose codec `kafka.compression_type`
chooses; RerankJob: the input, for reference) go through the worker's own clients
(workers.kafka_io.make_producer / make_consumer) to the configured broker. Codecs run interleaved,
repetition by repetition, so drift of the machine hits them alike; medians are reported.
MB/s counts uncompressed value bytes (what the application moves); the ratio is value bytes over the
partition's bytes on the broker (batch headers included); CPU ms/MB is this process's CPU time (all
threads) per uncompressed MB, steadier than wall time on a shared machine. enc/dec MB/s time
kafka-python's codec functions alone on 16 KiB batches. The LAST stdout line is one JSON object.

    python -m load_tests.bench_codecs [--messages N] [--reps R] [--save]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
import uuid

CODECS = ("none", "gzip", "snappy", "lz4", "zstd")
KINDS = ("result", "job")


def make_values(kind: str, n: int, seed: int = 0) -> list[bytes]:
    """n distinct messages serialized like the worker does (pydantic JSON, UTF-8)."""
    from load_tests import corpus
    from schemas.messages import Candidate, ModelRef, RankedCandidate, RerankJob, RerankResult, Timings

    rng = random.Random(seed)
    out = []
    msg: RerankJob | RerankResult
    for i in range(n):
        job_id = uuid.UUID(int=rng.getrandbits(128)).hex
        feed = "moderation" if i % 3 == 0 else "recommendation"
        if kind == "job":
            lang = rng.choice(corpus.LANGS)
            cands = [
                Candidate(id=f"doc-{rng.getrandbits(48):012x}", text=corpus.document(rng, lang)) for _ in range(20)
            ]
            msg = RerankJob(job_id=job_id, feed=feed, query=corpus.query(rng, lang), candidates=cands, top_k=10)
        else:
            scores = sorted((rng.random() for _ in range(20)), reverse=True)
            ranked = [
                RankedCandidate(id=f"doc-{rng.getrandbits(48):012x}", score=s, rank=r + 1) for r, s in enumerate(scores)
            ]
            msg = RerankResult(
                job_id=job_id,
                feed=feed,
                model=ModelRef(id="Qwen/Qwen3-Reranker-0.6B", kind="qwen3-reranker"),
                ranked=ranked,
                flagged=[c.id for c in ranked[:2]] if feed == "moderation" else [],
                cached=rng.randint(0, 20),
                timings=Timings(
                    queue_wait_ms=rng.uniform(1, 500),
                    cache_ms=rng.uniform(0.1, 5),
                    model_ms=rng.uniform(5, 300),
                    total_ms=rng.uniform(10, 900),
                ),
                worker_id=f"worker-{rng.randint(0, 7)}",
            )
        out.append(msg.model_dump_json().encode("utf-8"))
    return out


def settings_for(base, codec: str):
    from schemas.settings import Settings

    return Settings.model_validate(
        {**base.model_dump(), "kafka": {**base.kafka.model_dump(), "compression_type": codec}}
    )


def one_run(base, admin, codec: str, values: list[bytes], topic: str) -> dict[str, float]:
    """Produce every value to a new one-partition topic, consume it back; seconds and broker bytes."""
    from kafka import TopicPartition
    from kafka.admin import NewTopic

    from workers.kafka_io import make_consumer, make_producer

    settings = settings_for(base, codec)
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    producer = make_producer(settings)
    try:
        producer.partitions_for(topic)  # metadata and connection outside the timed part
        t0, c0 = time.perf_counter(), time.process_time()
        futures = [producer.send(topic, v) for v in values]
        producer.flush()
        produce_s, produce_cpu = time.perf_counter() - t0, time.process_time() - c0
        for fut in futures:
            fut.get(timeout=30)
    finally:
        producer.close()

    consumer = make_consumer(settings, group_id=f"{topic}-reader", fetch_max_bytes=52_428_800)
    tp = TopicPartition(topic, 0)
    try:
        consumer.assign([tp])
        consumer.beginning_offsets([tp])  # connection outside the timed part
        consumer.seek_to_beginning()
        got = 0
        t0, c0 = time.perf_counter(), time.process_time()
        deadline = t0 + 120
        while got < len(values) and time.perf_counter() < deadline:
            got += sum(len(records) for records in consumer.poll(timeout_ms=200).values())
        consume_s, consume_cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        consumer.close()
    if got != len(values):
        raise RuntimeError(f"{codec}: consumed {got} of {len(values)} messages from {topic}")

    dirs = admin.describe_log_dirs([topic])
    stored = sum(
        p["partition_size"]
        for broker in dirs
        for log_dir in broker["log_dirs"]
        for t in log_dir["topics"]
        if t["name"] == topic
        for p in t["partitions"]
    )
    return {
        "produce_s": produce_s,
        "consume_s": consume_s,
        "produce_cpu_s": produce_cpu,
        "consume_cpu_s": consume_cpu,
        "stored_bytes": stored,
    }


def codec_cpu(values: list[bytes], codecs: list[str], batch_bytes: int = 16384, reps: int = 5) -> dict[str, dict]:
    """Encode/decode MB/s of kafka-python's own codec functions on producer-sized batches: the CPU a
    codec costs, without the client's per-message overhead that dominates the end-to-end numbers."""
    from kafka import codec as kc

    funcs = {
        "gzip": (kc.gzip_encode, kc.gzip_decode),
        "snappy": (kc.snappy_encode, kc.snappy_decode),
        "lz4": (kc.lz4_encode, kc.lz4_decode),
        "zstd": (kc.zstd_encode, kc.zstd_decode),
    }
    batches, cur = [], bytearray()
    for v in values:
        if cur and len(cur) + len(v) > batch_bytes:
            batches.append(bytes(cur))
            cur = bytearray()
        cur += v
    batches.append(bytes(cur))
    raw = sum(map(len, batches))
    out = {}
    for name in (c for c in codecs if c in funcs):
        encode, decode = funcs[name]
        enc_s, dec_s = [], []
        for _ in range(reps):
            t0 = time.perf_counter()
            packed = [encode(b) for b in batches]
            enc_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            for b in packed:
                decode(b)
            dec_s.append(time.perf_counter() - t0)
        out[name] = {
            "encode_mb_s": round(raw / 1e6 / statistics.median(enc_s), 1),
            "decode_mb_s": round(raw / 1e6 / statistics.median(dec_s), 1),
            "ratio": round(raw / sum(map(len, packed)), 2),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=3000, help="messages per codec, kind and repetition")
    ap.add_argument("--reps", type=int, default=5, help="interleaved repetitions (medians are reported)")
    ap.add_argument("--codecs", default=",".join(CODECS))
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--save", action="store_true", help="write load_tests/results/codecs-<timestamp>.json")
    args = ap.parse_args(argv)
    codecs = [c for c in args.codecs.split(",") if c]
    kinds = [k for k in args.kinds.split(",") if k]

    import logging

    logging.basicConfig(level="WARNING")
    logging.getLogger("kafka").setLevel(logging.ERROR)
    from kafka import KafkaAdminClient

    from load_tests.run import machine
    from schemas.settings import load_settings

    base = load_settings()
    admin = KafkaAdminClient(**base.kafka.client_options())
    run_id = uuid.uuid4().hex[:6]
    values = {k: make_values(k, args.messages, seed=i) for i, k in enumerate(kinds)}
    raw = {k: sum(map(len, v)) for k, v in values.items()}
    runs: dict[tuple[str, str], list[dict[str, float]]] = {(k, c): [] for k in kinds for c in codecs}
    topics: list[str] = []
    one_run(base, admin, codecs[0], values[kinds[0]][:200], f"bench-codecs.{run_id}.warmup")  # JIT, page cache
    topics.append(f"bench-codecs.{run_id}.warmup")
    try:
        for rep in range(args.reps):
            order = codecs[rep % len(codecs) :] + codecs[: rep % len(codecs)]  # rotate: no codec always first
            for kind in kinds:
                for codec in order:
                    topic = f"bench-codecs.{run_id}.{kind}.{codec}.{rep}"
                    topics.append(topic)
                    runs[kind, codec].append(one_run(base, admin, codec, values[kind], topic))
            print(f"repetition {rep + 1}/{args.reps} done", file=sys.stderr, flush=True)
    finally:
        try:
            admin.delete_topics(topics)
        except Exception as exc:  # noqa: BLE001 - cleanup must not hide the measurements
            print(f"WARNING: could not delete bench topics: {exc!r}", file=sys.stderr)
        admin.close()

    mb = 1e6
    table: dict[str, dict[str, dict[str, float]]] = {k: {} for k in kinds}
    for (kind, codec), rs in runs.items():
        table[kind][codec] = {
            "produce_mb_s": round(raw[kind] / mb / statistics.median(r["produce_s"] for r in rs), 2),
            "consume_mb_s": round(raw[kind] / mb / statistics.median(r["consume_s"] for r in rs), 2),
            "ratio": round(raw[kind] / statistics.median(r["stored_bytes"] for r in rs), 2),
            "stored_mb": round(statistics.median(r["stored_bytes"] for r in rs) / mb, 3),
            "produce_cpu_ms_per_mb": round(
                1000 * statistics.median(r["produce_cpu_s"] for r in rs) / (raw[kind] / mb), 1
            ),
            "consume_cpu_ms_per_mb": round(
                1000 * statistics.median(r["consume_cpu_s"] for r in rs) / (raw[kind] / mb), 1
            ),
        }
    cpu = {k: codec_cpu(values[k], codecs) for k in kinds}

    print(
        f"\n{'kind':7} {'codec':7} {'produce MB/s':>13} {'consume MB/s':>13} {'ratio':>6} {'stored MB':>10} "
        f"{'prod CPU ms/MB':>15} {'cons CPU ms/MB':>15} {'enc MB/s':>9} {'dec MB/s':>9}"
    )
    for kind in kinds:
        print(f"{kind:7} {'(raw)':7} {'':>13} {'':>13} {'':>6} {raw[kind] / mb:10.3f}")
        for codec in codecs:
            row, c = table[kind][codec], cpu[kind].get(codec, {})
            print(
                f"{kind:7} {codec:7} {row['produce_mb_s']:13.2f} {row['consume_mb_s']:13.2f} "
                f"{row['ratio']:6.2f} {row['stored_mb']:10.3f} {row['produce_cpu_ms_per_mb']:15.1f} "
                f"{row['consume_cpu_ms_per_mb']:15.1f} {c.get('encode_mb_s', ''):>9} {c.get('decode_mb_s', ''):>9}"
            )

    result = {
        "codecs": table,
        "codec_cpu": cpu,
        "raw_mb": {k: round(v / mb, 3) for k, v in raw.items()},
        "avg_message_bytes": {k: round(raw[k] / args.messages) for k in kinds},
        "messages": args.messages,
        "reps": args.reps,
        "producer": "workers.kafka_io.make_producer (kafka-python, acks=all, linger_ms=0, batch_size default)",
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    if args.save:
        from load_tests.report import write_run

        write_run("codecs", result)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
