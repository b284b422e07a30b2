"""The one Redis score cache of the scoring core (so of the Kafka worker and the HTTP path alike).

Why it looks like this:
- Keys hash length-prefixed parts (model fingerprint, kind, instruction, query, document, and the
  long-document mode unless it is the default), so two different inputs can never collide by
  concatenation ("ab"+"c" vs "a"+"bc"), and a score computed under one long-document mode
  (truncate keeping the start or the end, chunk, a token cap) is never served for another.
- Values are one 8-byte little-endian double: compact and exact (no float/str round trip). A chunk-mode
  value adds the best window's index (4 bytes): the document's score and where it came from. Only the
  document is cached, not each window: windows are cut from the model's tokens, which the worker
  does not have (no tokenizer on the Kafka side), so per-window keys would need a model round trip
  before the lookup, and multiply the keys of the one MGET by the windows per document.
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

from schemas.scoring import ScoreRequest
from schemas.settings import RedisSettings

log = logging.getLogger(__name__)

_VALUE = struct.Struct("<d")
_CHUNKED_VALUE = struct.Struct("<dI")  # score, best window
_LEN = struct.Struct(">I")

# After a failure, Redis is skipped for this long (doubling up to the maximum while it stays down).
_BACKOFF_START_S = 0.5
_BACKOFF_MAX_S = 5.0


def cache_key(
    prefix: str, fingerprint: str, kind: str, instruction: str, query: str, document: str, mode: str = ""
) -> bytes:
    """Key of one (model, instruction, query, document[, mode]) score: prefix + BLAKE2b-128 of length-prefixed parts.

    ``mode`` ("" = the default handling, whose keys stay as they were) comes from :func:`mode_tag`.
    """
    return cache_keys(prefix, fingerprint, kind, instruction, query, [document], mode)[0]


def _hash_part(h, part: str) -> None:
    # surrogatepass: the doors reject lone surrogates, but a key must never be the thing that crashes.
    data = part.encode("utf-8", "surrogatepass")
    h.update(_LEN.pack(len(data)))
    h.update(data)


def cache_keys(
    prefix: str, fingerprint: str, kind: str, instruction: str, query: str, documents: Sequence[str], mode: str = ""
) -> list[bytes]:
    """:func:`cache_key` of each document of one job: the parts they share are hashed once, then the
    hash state is copied per document (a 20-document job's keys cost a third of 20 separate keys)."""
    shared = hashlib.blake2b(digest_size=16)
    for part in (fingerprint, kind, instruction, query):
        _hash_part(shared, part)
    head = prefix.encode("utf-8", "surrogatepass")
    keys = []
    for document in documents:
        h = shared.copy()
        _hash_part(h, document)
        if mode:
            _hash_part(h, mode)
        keys.append(head + h.digest())
    return keys


def mode_tag(request: ScoreRequest) -> str:
    """The long-document handling a score depends on, as a key part; "" for the default."""
    if request.plain:
        return ""
    cap = request.max_tokens_per_doc
    return f"{request.long_documents}:{request.truncation_direction}:{'-' if cap is None else cap}"


def encode_score(score: float) -> bytes:
    return _VALUE.pack(float(score))


def decode_score(raw: bytes | str | None) -> float | None:
    if not isinstance(raw, bytes) or len(raw) != _VALUE.size:
        return None  # absent, or a foreign/corrupt value: treat as a miss
    return _VALUE.unpack(raw)[0]


Entry = tuple[float, int | None]
"""A cached score and, in chunk mode, the index of the document's best window."""


def encode_entry(score: float, chunk: int | None) -> bytes:
    return encode_score(score) if chunk is None else _CHUNKED_VALUE.pack(float(score), chunk)


def decode_entry(raw: bytes | str | None, chunked: bool) -> Entry | None:
    """A value read back; the wrong size for the key's mode is a miss (as absent or corrupt values are)."""
    if not chunked:
        score = decode_score(raw)
        return None if score is None else (score, None)
    if not isinstance(raw, bytes) or len(raw) != _CHUNKED_VALUE.size:
        return None
    score, chunk = _CHUNKED_VALUE.unpack(raw)
    return score, chunk


@dataclass(frozen=True)
class CacheQuery:
    """One job's worth of cache lookups (for :meth:`ScoreCache.lookup_many`); ``mode`` from :func:`mode_tag`."""

    fingerprint: str
    kind: str
    instruction: str
    query: str
    documents: Sequence[str]
    mode: str = ""

    @property
    def chunked(self) -> bool:
        return self.mode.startswith("chunk:")


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

    def key(self, fingerprint: str, kind: str, instruction: str, query: str, document: str, mode: str = "") -> bytes:
        return cache_key(self._settings.key_prefix, fingerprint, kind, instruction, query, document, mode)

    def keys(
        self, fingerprint: str, kind: str, instruction: str, query: str, documents: Sequence[str], mode: str = ""
    ) -> list[bytes]:
        return cache_keys(self._settings.key_prefix, fingerprint, kind, instruction, query, documents, mode)

    def lookup(
        self, fingerprint: str, kind: str, instruction: str, query: str, documents: Sequence[str]
    ) -> list[float | None]:
        """Cached score per document (None = miss), in one MGET round trip."""
        return self.lookup_many([CacheQuery(fingerprint, kind, instruction, query, documents)])[0]

    def lookup_many(self, queries: Sequence[CacheQuery]) -> list[list[float | None]]:
        """Lookups of many jobs in one MGET round trip (a whole consumer poll at once)."""
        return [[None if e is None else e[0] for e in entries] for entries in self.lookup_entries(queries)]

    def lookup_entries(self, queries: Sequence[CacheQuery]) -> list[list[Entry | None]]:
        """``lookup_many`` with each score's best window (chunk-mode queries), in the same one MGET."""
        misses: list[list[Entry | None]] = [[None] * len(q.documents) for q in queries]
        total = sum(len(q.documents) for q in queries)
        if self._client is None or total == 0:
            return misses
        if not self._available():
            self._count(bypassed=total)
            return misses
        keys = [
            k for q in queries for k in self.keys(q.fingerprint, q.kind, q.instruction, q.query, q.documents, q.mode)
        ]
        try:
            raw = self._client.mget(keys)
        except Exception as exc:  # noqa: BLE001 - any cache failure means "no cache", never a failed job
            self._failed(exc, total)
            return misses
        self._recovered()
        out: list[list[Entry | None]] = []
        pos = 0
        for q in queries:
            out.append([decode_entry(r, q.chunked) for r in raw[pos : pos + len(q.documents)]])
            pos += len(q.documents)
        hits = sum(e is not None for entries in out for e in entries)
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
        *,
        mode: str = "",
        chunks: Sequence[int] | None = None,
    ) -> None:
        """Cache scores with the configured TTL in one pipelined round trip (chunk mode: with best windows)."""
        if len(documents) != len(scores) or (chunks is not None and len(chunks) != len(scores)):
            raise ValueError(f"{len(documents)} documents but {len(scores)} scores")
        best: Sequence[int | None] = [None] * len(scores) if chunks is None else chunks
        if self._client is None or not documents:
            return
        if not self._available():
            self._count(bypassed=len(documents))
            return
        try:
            pipe = self._client.pipeline(transaction=False)
            ttl = self._settings.ttl_s
            keys = self.keys(fingerprint, kind, instruction, query, documents, mode)
            for key, score, chunk in zip(keys, scores, best):
                pipe.set(key, encode_entry(score, chunk), ex=ttl)
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
