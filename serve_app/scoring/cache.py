"""The one Redis score cache of the scoring core (so of the Kafka worker and the HTTP path alike).

Why it looks like this:
- Keys hash length-prefixed parts (model fingerprint, kind, instruction, query, document), so
  two different inputs can never collide by concatenation ("ab"+"c" vs "a"+"bc").
- Values are one 8-byte little-endian double: compact and exact (no float/str round trip).
- The cache is an optimisation, never a dependency: every Redis failure is swallowed, counted
  as ``bypassed``, logged at most once per interval, and followed by a back-off window during
  which calls skip Redis entirely, so a dead cache does not cost a socket timeout per job.
"""

from __future__ import annotations

import hashlib
import logging
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from schemas.settings import RedisSettings

log = logging.getLogger(__name__)

_VALUE = struct.Struct("<d")
_LEN = struct.Struct(">I")

# After a failure, Redis is skipped for this long (doubling up to the maximum while it stays down).
_BACKOFF_START_S = 0.5
_BACKOFF_MAX_S = 5.0


def cache_key(prefix: str, fingerprint: str, kind: str, instruction: str, query: str, document: str) -> bytes:
    """Key of one (model, instruction, query, document) score: prefix + BLAKE2b-128 of length-prefixed parts."""
    h = hashlib.blake2b(digest_size=16)
    for part in (fingerprint, kind, instruction, query, document):
        # surrogatepass: the doors reject lone surrogates, but a key must never be the thing that crashes.
        data = part.encode("utf-8", "surrogatepass")
        h.update(_LEN.pack(len(data)))
        h.update(data)
    return prefix.encode("utf-8", "surrogatepass") + h.digest()


def encode_score(score: float) -> bytes:
    return _VALUE.pack(float(score))


def decode_score(raw: bytes | str | None) -> float | None:
    if not isinstance(raw, bytes) or len(raw) != _VALUE.size:
        return None  # absent, or a foreign/corrupt value: treat as a miss
    return _VALUE.unpack(raw)[0]


@dataclass(frozen=True)
class CacheQuery:
    """One job's worth of cache lookups (for :meth:`ScoreCache.lookup_many`)."""

    fingerprint: str
    kind: str
    instruction: str
    query: str
    documents: Sequence[str]


class ScoreCache:
    """Score cache on Redis: one MGET per lookup, one pipelined SET EX per fill; never raises."""

    def __init__(self, settings: RedisSettings, *, log_interval_s: float = 30.0):
        self._settings = settings
        self._log_interval_s = log_interval_s
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0
        self._bypassed = 0
        self._down_until = 0.0
        self._backoff_s = _BACKOFF_START_S
        self._last_log = float("-inf")
        self._client = None
        if settings.enabled:
            import redis

            self._client = redis.Redis.from_url(
                settings.url,
                socket_timeout=settings.timeout_s,
                socket_connect_timeout=settings.timeout_s,
                retry_on_timeout=False,
                health_check_interval=0,
            )

    # -- public API -------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        return self._client is not None

    @property
    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"hits": self._hits, "misses": self._misses, "bypassed": self._bypassed}

    def key(self, fingerprint: str, kind: str, instruction: str, query: str, document: str) -> bytes:
        return cache_key(self._settings.key_prefix, fingerprint, kind, instruction, query, document)

    def lookup(
        self, fingerprint: str, kind: str, instruction: str, query: str, documents: Sequence[str]
    ) -> list[float | None]:
        """Cached score per document (None = miss), in one MGET round trip."""
        return self.lookup_many([CacheQuery(fingerprint, kind, instruction, query, documents)])[0]

    def lookup_many(self, queries: Sequence[CacheQuery]) -> list[list[float | None]]:
        """Lookups of many jobs in one MGET round trip (a whole consumer poll at once)."""
        misses: list[list[float | None]] = [[None] * len(q.documents) for q in queries]
        total = sum(len(q.documents) for q in queries)
        if self._client is None or total == 0:
            return misses
        if not self._available():
            self._count(bypassed=total)
            return misses
        keys = [self.key(q.fingerprint, q.kind, q.instruction, q.query, d) for q in queries for d in q.documents]
        try:
            raw = self._client.mget(keys)
        except Exception as exc:  # noqa: BLE001 - any cache failure means "no cache", never a failed job
            self._failed(exc, total)
            return misses
        self._recovered()
        values = [decode_score(r) for r in raw]
        out: list[list[float | None]] = []
        pos = 0
        for q in queries:
            out.append(values[pos : pos + len(q.documents)])
            pos += len(q.documents)
        hits = sum(v is not None for v in values)
        self._count(hits=hits, misses=total - hits)
        return out

    def store(
        self,
        fingerprint: str,
        kind: str,
        instruction: str,
        query: str,
        documents: Sequence[str],
        scores: Sequence[float],
    ) -> None:
        """Cache scores with the configured TTL in one pipelined round trip."""
        if len(documents) != len(scores):
            raise ValueError(f"{len(documents)} documents but {len(scores)} scores")
        if self._client is None or not documents:
            return
        if not self._available():
            self._count(bypassed=len(documents))
            return
        try:
            pipe = self._client.pipeline(transaction=False)
            ttl = self._settings.ttl_s
            for doc, score in zip(documents, scores):
                pipe.set(self.key(fingerprint, kind, instruction, query, doc), encode_score(score), ex=ttl)
            pipe.execute()
        except Exception as exc:  # noqa: BLE001
            self._failed(exc, len(documents))
            return
        self._recovered()

    def remember_jobs(self, jobs: Sequence[tuple[str, str]], ttl_s: int) -> list[bool]:
        """Record (job_id, content digest) pairs in one pipelined round trip; True where the same job_id
        was seen within ``ttl_s`` with a DIFFERENT digest. Redelivered identical jobs are not conflicts.
        Unavailable Redis: no conflicts known (the check is best effort, like the cache)."""
        none = [False] * len(jobs)
        if self._client is None or not jobs or not self._available():
            return none
        prefix = self._settings.key_prefix.encode("utf-8", "surrogatepass") + b"job:"
        try:
            pipe = self._client.pipeline(transaction=False)
            for job_id, digest in jobs:
                pipe.set(prefix + job_id.encode("utf-8", "surrogatepass"), digest, nx=True, ex=ttl_s, get=True)
            previous = pipe.execute()
        except Exception as exc:  # noqa: BLE001
            self._failed(exc, 0)
            return none
        self._recovered()
        return [
            old is not None and old.decode("ascii", "replace") != digest for old, (_, digest) in zip(previous, jobs)
        ]

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except Exception:  # noqa: BLE001
                pass

    # -- failure handling -------------------------------------------------------------------

    def _count(self, *, hits: int = 0, misses: int = 0, bypassed: int = 0) -> None:
        with self._lock:
            self._hits += hits
            self._misses += misses
            self._bypassed += bypassed

    def _available(self) -> bool:
        return time.monotonic() >= self._down_until

    def _failed(self, exc: BaseException, n: int) -> None:
        now = time.monotonic()
        with self._lock:
            self._bypassed += n
            self._down_until = now + self._backoff_s
            self._backoff_s = min(self._backoff_s * 2, _BACKOFF_MAX_S)
            should_log = now - self._last_log >= self._log_interval_s
            if should_log:
                self._last_log = now
        if should_log:
            log.warning(
                "score cache unavailable (%s: %s); continuing without it (bypassed so far: %d)",
                type(exc).__name__,
                exc,
                self._bypassed,
            )

    def _recovered(self) -> None:
        if self._backoff_s != _BACKOFF_START_S:
            with self._lock:
                self._backoff_s = _BACKOFF_START_S
