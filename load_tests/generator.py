"""Realistic ranking jobs: popular queries repeat (Zipf), each query keeps its candidate list, so
the score cache matters the way it does in production; both feeds, multilingual."""

from __future__ import annotations

import bisect
import itertools
import random
import uuid

from load_tests import corpus
from load_tests.profiles import Profile
from schemas.messages import Candidate, RerankJob


class ZipfSampler:
    """Ranks 0..n-1 with P(k) proportional to 1/(k+1)^s (inverse CDF over a precomputed table)."""

    def __init__(self, n: int, s: float, rng: random.Random):
        weights = [1 / (k + 1) ** s for k in range(n)]
        self._cdf = list(itertools.accumulate(weights))
        self._rng = rng

    def __call__(self) -> int:
        return min(bisect.bisect_left(self._cdf, self._rng.random() * self._cdf[-1]), len(self._cdf) - 1)


class JobGenerator:
    def __init__(self, profile: Profile, seed: int = 0, run_id: str | None = None):
        self.profile = profile
        self.run_id = run_id or uuid.uuid4().hex[:6]
        rng = random.Random(seed)
        self._rng = rng
        self._pick = ZipfSampler(profile.queries, profile.zipf_s, rng)
        self._pool = []  # (feed, query, candidates) per query rank
        for _ in range(profile.queries):
            lang = rng.choice(corpus.LANGS)
            feed = "moderation" if rng.random() < profile.moderation_share else "recommendation"
            n = rng.randint(*profile.candidates)
            cands = [
                Candidate(id=f"c{i}", text=corpus.document(rng, lang if rng.random() < 0.7 else None)) for i in range(n)
            ]
            self._pool.append((feed, corpus.query(rng, lang), cands))
        self._count = itertools.count()

    def next_job(self) -> RerankJob:
        i = next(self._count)
        feed, query, cands = self._pool[self._pick()]
        return RerankJob(
            job_id=f"{self.run_id}-{i}",
            feed=feed,
            query=query,
            candidates=cands,
            threshold=0.5 if feed == "moderation" else None,
            top_k=20 if feed == "recommendation" else None,
        )
