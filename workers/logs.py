"""Logging of worker processes: one format, and kafka-python's retry storm rate-limited.

During a broker outage kafka-python logs the same connection error about every 100 ms per
connection (about 100 lines per worker in 13 s); ``RepeatFilter`` lets one line per distinct
message template through per interval and says how many it swallowed.
"""

from __future__ import annotations

import logging
import threading
import time

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RepeatFilter(logging.Filter):
    """Pass a (logger, level, template) at most once per ``interval_s``; count the rest."""

    def __init__(self, interval_s: float = 30.0, only: str | None = None, clock=time.monotonic):
        super().__init__()
        self.only = only  # logger-name prefix this filter limits; others pass untouched
        self.interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if self.only is not None and not (record.name == self.only or record.name.startswith(self.only + ".")):
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        with self._lock:
            last, dropped = self._seen.get(key, (float("-inf"), 0))
            if now - last < self.interval_s:
                self._seen[key] = (last, dropped + 1)
                return False
            self._seen[key] = (now, 0)
        if dropped:
            record.msg = f"{record.msg} [{dropped} similar lines suppressed in the last {self.interval_s:.0f} s]"
        return True


def configure(level: str, interval_s: float) -> None:
    """Root logging for a worker process; kafka-python's records are rate-limited, not silenced.

    The filter sits on the root handlers, so it sees the records of every ``kafka.*`` module
    logger, including those kafka-python creates later.
    """
    logging.basicConfig(level=level.upper(), format=FORMAT)
    logging.getLogger("kafka").setLevel(logging.WARNING)
    for handler in logging.root.handlers:
        if not any(isinstance(f, RepeatFilter) for f in handler.filters):
            handler.addFilter(RepeatFilter(interval_s, only="kafka"))
