"""What a cheaper precision costs in ranking quality: scores of one path compared with a reference path.

Benchmarks report it for bf16 against fp32 on their own corpus (per job, then the worst / mean over
jobs): the largest score difference, how many of the reference top 10 stay in the top 10, and
Kendall's tau between the two orders. Pure Python: no torch, no scipy.
"""

from __future__ import annotations

from collections.abc import Sequence


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b of two score lists over the same items (ties count as neither order); 1.0 for < 2 items."""
    n = len(a)
    if n != len(b):
        raise ValueError(f"{n} vs {len(b)} scores")
    concordant = discordant = ties_a = ties_b = 0
    for i in range(n):
        for j in range(i + 1, n):
            da, db = a[i] - a[j], b[i] - b[j]
            if da == 0 and db == 0:
                continue
            if da == 0:
                ties_a += 1
            elif db == 0:
                ties_b += 1
            elif (da > 0) == (db > 0):
                concordant += 1
            else:
                discordant += 1
    denom = ((concordant + discordant + ties_a) * (concordant + discordant + ties_b)) ** 0.5
    return 1.0 if denom == 0 else (concordant - discordant) / denom


def top_k_overlap(a: Sequence[float], b: Sequence[float], k: int = 10) -> float:
    """Share of a's top k items (ties broken by index) that are also in b's top k; 1.0 for no items."""
    k = min(k, len(a))
    if k == 0:
        return 1.0

    def top(scores: Sequence[float]) -> set[int]:
        return set(sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:k])

    return len(top(a) & top(b)) / k


def compare_scores(reference: Sequence[Sequence[float]], other: Sequence[Sequence[float]]) -> dict[str, float]:
    """Per-job comparison of two scorings of the same jobs: max abs diff (all jobs), worst and mean top-10
    overlap, worst and mean Kendall tau."""
    if len(reference) != len(other):
        raise ValueError(f"{len(reference)} vs {len(other)} jobs")
    diffs = [abs(x - y) for ref, oth in zip(reference, other) for x, y in zip(ref, oth, strict=True)]
    overlaps = [top_k_overlap(ref, oth) for ref, oth in zip(reference, other)]
    taus = [kendall_tau(ref, oth) for ref, oth in zip(reference, other)]
    n = max(1, len(reference))
    return {
        "max_abs_diff": float(f"{max(diffs, default=0.0):.3e}"),
        "top10_overlap_min": round(min(overlaps, default=1.0), 3),
        "top10_overlap_mean": round(sum(overlaps) / n, 3),
        "kendall_tau_min": round(min(taus, default=1.0), 4),
        "kendall_tau_mean": round(sum(taus) / n, 4),
    }
