"""Wire models: JSON Schemas on disk match the models; models round-trip through JSON."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from schemas.export import render_all
from schemas.messages import Candidate, DeadLetter, ErrorKind, ModelRef, RankedCandidate, RerankJob, RerankResult, Timings

ROOT = Path(__file__).resolve().parent.parent


def test_schema_check_passes_on_the_committed_files():
    proc = subprocess.run([sys.executable, "-m", "workers.cli", "schema", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_schema_check_detects_drift(tmp_path):
    out = tmp_path / "schemas"
    subprocess.run([sys.executable, "-m", "workers.cli", "schema", "--out", str(out)], cwd=ROOT, check=True, capture_output=True)
    first = sorted(render_all())[0]
    (out / first).write_text((out / first).read_text().replace('"title"', '"titel"', 1))
    proc = subprocess.run([sys.executable, "-m", "workers.cli", "schema", "--check", "--out", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 1 and first in proc.stdout


def test_wire_models_round_trip():
    job = RerankJob(job_id="j", feed="moderation", query="policy", threshold=0.5,
                    candidates=[Candidate(id="a", text="ü 日本", metadata={"k": 1})])
    assert RerankJob.model_validate_json(job.model_dump_json()) == job
    res = RerankResult(job_id="j", feed="moderation", model=ModelRef(id="m", kind="seq-cls"),
                       ranked=[RankedCandidate(id="a", score=0.7, rank=1)], flagged=["a"], cached=1,
                       timings=Timings(queue_wait_ms=1, cache_ms=1, model_ms=0, total_ms=2), worker_id="w")
    assert RerankResult.model_validate_json(res.model_dump_json()) == res
    dl = DeadLetter(payload_b64=DeadLetter.encode_payload(b"\xff"), source_topic="t", source_partition=0,
                    source_offset=3, error_kind=ErrorKind.undecodable, reason="r", worker_id="w")
    assert DeadLetter.model_validate_json(dl.model_dump_json()).payload() == b"\xff"
