"""A thin wrapper over kafka-python's producer: send with an acknowledgement callback, transactions.

kafka-python's producer is thread-safe: pool threads publish results while the poll thread
commits. A send that fails after the producer's own retries is reported to ``on_error`` (the
worker stops; the offset stays uncommitted and is redelivered).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class Publisher:
    def __init__(self, client: Any, on_error: Callable[[BaseException], None]):
        self.client = client
        self._on_error = on_error

    def send(
        self,
        topic: str,
        key: str,
        value: bytes,
        on_ack: Callable[[], None] | None = None,
        headers: list[tuple[str, bytes | None]] | None = None,
    ) -> None:
        future = self.client.send(topic, value=value, key=key.encode("utf-8", "surrogatepass"), headers=headers or None)
        if on_ack is not None:
            future.add_callback(lambda _metadata: on_ack())
        future.add_errback(self._failed)

    def _failed(self, exc: BaseException) -> None:
        log.error("publish failed after producer retries: %r", exc)
        self._on_error(exc)

    # -- transactions (exactly-once mode) -------------------------------------------------------

    def init_transactions(self) -> None:
        self.client.init_transactions()  # fences a previous incarnation with the same transactional id

    def begin(self) -> None:
        self.client.begin_transaction()

    def commit_transaction(self, offsets: dict | None, group_metadata: Any) -> None:
        if offsets:
            self.client.send_offsets_to_transaction(offsets, group_metadata)
        self.client.commit_transaction()

    def abort(self) -> None:
        self.client.abort_transaction()

    def flush(self, timeout: float) -> None:
        self.client.flush(timeout=timeout)

    def close(self, timeout: float = 10) -> None:
        self.client.close(timeout=timeout)
