"""Turns what a run observed into numbers, a JSON result file, PNG plots and a Markdown summary.

Everything here is a pure function of the recorded data, so the numbers in docs/performance.md
can always be regenerated from the result files.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return float(ordered[rank - 1])


def summarize(
    produced: dict[str, tuple[int, int]], outcomes: dict[str, Any], started_ms: int, duplicates: int = 0
) -> dict[str, Any]:
    """produced: job_id -> (created_at ms, documents); outcomes: job_id -> Outcome (collector)."""
    done = {j: o for j, o in outcomes.items() if j in produced}
    results = {j: o for j, o in done.items() if o.dead_letter is None}
    dlq = len(done) - len(results) + sum(1 for j, o in outcomes.items() if j not in produced and o.dead_letter)
    latencies = [o.arrived_ms - produced[j][0] for j, o in results.items()]
    end_ms = max((o.arrived_ms for o in done.values()), default=started_ms)
    seconds = max((end_ms - started_ms) / 1000, 1e-9)
    docs = sum(produced[j][1] for j in results)
    cached = sum(o.cached for o in results.values())
    return {
        "jobs": len(produced),
        "results": len(results),
        "jobs_per_s": round(len(results) / seconds, 2),
        "docs_per_s": round(docs / seconds, 1),
        "p50_ms": round(percentile(latencies, 50), 1),
        "p95_ms": round(percentile(latencies, 95), 1),
        "p99_ms": round(percentile(latencies, 99), 1),
        "cache_hit_ratio": round(cached / docs, 4) if docs else 0.0,
        "dlq": dlq,
        "duplicates": duplicates,
        "lost": len(produced) - len(done),
    }


def timeline(
    produced: dict[str, tuple[int, int]], outcomes: dict[str, Any], started_ms: int, window_s: int = 5
) -> list[dict[str, Any]]:
    """Per-window latency percentiles and throughput, by arrival time."""
    buckets: dict[int, list[tuple[float, int]]] = {}
    for j, o in outcomes.items():
        if j in produced and o.dead_letter is None:
            b = int((o.arrived_ms - started_ms) / 1000 // window_s)
            buckets.setdefault(b, []).append((o.arrived_ms - produced[j][0], produced[j][1]))
    rows = []
    for b in sorted(buckets):
        lat = [x[0] for x in buckets[b]]
        rows.append(
            {
                "t_s": b * window_s,
                "jobs_per_s": len(lat) / window_s,
                "docs_per_s": sum(x[1] for x in buckets[b]) / window_s,
                "p50_ms": percentile(lat, 50),
                "p95_ms": percentile(lat, 95),
                "p99_ms": percentile(lat, 99),
            }
        )
    return rows


def write_run(kind: str, record: dict[str, Any], out_dir: Path = RESULTS_DIR) -> Path:
    """load_tests/results/<kind>-<UTC timestamp>.json (+ plots and summary for load runs)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = out_dir / f"{kind}-{stamp}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    if "timeline" in record:
        plot(record, path.with_suffix(""))
        path.with_suffix(".md").write_text(markdown_summary(record))
    return path


def plot(record: dict[str, Any], stem: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, samples = record["timeline"], record.get("samples", [])
    t0 = record["started_ms"] / 1000
    paths = []

    fig, ax = plt.subplots(figsize=(8, 3.5))
    for key in ("p50_ms", "p95_ms", "p99_ms"):
        ax.plot([r["t_s"] for r in rows], [r[key] for r in rows], marker=".", label=key.removesuffix("_ms"))
    ax.set(xlabel="seconds", ylabel="end-to-end latency (ms)", title=f"{record['profile']}: latency percentiles")
    ax.legend()
    paths.append(_save(fig, stem, "latency"))

    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.plot([r["t_s"] for r in rows], [r["docs_per_s"] for r in rows], color="tab:green", label="docs/s")
    ax.set(xlabel="seconds", ylabel="docs/s", title=f"{record['profile']}: throughput")
    ax2 = ax.twinx()
    ax2.plot([r["t_s"] for r in rows], [r["jobs_per_s"] for r in rows], color="tab:blue", label="jobs/s")
    ax2.set_ylabel("jobs/s")
    paths.append(_save(fig, stem, "throughput"))

    fig, ax = plt.subplots(figsize=(8, 3.5))
    ts = [s["t"] - t0 for s in samples]
    ax.step(ts, [s.get("replicas") or 0 for s in samples], where="post", color="tab:purple", label="replicas")
    top = max([s.get("replicas") or 0 for s in samples] + [1])
    ax.set(
        xlabel="seconds",
        ylabel="Serve replicas",
        ylim=(0, top + 1),
        title=f"{record['profile']}: replicas and consumer lag",
    )
    ax.yaxis.get_major_locator().set_params(integer=True)  # type: ignore[call-arg]
    ax2 = ax.twinx()
    ax2.plot(ts, [s.get("lag") or 0 for s in samples], color="tab:orange", label="lag (jobs)")
    ax2.set_ylabel("consumer lag (jobs)")
    paths.append(_save(fig, stem, "replicas-lag"))
    return paths


def _save(fig, stem: Path, name: str) -> Path:
    path = stem.parent / f"{stem.name}-{name}.png"
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def markdown_summary(record: dict[str, Any]) -> str:
    s = record["summary"]
    lines = [f"# Load run `{record['profile']}` ({record['date']})", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in s.items()]
    lines += ["", f"Profile: {record['profile_config']}", f"Machine: {record['machine']}", ""]
    return "\n".join(lines)
