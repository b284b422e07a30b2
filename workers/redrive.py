"""``rerank-stream dlq list|show|replay``: read the dead-letter topic and replay payloads after a fix.

A dead letter keeps the original payload (``DeadLetter.payload_b64``); once its cause is fixed (a
feed or model configured, a limit raised, the model side back) ``replay`` sends that payload again
to its source topic (or ``--to-topic``). Safety rules:

- **dry run by default**: ``replay`` lists what it would send; ``--yes`` sends.
- **no loops**: a replayed record carries ``rerank-redrive-count`` (and ``rerank-redrive-from``, the
  dead letter's coordinates); when it fails again the worker copies the mark into the new dead
  letter (``redrive_count`` > 0). ``replay`` refuses such dead letters unless ``--force`` (then the
  count goes up by one), and never replays a dead letter whose replay is itself in the DLQ
  (superseded: the newer one stands for the job). Nothing is ever replayed automatically.
- **truncated payloads** (``payload_truncated``: only a prefix was kept) are reported, never replayed.

A replay that succeeds leaves no mark in the DLQ: replaying the same dead letter again ranks the
job again (a second result under the same ``job_id`` key, like an at-least-once redelivery), so
narrow the selection (``--job-id``, ``--since``) rather than replaying a whole topic twice.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from schemas.messages import REDRIVE_COUNT_HEADER, REDRIVE_FROM_HEADER, DeadLetter, ErrorKind, now_ms
from schemas.settings import Settings, load_settings
from workers.headers import Headers, header_text

_RELATIVE = re.compile(r"([0-9]+)\s*([smhd])")
_UNITS_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_time(text: str, now: int | None = None) -> int:
    """Epoch milliseconds of ``text``: epoch ms digits, ISO 8601 (naive = UTC) or a duration ago (30m, 2h, 1d)."""
    value = text.strip()
    now = now_ms() if now is None else now
    if value.isascii() and value.isdigit():
        return int(value)
    if m := _RELATIVE.fullmatch(value):
        return now - int(m.group(1)) * _UNITS_MS[m.group(2)]
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use epoch ms, ISO 8601 (2026-11-22T10:00) or 30m/2h/1d ago"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


@dataclass(frozen=True)
class DlqEntry:
    """One record of the DLQ topic: where it is, its Kafka headers and the dead letter (None: unreadable)."""

    topic: str
    partition: int
    offset: int
    headers: tuple[tuple[str, bytes | None], ...]
    letter: DeadLetter | None
    problem: str = ""

    @property
    def ref(self) -> str:
        return f"{self.partition}:{self.offset}"

    @property
    def coordinates(self) -> str:
        """topic/partition/offset, as replays carry it in ``rerank-redrive-from``."""
        return f"{self.topic}/{self.partition}/{self.offset}"


def parse_entry(topic: str, partition: int, offset: int, value: bytes | None, headers: Headers) -> DlqEntry:
    """A DLQ record as an entry; a record that is not a dead letter is kept with its problem, never raised."""
    hdrs = tuple((str(k), None if v is None else bytes(v)) for k, v in headers)
    try:
        letter = DeadLetter.model_validate_json(value or b"")
    except (ValidationError, ValueError) as exc:
        return DlqEntry(topic, partition, offset, hdrs, None, f"not a dead letter: {str(exc).splitlines()[0][:200]}")
    return DlqEntry(topic, partition, offset, hdrs, letter)


def read_dlq(settings: Settings, *, timeout_s: float = 30.0, consumer: Any = None) -> Iterator[DlqEntry]:
    """Every record of the DLQ topic up to its end at the time of the call (no consumer group offsets)."""
    from kafka import TopicPartition

    from workers.kafka_io import make_consumer

    topic = settings.kafka.dlq_topic
    own = consumer is None
    consumer = consumer or make_consumer(settings, group_id=f"{settings.kafka.group_id}.dlq-tool")
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        deadline = time.monotonic() + timeout_s
        while not partitions and time.monotonic() < deadline:
            time.sleep(0.1)
            partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            raise LookupError(f"DLQ topic {topic!r} not found (kafka.dlq_topic / RERANK_KAFKA_DLQ_TOPIC)")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        pending = {tp for tp in tps if ends.get(tp, 0) > 0}
        while pending and time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=200, max_records=500)
            for tp, records in batch.items():
                for r in records:
                    if r.offset < ends[tp]:
                        yield parse_entry(r.topic, r.partition, r.offset, r.value, r.headers or ())
            pending = {tp for tp in pending if consumer.position(tp) < ends[tp]}
        if pending:
            raise TimeoutError(f"DLQ not read to its end within {timeout_s:g} s: {sorted(str(tp) for tp in pending)}")
    finally:
        if own:
            consumer.close(autocommit=False)


@dataclass
class Filters:
    """Which dead letters a command acts on; an empty filter matches everything."""

    kinds: set[str] = field(default_factory=set)
    feeds: set[str] = field(default_factory=set)
    job_ids: set[str] = field(default_factory=set)
    refs: set[str] = field(default_factory=set)
    since_ms: int | None = None
    until_ms: int | None = None

    def matches(self, entry: DlqEntry, settings: Settings) -> bool:
        if self.refs and entry.ref not in self.refs:
            return False
        d = entry.letter
        if d is None:  # unreadable records match only an unfiltered listing or their own ref
            return not (self.kinds or self.feeds or self.job_ids or self.since_ms or self.until_ms)
        return (
            (not self.kinds or d.error_kind.value in self.kinds)
            and (not self.feeds or feed_of(d, settings) in self.feeds)
            and (not self.job_ids or d.job_id in self.job_ids)
            and (self.since_ms is None or d.produced_at >= self.since_ms)
            and (self.until_ms is None or d.produced_at < self.until_ms)
        )


def feed_of(letter: DeadLetter, settings: Settings) -> str:
    """The feed whose topic the record came from (``-`` for a topic that is no configured feed's)."""
    return settings.kafka.feed_for_topic(letter.source_topic) or "-"


@dataclass(frozen=True)
class Decision:
    entry: DlqEntry
    replay: bool
    why: str  # the skip reason, or the target topic


def plan(
    entries: Sequence[DlqEntry], selected: Sequence[DlqEntry], *, force: bool, to_topic: str | None
) -> list[Decision]:
    """What ``replay`` does with each selected entry; ``entries`` is the whole DLQ (to find superseded ones)."""
    replayed_again = {e.letter.redrive_from for e in entries if e.letter is not None and e.letter.redrive_from}
    out = []
    for e in selected:
        d = e.letter
        if d is None:
            out.append(Decision(e, False, e.problem))
        elif d.payload_truncated:
            out.append(
                Decision(
                    e,
                    False,
                    f"payload truncated (kept {len(d.payload())} of {d.payload_size} bytes, sha256 {d.payload_sha256})",
                )
            )
        elif e.coordinates in replayed_again:
            out.append(Decision(e, False, "superseded: its replay failed again and is a later dead letter"))
        elif d.redrive_count and not force:
            out.append(
                Decision(e, False, f"a replay that failed again (redrive_count {d.redrive_count}); --force to replay")
            )
        else:
            out.append(Decision(e, True, to_topic or d.source_topic))
    return out


def replay_headers(entry: DlqEntry) -> list[tuple[str, bytes]]:
    """The DLQ record's headers carried on (our own ``rerank-`` ones dropped), plus the redrive mark."""
    assert entry.letter is not None
    kept = [(k, v or b"") for k, v in entry.headers if not k.startswith("rerank-")]
    count = entry.letter.redrive_count + 1
    return [*kept, (REDRIVE_COUNT_HEADER, str(count).encode()), (REDRIVE_FROM_HEADER, entry.coordinates.encode())]


def send_replays(settings: Settings, decisions: Sequence[Decision], producer: Any = None) -> int:
    """Send every replay decision's payload to its topic; waits for the acknowledgements. Returns how many."""
    from workers.kafka_io import make_producer

    own = producer is None
    producer = producer or make_producer(settings)
    try:
        futures = []
        for dec in decisions:
            if not dec.replay:
                continue
            d = dec.entry.letter
            assert d is not None
            key = None if d.job_id is None else d.job_id.encode("utf-8", "surrogatepass")
            futures.append(producer.send(dec.why, value=d.payload(), key=key, headers=replay_headers(dec.entry)))
        producer.flush()
        for fut in futures:
            fut.get(timeout=30)
        return len(futures)
    finally:
        if own:
            producer.close(timeout=10)


def missing_topics(settings: Settings, topics: set[str]) -> list[str]:
    from workers.kafka_io import make_admin

    admin = make_admin(settings)
    try:
        return sorted(topics - set(admin.list_topics()))
    finally:
        admin.close()


# -- output -----------------------------------------------------------------------------------------


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def summary(entry: DlqEntry, settings: Settings) -> dict[str, Any]:
    """One entry as a flat JSON-able dict (``list --json``)."""
    d = entry.letter
    base: dict[str, Any] = {
        "ref": entry.ref,
        "topic": entry.topic,
        "partition": entry.partition,
        "offset": entry.offset,
    }
    if d is None:
        return {**base, "problem": entry.problem}
    return {
        **base,
        "produced_at": d.produced_at,
        "error_kind": d.error_kind.value,
        "feed": feed_of(d, settings),
        "job_id": d.job_id,
        "source": f"{d.source_topic}/{d.source_partition}/{d.source_offset}",
        "payload_size": d.payload_size,
        "payload_truncated": d.payload_truncated,
        "redrive_count": d.redrive_count,
        "redrive_from": d.redrive_from,
        "reason": d.reason,
    }


def _line(entry: DlqEntry, settings: Settings) -> str:
    d = entry.letter
    if d is None:
        return f"{entry.ref:>10}  (unreadable) {entry.problem}"
    marks = (" [truncated]" if d.payload_truncated else "") + (
        f" [replayed {d.redrive_count}x]" if d.redrive_count else ""
    )
    reason = d.reason.replace("\n", " ")
    reason = reason if len(reason) <= 100 else reason[:97] + "..."
    return (
        f"{entry.ref:>10}  {_when(d.produced_at)}  {d.error_kind.value:<17} {feed_of(d, settings):<15} "
        f"{(d.job_id or '-')[:40]:<40}{marks}  {reason}"
    )


def _show(entry: DlqEntry, settings: Settings) -> str:
    info = summary(entry, settings)
    if entry.letter is not None:
        raw = entry.letter.payload()
        try:
            text = raw.decode("utf-8")
            try:
                info["payload"] = json.loads(text)
            except ValueError:
                info["payload_text"] = text
        except UnicodeDecodeError:
            info["payload_b64"] = entry.letter.payload_b64
        info["worker_id"] = entry.letter.worker_id
    info["headers"] = {k: header_text(v) for k, v in entry.headers}
    return json.dumps(info, indent=2, ensure_ascii=False, default=str)


# -- the command ------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML config file (default: $RERANK_CONFIG).")
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    def filters(p: argparse.ArgumentParser) -> None:
        kinds = [k.value for k in ErrorKind]
        p.add_argument("--kind", action="append", default=[], choices=kinds, help="Error kind (repeatable).")
        p.add_argument("--feed", action="append", default=[], help="Feed of the source topic (repeatable).")
        p.add_argument("--job-id", action="append", default=[], help="Job id (repeatable).")
        p.add_argument("--since", help="Dead-lettered at or after: epoch ms, ISO 8601 (UTC) or 30m/2h/1d ago.")
        p.add_argument("--until", help="Dead-lettered before (same forms as --since).")
        p.add_argument("--timeout", type=float, default=30.0, help="Longest time to read the DLQ, seconds.")

    p_list = sub.add_parser("list", help="List dead letters, oldest first per partition.")
    filters(p_list)
    p_list.add_argument("--json", action="store_true", help="One JSON object per line instead of a table.")
    p_show = sub.add_parser("show", help="Show dead letters in full: payload, reason, headers.")
    p_show.add_argument("ref", nargs="+", help="DLQ PARTITION:OFFSET (as `list` prints it) or a job id.")
    p_show.add_argument("--timeout", type=float, default=30.0, help="Longest time to read the DLQ, seconds.")
    p_replay = sub.add_parser("replay", help="Send payloads back to their source topic (dry run without --yes).")
    filters(p_replay)
    p_replay.add_argument("--ref", action="append", default=[], help="Only this DLQ PARTITION:OFFSET (repeatable).")
    p_replay.add_argument("--to-topic", help="Send to this topic instead of each dead letter's source topic.")
    p_replay.add_argument("--yes", action="store_true", help="Really send (default: dry run, nothing is sent).")
    p_replay.add_argument("--force", action="store_true", help="Also replay dead letters of replays that failed again.")


def _filters(args: argparse.Namespace) -> Filters:
    now = now_ms()
    return Filters(
        kinds=set(args.kind),
        feeds=set(args.feed),
        job_ids=set(args.job_id),
        refs=set(getattr(args, "ref", None) or ()),
        since_ms=parse_time(args.since, now) if args.since else None,
        until_ms=parse_time(args.until, now) if args.until else None,
    )


def run(args: argparse.Namespace, out: Any = None) -> int:
    out = out or sys.stdout
    settings = load_settings(args.config)
    try:
        flt = _filters(args) if args.action != "show" else None
        entries = list(read_dlq(settings, timeout_s=args.timeout))
    except (ValueError, LookupError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if flt is None:  # show: each ref is PARTITION:OFFSET or a job id
        wanted = set(args.ref)
        shown = [e for e in entries if e.ref in wanted or (e.letter is not None and e.letter.job_id in wanted)]
        for e in shown:
            print(_show(e, settings), file=out)
        if not shown:
            print(f"error: no dead letter {' '.join(args.ref)} in {settings.kafka.dlq_topic}", file=sys.stderr)
            return 1
        return 0
    selected = [e for e in entries if flt.matches(e, settings)]
    if args.action == "list":
        for e in selected:
            print(json.dumps(summary(e, settings)) if args.json else _line(e, settings), file=out)
        print(f"{len(selected)} of {len(entries)} dead letters in {settings.kafka.dlq_topic}", file=sys.stderr)
        return 0
    return _replay(args, settings, entries, selected, out)


def _replay(
    args: argparse.Namespace, settings: Settings, entries: list[DlqEntry], selected: list[DlqEntry], out: Any
) -> int:
    decisions = plan(entries, selected, force=args.force, to_topic=args.to_topic)
    chosen = [d for d in decisions if d.replay]
    if chosen and (missing := missing_topics(settings, {d.why for d in chosen})):
        print(f"error: target topics do not exist: {', '.join(missing)}", file=sys.stderr)
        return 2
    verb = "replay" if args.yes else "would replay"
    for d in decisions:
        job = (d.entry.letter.job_id if d.entry.letter else None) or "-"
        print(f"{verb if d.replay else 'skip'} {d.entry.ref} job {job}: {d.why}", file=out)
    skipped = len(decisions) - len(chosen)
    if not args.yes:
        print(
            f"dry run: would replay {len(chosen)} of {len(selected)} selected dead letters ({skipped} skipped); "
            "nothing sent: add --yes to send",
            file=out,
        )
        return 0
    try:
        sent = send_replays(settings, chosen)
    except Exception as exc:  # noqa: BLE001 - report any broker failure as one line
        print(f"error: replay failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"replayed {sent} of {len(selected)} selected dead letters ({skipped} skipped)", file=out)
    return 0
