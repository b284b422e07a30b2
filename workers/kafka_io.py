"""Thin constructors of kafka-python clients from settings, so every process connects alike."""

from __future__ import annotations

from typing import Any

from schemas.settings import Settings

# The consumers' max_poll_interval_ms = the rebalance timeout: how long a rebalance waits for a live member
# to rejoin (the worker's RebalanceWatch derives its limit from it).
REBALANCE_TIMEOUT_MS = 30_000


def missing_codecs() -> list[str]:
    """Codecs kafka-python cannot decode here: their optional packages (lz4, python-snappy, zstandard) are absent."""
    from kafka import codec

    have = {"snappy": codec.has_snappy(), "lz4": codec.has_lz4(), "zstd": codec.has_zstd()}
    return [name for name, ok in have.items() if not ok]


def assignor(name: str) -> Any:
    """A fresh kafka-python assignor instance for ``kafka.assignor`` (each consumer owns its sticky state)."""
    from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
    from kafka.coordinator.assignors.range import RangePartitionAssignor
    from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

    kinds = {
        "cooperative-sticky": CooperativeStickyAssignor,
        "range": RangePartitionAssignor,
        "roundrobin": RoundRobinPartitionAssignor,
    }
    return kinds[name]()


def make_consumer(
    settings: Settings, *, group_id: str | None = None, group_instance_id: str | None = None, **overrides: Any
):
    """The workers' group consumer (manual commits, read_committed); ``group_instance_id`` = static member."""
    from kafka import KafkaConsumer

    from workers import kafka_python_fixes

    kafka_python_fixes.install()  # two kafka-python 3.0.12 bugs that stall a consumer for good (see that module)
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
        group_instance_id=group_instance_id,
        partition_assignment_strategy=[assignor(settings.kafka.assignor)],
        session_timeout_ms=settings.kafka.session_timeout_ms,
        heartbeat_interval_ms=settings.kafka.heartbeat_interval_ms,
        # = the rebalance timeout: how long a rebalance waits for a live member to rejoin. The loop polls
        # every 100 ms (paused partitions included) and a revocation waits at most 3 s: 30 s is ample.
        max_poll_interval_ms=REBALANCE_TIMEOUT_MS,
        isolation_level="read_committed",
        metadata_max_age_ms=10_000,  # notice new topics / partitions (and rebalance) within 10 s
        # A fetch parked at the broker (no new data, up to this long) holds back every partition of that broker:
        # a feed resumed by per-feed back-pressure would wait for it (500 ms by default) with idle threads.
        fetch_max_wait_ms=50,
    )
    opts.update(overrides)
    return KafkaConsumer(**opts)


def make_producer(settings: Settings, **overrides: Any):
    from kafka import KafkaProducer

    opts: dict[str, Any] = dict(
        settings.kafka.client_options(),
        acks="all",
        enable_idempotence=True,  # broker de-duplicates producer retries
        # No linger: a result goes out as soon as the sender thread is free (a cached job's whole path is a few ms);
        # under load, records that arrive while a request is in flight still share the next batch.
        linger_ms=0,
        compression_type=None if settings.kafka.compression_type == "none" else settings.kafka.compression_type,
    )
    opts.update(overrides)
    return KafkaProducer(**opts)


def make_admin(settings: Settings, **overrides: Any):
    from kafka import KafkaAdminClient

    return KafkaAdminClient(**dict(settings.kafka.client_options(), **overrides))


def leave_group(settings: Settings, group_id: str, group_instance_id: str, member_id: str | None = None) -> None:
    """Remove a static member from its group now. A static member's close() never leaves the group (a
    restart is expected), so one that leaves for good (scale-down) must be removed, or its partitions
    wait out the session timeout. With ``member_id`` only that incarnation is removed: a successor that
    already took the instance id (a renumbered consumer replica) is left alone."""
    from kafka.admin import MemberToRemove

    admin = make_admin(settings)
    try:
        errors = admin.remove_group_members(
            group_id, [MemberToRemove(member_id=member_id or None, group_instance_id=group_instance_id)]
        )
    finally:
        admin.close()
    failed = {who: err for who, err in (errors or {}).items() if getattr(err, "errno", 0)}
    if failed:
        raise RuntimeError(f"not removed: {failed}")


def static_members(settings: Settings, group_id: str) -> set[str]:
    """The group.instance.ids of a group's current members."""
    admin = make_admin(settings)
    try:
        group = admin.describe_groups([group_id]).get(group_id) or {}
    finally:
        admin.close()
    return {m["group_instance_id"] for m in group.get("members", []) if m.get("group_instance_id")}
