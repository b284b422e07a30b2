"""Operator-facing logs of the worker: kafka-python's retry storm is rate-limited; a progress line."""

from __future__ import annotations

import logging

from workers.logs import RepeatFilter


def _record(name: str, msg: str) -> logging.LogRecord:
    return logging.LogRecord(name, logging.WARNING, __file__, 1, msg, (), None)


def test_repeat_filter_passes_one_line_per_template_per_interval_and_counts_the_rest():
    now = [0.0]
    f = RepeatFilter(10.0, only="kafka", clock=lambda: now[0])
    storm = [f.filter(_record("kafka.conn", "connect to %s failed")) for _ in range(100)]
    assert storm.count(True) == 1
    assert f.filter(_record("kafka.client", "other message"))  # another template passes
    assert f.filter(_record("workers.worker", "connect to %s failed"))  # our own loggers are untouched
    now[0] = 11.0
    rec = _record("kafka.conn", "connect to %s failed")
    assert f.filter(rec) and "99 similar lines suppressed" in str(rec.msg)


def test_progress_line_is_logged_every_interval(caplog):
    from tests.test_worker_loop import TOPIC, Harness, job, until

    with caplog.at_level(logging.INFO, logger="workers.worker"):
        h = Harness()
        h.settings = h.settings.model_copy(
            update={"worker": h.settings.worker.model_copy(update={"log_interval_s": 0.2})}
        )
        h.worker.settings = h.settings
        with h:
            h.consumer.add(TOPIC, job("j0"))
            until(lambda: any("progress" in r.getMessage() for r in caplog.records))
    line = next(r.getMessage() for r in caplog.records if "progress" in r.getMessage())
    for part in ("consumed/s", "published/s", "dead-lettered/s", "cache hit", "lag", "in flight"):
        assert part in line
