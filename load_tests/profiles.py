"""Load profiles: how fast, how long, how big and how repetitive the generated jobs are."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Profile:
    name: str
    rate: float | None  # jobs/s; None = as fast as possible
    duration_s: float  # production stops after this long ...
    max_jobs: int  # ... or after this many jobs
    candidates: tuple[int, int] = (10, 200)  # candidates per job, uniform
    queries: int = 200  # distinct queries (each with a fixed candidate list)
    zipf_s: float = 1.1  # popularity skew of queries: P(rank k) ~ 1 / k^s
    moderation_share: float = 0.3
    burst: tuple[float, float] | None = None  # (period_s, share of the period at 4x rate)

    def with_overrides(self, rate: float | None = None, duration_s: float | None = None) -> Profile:
        return replace(
            self,
            rate=self.rate if rate is None else rate,
            duration_s=self.duration_s if duration_s is None else duration_s,
        )

    def rate_at(self, t: float) -> float | None:
        """Target rate at second t of the run (bursts: 4x the base rate for part of each period)."""
        if self.rate is None or self.burst is None:
            return self.rate
        period, share = self.burst
        return self.rate * 4 if (t % period) < period * share else self.rate * 0.5


# Sized for a 2-core machine with the packaged MiniLM model (~1,000 docs/s at best).
PROFILES: dict[str, Profile] = {
    "smoke": Profile("smoke", rate=4, duration_s=15, max_jobs=60, candidates=(10, 40), queries=30),
    "steady": Profile("steady", rate=3, duration_s=120, max_jobs=2000),
    "burst": Profile("burst", rate=2, duration_s=120, max_jobs=2000, burst=(30, 0.3)),
    "zipf": Profile("zipf", rate=None, duration_s=60, max_jobs=600, queries=500, zipf_s=1.3),
}
