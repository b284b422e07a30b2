"""Wire models: JSON Schemas on disk match the models; models round-trip through JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel, Field, ValidationError

from schemas.export import render_all
from schemas.messages import (
    Candidate,
    DeadLetter,
    ErrorKind,
    ModelRef,
    RankedCandidate,
    RerankJob,
    RerankResult,
    Timings,
)
from schemas.text import (
    TextIssue,
    UnicodeText,
    find_invalid_json_text,
    find_invalid_text,
    json_strings,
    lone_surrogate_at,
)

ROOT = Path(__file__).resolve().parent.parent


def test_schema_check_passes_on_the_committed_files():
    cmd = [sys.executable, "-m", "workers.cli", "schema", "--check"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_schema_check_detects_drift(tmp_path):
    out = tmp_path / "schemas"
    cli = [sys.executable, "-m", "workers.cli", "schema"]
    subprocess.run([*cli, "--out", str(out)], cwd=ROOT, check=True, capture_output=True)
    first = sorted(render_all())[0]
    (out / first).write_text((out / first).read_text().replace('"title"', '"titel"', 1))
    proc = subprocess.run([*cli, "--check", "--out", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 1 and first in proc.stdout


def test_wire_models_round_trip():
    job = RerankJob(
        job_id="j",
        feed="moderation",
        query="policy",
        threshold=0.5,
        candidates=[Candidate(id="a", text="ü 日本", metadata={"k": 1})],
    )
    assert RerankJob.model_validate_json(job.model_dump_json()) == job
    res = RerankResult(
        job_id="j",
        feed="moderation",
        model=ModelRef(id="m", kind="seq-cls"),
        ranked=[RankedCandidate(id="a", score=0.7, rank=1)],
        flagged=["a"],
        cached=1,
        timings=Timings(queue_wait_ms=1, cache_ms=1, model_ms=0, total_ms=2),
        worker_id="w",
    )
    assert RerankResult.model_validate_json(res.model_dump_json()) == res
    dl = DeadLetter(
        payload_b64=DeadLetter.encode_payload(b"\xff"),
        source_topic="t",
        source_partition=0,
        source_offset=3,
        error_kind=ErrorKind.undecodable,
        reason="r",
        worker_id="w",
    )
    assert DeadLetter.model_validate_json(dl.model_dump_json()).payload() == b"\xff"


def test_dead_letter_new_fields_default_so_old_letters_still_parse():
    old = (
        '{"schema_version": 1, "payload_b64": "eyJ9", "job_id": null, "source_topic": "t", "source_partition": 0,'
        ' "source_offset": 1, "error_kind": "invalid_json", "reason": "r", "worker_id": "w", "produced_at": 1}'
    )
    dl = DeadLetter.model_validate_json(old)
    assert dl.payload() == b'{"}' and dl.payload_size is None and dl.payload_sha256 is None
    assert dl.payload_truncated is False


def test_error_kinds_of_the_decoder_are_on_the_wire():
    values = {k.value for k in ErrorKind}
    assert {"invalid_text", "too_deep", "internal_error"} <= values
    assert values <= set(DeadLetter.model_json_schema()["$defs"]["ErrorKind"]["enum"])


# -- schemas.text: the lone-surrogate check shared by the Kafka and HTTP doors ---------------------------------------


def test_find_invalid_text_names_the_field_position_and_code_point():
    assert find_invalid_text([("query", "fine ü 日本 \U0001f600"), ("instruction", None)]) is None
    issue = find_invalid_text([("query", "ok"), ("documents[2]", "ab\udc80c"), ("documents[3]", "\ud800")])
    assert issue == TextIssue("documents[2]", 2, 0xDC80)
    assert issue.reason.startswith("documents[2]: lone UTF-16 surrogate U+DC80 at character 2")
    assert lone_surrogate_at("\x00 ascii") is None and lone_surrogate_at("é\udfff") == 1


def test_json_strings_walks_keys_and_values_in_document_order_with_paths():
    value = {"query": "q", "candidates": [{"id": "a", "metadata": {"x y": ["s"], "k": "v"}}], "n": 1}
    got = [path for path, _ in json_strings(value)]
    assert got == [
        "key 'query' of <root>",
        "query",
        "key 'candidates' of <root>",
        "key 'id' of candidates[0]",
        "candidates[0].id",
        "key 'metadata' of candidates[0]",
        "key 'x y' of candidates[0].metadata",
        "candidates[0].metadata['x y'][0]",
        "key 'k' of candidates[0].metadata",
        "candidates[0].metadata.k",
        "key 'n' of <root>",
    ]
    assert find_invalid_json_text(value) is None
    deep: object = "\ud800"
    for _ in range(5000):  # iterative: no RecursionError whatever the depth
        deep = [deep]
    assert find_invalid_json_text(deep).field == "[0]" * 5000


def test_unicode_text_fields_reject_lone_surrogates():
    class Req(BaseModel):
        query: UnicodeText
        name: UnicodeText | None = Field(None, max_length=3)

    assert Req(query="日本😀\x00", name="abc").query == "日本😀\x00"
    with pytest.raises(ValidationError) as err:
        Req(query="a\ud800")
    assert [(e["loc"], e["type"]) for e in err.value.errors()] == [(("query",), "string_unicode")]
    with pytest.raises(ValidationError) as err:
        Candidate(id="ok", text="x\udfff")
    assert err.value.errors()[0]["loc"] == ("text",)
    with pytest.raises(ValidationError, match="string_too_long"):
        Req(query="q", name="abcd")  # other constraints still apply
    assert "pattern" not in json.dumps(Req.model_json_schema())  # the UTF-8 check stays out of the schema
    with pytest.raises(ValidationError, match=r"metadata\.k: lone UTF-16 surrogate U\+DFFF"):
        Candidate(id="a", text="x", metadata={"k": "\udfff"})
