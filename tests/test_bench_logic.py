"""Benchmark plumbing that decides what a number means: the pipeline's direct-engine baseline batches
jobs like the replica, and docs/performance.md is rebuilt from result files (peers section and plot)."""

from __future__ import annotations

import json

from load_tests import perf_docs
from load_tests.bench_pipeline import engine_baseline, make_jobs
from schemas.scoring import ModelInfo
from schemas.settings import Settings


class RecordingEngine:
    info = ModelInfo(
        id="rec", revision=None, kind="seq-cls", device="cpu", dtype="float32", max_length=512, fallback=False
    )

    def __init__(self) -> None:
        self.calls: list[list[tuple[int, str]]] = []

    def score_many(self, requests):
        self.calls.append([(r.priority, r.long_documents) for r in requests])
        return [[0.5] * len(r.documents) for r in requests]


def test_pipeline_baseline_batches_jobs_like_the_replica():
    """The worker's requests (feed priority and long-document mode) through the replica's PriorityBatcher."""
    jobs = make_jobs(19, 3, "t")  # every third job is a moderation job
    engine = RecordingEngine()
    seconds, batches = engine_baseline(engine, jobs, Settings())
    assert seconds >= 0 and batches == 3
    sizes = [len(c) for c in engine.calls]
    assert sizes == [7, 8, 4]  # moderation (priority 1) first, then recommendation, serve.max_batch_size each
    assert {c for call in engine.calls[:1] for c in call} == {(1, "chunk")}  # the moderation feed's defaults
    assert {c for call in engine.calls[1:] for c in call} == {(0, "truncate")}


def test_perf_docs_renders_the_peers_section_with_its_plot(tmp_path, monkeypatch):
    results, doc = tmp_path / "results", tmp_path / "docs" / "performance.md"
    results.mkdir()
    doc.parent.mkdir()
    record = {
        "engine_docs_per_s": 37.1,
        "ratio": 1.43,
        "engine_bfloat16_docs_per_s": 37.1,
        "st_torch_float32_docs_per_s": 11.9,
        "contenders": {"engine_bfloat16": "engine bfloat16", "st_torch_float32": "sentence-transformers (torch)"},
    }
    (results / "peers-20990101T000000Z.json").write_text(json.dumps(record))
    monkeypatch.setattr(perf_docs, "RESULTS_DIR", results)
    monkeypatch.setattr(perf_docs, "DOC", doc)
    monkeypatch.setattr(perf_docs, "PLOTS", doc.parent / "perf")
    text = perf_docs.render()
    assert "## Engine vs the peers" in text and "| ratio | 1.43 |" in text
    assert "![peers docs/s](perf/peers.png)" in text and (doc.parent / "perf" / "peers.png").stat().st_size > 1000
    assert "RERANK_MODEL_DTYPE=float32" in text  # how to force full precision
    assert "## Engine vs the official Qwen3-Reranker recipe" in text and "_No result yet._" in text


def test_prepared_jobs_are_the_same_job_stamped_at_send_time():
    from load_tests.harness import LocalPipeline
    from schemas.messages import RerankJob
    from tests.support.fake_kafka import FakeProducer

    pipe = LocalPipeline(Settings())
    pipe._producer = FakeProducer()
    job = make_jobs(1, 3, "t")[0]
    created = pipe.send_prepared(pipe.prepare(job))
    ((topic, key, value),) = pipe._producer.sent
    sent = RerankJob.model_validate_json(value)
    assert topic == Settings().kafka.feeds[job.feed].topic and key == job.job_id.encode()
    assert sent.created_at == created and sent.model_copy(update={"created_at": job.created_at}) == job
