"""pdlib.book.ch06: chapter 6's tables on the committed results/ch06_full/ files (every number
read from the JSON, none typed), the sampling-compute count, and the verdicts both ways on
synthetic inputs. Fast: no training, no notebook run."""
from __future__ import annotations

import json

import pytest

from pdlib.book import REPO_ROOT, metric, read_json, read_log
from pdlib.book import ch06 as C
from pdlib.book.results import NOT_TESTABLE

FULL = REPO_ROOT / "results" / "ch06_full"
have_full = pytest.mark.skipif(not (FULL / "dit.config.json").is_file(),
                               reason="results/ch06_full/ not written yet (scripts/run_ch06_full.py)")


def test_block_evaluations_count_the_explicit_blocks_and_the_budget():
    assert C.block_evaluations({"method": "vp", "steps": 10}) == 60
    assert C.block_evaluations({"method": "fpdm", "steps": 10, "sample_options": {"iters": 2}}) == 40
    assert C.block_evaluations({"method": "fpdm", "steps": 5, "sample_options": {}}) == 30
    assert C.block_evaluations({"method": "fpdm", "steps": 10,
                                "sample_options": {"iters": 2, "budget": 33}}) == 53


def test_labels_name_the_options():
    assert C.eval_label({"method": "vp", "steps": 5}) == "DiT, 5 steps"
    assert C.eval_label({"method": "fpdm", "steps": 10, "sample_options": {
        "iters": 2, "reuse": True, "reallocation": "increasing"}}) == "FPDM, 10 steps × 2, reuse, increasing"


def test_verdicts_go_every_way():
    rec = {"a": 0.3, "b": 0.3}
    assert C.better_verdict(100.0, 80.0, rec, "a", "b").word == "held"
    assert C.better_verdict(100.0, 95.0, rec, "a", "b").word == "partly"
    assert C.better_verdict(100.0, 120.0, rec, "a", "b").word == "did not hold"
    assert C.better_verdict(300.0, 280.0, {"a": 0.0, "b": 0.01}, "a", "b").word == NOT_TESTABLE
    assert C.ratio_verdict(0.12, 0.135, "parameters").word == "held"
    assert C.ratio_verdict(0.5, 0.4, "memory").word == "did not hold"
    assert "0.4" in C.ratio_verdict(0.5, 0.4, "memory").rule


def test_evals_table_reads_its_numbers(tmp_path):
    ev = {"method": "fpdm", "steps": 10, "sample_options": {"iters": 1, "reuse": True},
          "FID@500": 91.25, "KID@500": 0.05, "precision@500": 0.5, "recall@500": 0.25,
          "sampling_seconds": 12.5}
    (tmp_path / "fpdm-x.json").write_text(json.dumps(ev))
    (tmp_path / "dit-y.json").write_text(json.dumps({**ev, "method": "vp", "steps": 5,
                                                     "sample_options": {}, "FID@500": 77.5}))
    (tmp_path / "dit.config.json").write_text("{}")                  # not an evaluation
    t = C.evals_table(tmp_path)
    v = t.values["evals"]
    assert list(v) == ["dit-y", "fpdm-x"]                           # by compute: 30 and 30, DiT first
    assert v["fpdm-x"]["fid"] == 91.25 and v["dit-y"]["fid"] == 77.5
    assert v["fpdm-x"]["blocks"] == 30 and v["fpdm-x"]["ms"] == pytest.approx(25.0)
    assert t.values["fid_key"] == "FID@500" and "91.2" in t.markdown


@have_full
def test_committed_tables_match_the_files():
    t = C.training_table()
    for name in ("dit", "fpdm"):
        last = [r for r in read_log(FULL / f"{name}.metrics.jsonl") if "loss" in r][-1]
        assert t.values[name]["steps"] == last["step"]
        assert t.values[name]["loss"] == pytest.approx(last["loss"])
    e = C.evals_table()
    for name, row in e.values["evals"].items():
        ev = read_json(FULL / f"{name}.json")
        assert row["fid"] == metric(ev, "FID")[1] and row["recall"] == metric(ev, "recall")[1]
