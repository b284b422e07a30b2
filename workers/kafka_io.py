"""Thin constructors of kafka-python clients from settings, so every process connects alike."""

from __future__ import annotations

from typing import Any

from schemas.settings import Settings


def missing_codecs() -> list[str]:
    """Codecs kafka-python cannot decode here: their optional packages (lz4, python-snappy, zstandard) are absent."""
    from kafka import codec

    have = {"snappy": codec.has_snappy(), "lz4": codec.has_lz4(), "zstd": codec.has_zstd()}
    return [name for name, ok in have.items() if not ok]


def make_consumer(settings: Settings, *, group_id: str | None = None, **overrides: Any):
    from kafka import KafkaConsumer

    # Producers choose the codec, not us: fail at start-up rather than with UnsupportedCodecError mid-stream.
    if missing := missing_codecs():
        raise RuntimeError(
            f"kafka-python cannot decode {', '.join(missing)}-compressed batches: "
            "install the runtime dependencies lz4, python-snappy and zstandard (pip install -e .)"
        )
    opts: dict[str, Any] = dict(
        settings.kafka.client_options(),
        group_id=group_id or settings.kafka.group_id,
        enable_auto_commit=False,  # offsets are committed only after results are acknowledged
        auto_offset_reset="earliest",
        max_poll_records=settings.worker.poll_max_records,
        session_timeout_ms=10_000,
        heartbeat_interval_ms=1_000,
        isolation_level="read_committed",
        metadata_max_age_ms=10_000,  # notice new topics / partitions (and rebalance) within 10 s
    )
    opts.update(overrides)
    return KafkaConsumer(**opts)


def make_producer(settings: Settings, **overrides: Any):
    from kafka import KafkaProducer

    opts: dict[str, Any] = dict(
        settings.kafka.client_options(),
        acks="all",
        enable_idempotence=True,  # broker de-duplicates producer retries
        linger_ms=5,
        compression_type=None if settings.kafka.compression_type == "none" else settings.kafka.compression_type,
    )
    opts.update(overrides)
    return KafkaProducer(**opts)


def make_admin(settings: Settings, **overrides: Any):
    from kafka import KafkaAdminClient

    return KafkaAdminClient(**dict(settings.kafka.client_options(), **overrides))
