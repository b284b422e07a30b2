"""The chaos run's arithmetic (load_tests/chaos.py): output gaps, gaps after faults, duplicates."""

from __future__ import annotations

from types import SimpleNamespace

from load_tests.chaos import longest_gap, summarize
from load_tests.collector import Outcome


def test_longest_gap_counts_the_edges_of_the_window():
    assert longest_gap([1.0, 2.0, 2.5], 0.0, 3.0) == 1.0
    assert longest_gap([], 10.0, 14.0) == 4.0  # nothing at all: the whole window
    assert longest_gap([5.0, 1.0, 3.0], 0.0, 9.0) == 4.0  # unsorted input; the tail 5 -> 9
    assert longest_gap([0.5, 20.0], 1.0, 2.0) == 1.0  # arrivals outside the window do not count


def test_summary_names_lost_jobs_gaps_after_faults_and_unequal_duplicates():
    started = 1_000_000
    produced = {f"j{i}": (started + i * 100, 4) for i in range(10)}
    outcomes = {f"j{i}": Outcome(started + i * 100 + 50) for i in range(9)}  # j9 never answered
    outcomes["j5"] = Outcome(started + 4000)  # a 3.5 s silence before j5 ... after a fault at 0.6 s
    collector = SimpleNamespace(
        outcomes=outcomes,
        duplicates=2,
        duplicate_ms=[started + 700, started + 90_000],
        rankings={"j1": [[("a", 1)], [("a", 1)]], "j2": [[("a", 1), ("b", 2)], [("b", 1), ("a", 2)]]},
    )
    faults = [{"fault": "worker SIGKILL 1", "at_ms": started + 600, "t_s": 0.6}]
    raw = {"produced": produced, "collector": collector, "started_ms": started, "faults": faults, "failed_sends": []}
    line = summarize(raw)["summary"]
    assert (line["produced"], line["results"], line["lost"]) == (10, 9, 1)
    assert line["gap_after_fault_s"] == {"worker SIGKILL 1": 3.15}  # j8 at 0.85 s, then nothing until j5 at 4.0 s
    assert line["duplicates_after_fault"] == {"worker SIGKILL 1": 1}
    assert line["duplicates_identical"] is False  # j2 came back ranked differently
