"""Regenerates docs/performance.md from the newest result file of each benchmark (never by hand).

python -m load_tests.perf_docs
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from load_tests.report import RESULTS_DIR

DOC = Path(__file__).resolve().parent.parent / "docs" / "performance.md"
PLOTS = DOC.parent / "perf"

SECTIONS = [
    (
        "engine",
        "Engine vs the official Qwen3-Reranker recipe",
        "make bench-engine",
        "`python -m load_tests.bench_engine --quick --save`: Qwen3-Reranker-0.6B architecture (28 layers, random "
        "weights), documents of 16-512 tokens, the official recipe and the engine in turns, in fp32 and then in the "
        "engine's default dtype (both sides in that dtype); target speedup >= 3.0 in fp32 with max_abs_diff <= 1e-4. "
        "`bf16_*`: the accuracy cost of bf16 (the engine in bf16 against the engine in fp32 on this corpus). "
        "`speedup` is the ratio of medians over interleaved repetitions, `speedup_best` that of each side's least "
        "disturbed repetition (on a shared machine other processes only ever add time; the engine's repetitions "
        "varied far more than the recipe's there, plausibly because its many short parallel regions stall whenever "
        "one of the two threads loses its core). `flops_ratio` is the compute bound of `speedup`: recipe FLOPs / engine "
        "FLOPs on the same jobs (the engine counted low), i.e. the speedup of an engine whose matrix products run "
        "exactly as efficiently as the recipe's; on the quick input (12 documents) it is 2.80, so 3.0 there needs "
        "the engine's kernels to outrun the recipe's (they do slightly: the recipe's full-vocabulary logits are "
        "memory-bound).",
    ),
    (
        "peers",
        "Engine vs the peers (same cross-encoder, inputs and threads)",
        "make bench-peers",
        "`python -m load_tests.bench_peers --quick --save`: an ms-marco-MiniLM-L-6-shaped cross-encoder, jobs of 50 "
        "documents of 16-480 tokens, 2 threads for everyone, contenders timed in rotated turns (medians); every "
        "contender's logits checked against the engine's fp32 logits. ratio = engine at its default dtype / best "
        "peer at any precision, ratio_fp32 = engine fp32 / best fp32 peer; targets ratio >= 1.3, "
        "max_abs_diff <= 1e-3.",
    ),
    (
        "serve",
        "Serve handle and HTTP vs direct engine calls",
        "make bench-serve",
        "`python -m load_tests.bench_serve --quick --save`: the same jobs through the engine, the Serve handle and "
        "HTTP; target handle_efficiency >= 0.8.",
    ),
    (
        "pipeline",
        "Pipeline efficiency (Kafka -> worker -> Serve -> Redis -> Kafka)",
        "make bench-pipeline",
        "`python -m load_tests.bench_pipeline --quick --save`: efficiency = direct engine with the replica's "
        "cross-job batching / pipeline; replay = all-cached jobs at once (median of three replays of 2,000 jobs, each "
        "timed to its last result's arrival); cached_p50/p99 = all-cached jobs paced at 200 jobs/s. The load generator "
        "and collector use librdkafka (load_tests/rdkafka.py), which leaves the worker under test more of the 2 cores "
        "than kafka-python did. Targets efficiency >= 0.9, replay_jobs_per_s >= 2000, cached_p99_ms <= 50, lost = 0.",
    ),
    (
        "priority",
        "Moderation before recommendation (feed priority under a saturating burst)",
        "make bench-priority",
        "`python -m load_tests.bench_priority [--quick] --save` (40 s phases; --quick 15 s): moderation jobs (4 "
        "documents, 5/s) alone, then during a recommendation burst (20-document jobs at 12/s, more than the replica "
        "scores); one replica of the packaged all-MiniLM-L6-v2 on 1 CPU, a worker subprocess, cache off, 8 jobs in "
        "flight per feed, serve.max_batch_documents = worker.chunk_documents = 10; with the moderation priority on and "
        "off. ratio = burst p99 / unloaded p99 with the priority; goal ratio <= 2. The 2 cores are shared with other "
        "runs: full runs measured ratio 1.4-1.7 and ratio_without_priority 5.8-9.6; replica_busy_ratio = share of "
        "the wall time the replica computed.",
    ),
]
LOAD_PROFILES = ("smoke", "steady", "burst", "zipf")


def newest(kind: str) -> Path | None:
    files = sorted(p for p in RESULTS_DIR.glob(f"{kind}-*.json"))
    return files[-1] if files else None


def _table(data: dict) -> list[str]:
    rows = ["| metric | value |", "|---|---|"]
    rows += [f"| {k} | {v} |" for k, v in data.items() if not isinstance(v, (dict, list))]
    return rows


def _peers_plot(record: dict) -> list[str]:
    """A bar chart of docs/s per contender (docs/perf/peers.png)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = record.get("contenders", {})
    keys = [k for k in names if f"{k}_docs_per_s" in record]
    if not keys:
        return []
    PLOTS.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(11, 0.45 * len(keys) + 1.2))
    values = [record[f"{k}_docs_per_s"] for k in keys]
    colors = ["tab:green" if k.startswith("engine") else "tab:gray" for k in keys]
    ax.barh([names[k] for k in keys], values, color=colors)
    ax.invert_yaxis()
    ax.set(xlabel="docs/s (median of rounds)", title=str(record.get("model", "peers")).split(" (")[0])
    fig.tight_layout()
    fig.savefig(PLOTS / "peers.png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return ["![peers docs/s](perf/peers.png)", ""]


def render() -> str:
    out = [
        "# Performance",
        "",
        "Generated by `python -m load_tests.perf_docs` (`make perf-docs`) from the newest result file of each",
        "benchmark in `load_tests/results/`; do not edit by hand. Numbers are from one machine and one run:",
        "compare the ratios measured within a run, not absolute numbers across machines.",
        "",
        "**dtype.** `RERANK_MODEL_DTYPE=auto` (default) serves bf16 on CUDA and on CPUs with native bf16 matmuls",
        "(AMX-BF16 or AVX512-BF16 in the CPU flags), fp32 elsewhere; the choice and its reason are logged at load.",
        "Force full precision with `RERANK_MODEL_DTYPE=float32` (the parity tests do). What bf16 costs is measured",
        "below on each benchmark's own corpus: `bf16_max_abs_diff`, `bf16_top10_overlap_*`, `bf16_kendall_tau_*`.",
        "",
    ]
    for kind, title, make, how in SECTIONS:
        out += [f"## {title}", "", how + f" (`{make}`)", ""]
        path = newest(kind)
        if path is None:
            out += ["_No result yet._", ""]
            continue
        record = json.loads(path.read_text())
        out += [f"Result: `{path.relative_to(DOC.parent.parent)}`", ""] + _table(record) + [""]
        if kind == "peers":
            out += _peers_plot(record)
    out += ["## Load runs", "", "`python -m load_tests.run --profile smoke|steady|burst|zipf` (`make load-smoke`).", ""]
    for profile in LOAD_PROFILES:
        path = newest(profile)
        if path is None:
            continue
        record = json.loads(path.read_text())
        out += [f"### {profile} ({record['date']}, {record['machine']})", "", *_table(record["summary"]), ""]
        PLOTS.mkdir(parents=True, exist_ok=True)
        for plot in sorted(RESULTS_DIR.glob(f"{path.stem}-*.png")):
            shutil.copy(plot, PLOTS / f"{profile}-{plot.name[len(path.stem) + 1 :]}")
        for name in ("latency", "throughput", "replicas-lag"):
            if (PLOTS / f"{profile}-{name}.png").exists():
                out.append(f"![{profile} {name}](perf/{profile}-{name}.png)")
        out.append("")
    return "\n".join(out)


def main() -> int:
    DOC.write_text(render())
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
