"""pdlib.book.ch07: chapter 7's tables on made-up evaluation files (every number read from the
JSON, none typed), the NFE count of a relay (stage-1 calls at the stage-1 model's resolution),
the labels, and the time verdict both ways; on the committed results/ch07_full/ files once they
exist. Fast: no training, no notebook run."""
from __future__ import annotations

import json

import pytest

from pdlib.book import REPO_ROOT, metric, read_json
from pdlib.book import ch07 as C

FULL = REPO_ROOT / "results" / "ch07_full"
have_full = pytest.mark.skipif(not (FULL / "stage2.config.json").is_file(),
                               reason="results/ch07_full/ not written yet (scripts/run_ch07_full.py)")
EXPORT_8 = "results/weights/ch07-stage1.safetensors"      # an 8×8 model (committed export)
EXPORT_32 = "results/weights/ch04-edm.safetensors"        # a 32×32 model


def _ev(method="relay", steps=9, nfe=17.0, **kw):
    return {"method": method, "steps": steps, "resolution": 32, "nfe_per_image": nfe,
            "checkpoint": "runs/ch07_full/stage2/latest.pt", "FID@500": 91.25, "KID@500": 0.05,
            "precision@500": 0.5, "recall@500": 0.25, "sampling_seconds": 12.5, **kw}


def test_stage1_resolution_is_read_from_the_export():
    assert C.stage1_resolution(EXPORT_8) == 8
    assert C.stage1_resolution(EXPORT_32) == 32


def test_relay_nfe_counts_stage1_at_its_resolution():
    low = _ev(sample_options={"stage1": EXPORT_8, "stage1_steps": 5})
    assert C.eval_nfe(low) == (9, 17)                  # 2·5 − 1 at 8×8, the counted 17 at 32×32
    full = _ev(sample_options={"stage1": EXPORT_32, "stage1_steps": 18})
    assert C.eval_nfe(full) == (0, 17 + 35)            # a 32×32 base model's calls are at 32×32
    assert C.eval_nfe(_ev(method="edm", steps=18, nfe=35.0)) == (0, 35)


def test_labels_name_the_recipe_and_the_ablation():
    o = {"stage1": EXPORT_8, "stage1_steps": 9}
    assert C.eval_label("r9-9", _ev(sample_options=o)) == "relay 9 + 9"
    assert C.eval_label("x", _ev(sample_options={**o, "s_noise": 0.0})) == "relay 9 + 9, s_noise 0"
    assert C.eval_label("x", _ev(sample_options={**o, "truncation_sigma": 0.5})) == \
        "relay 9 + 9, truncation σ 0.5"
    assert C.eval_label("e", _ev(method="edm", steps=18)) == "EDM, 18 steps"
    assert C.eval_label("c", _ev(sample_options={"stage1": EXPORT_32, "stage1_steps": 18})) == \
        "chapter 4's EDM, 18 steps, + relay 9"


def test_evals_table_reads_its_numbers(tmp_path):
    (tmp_path / "r5-5.json").write_text(json.dumps(_ev(
        steps=5, nfe=9.0, sample_options={"stage1": EXPORT_8, "stage1_steps": 5})))
    (tmp_path / "edm-s10.json").write_text(json.dumps(_ev(method="edm", steps=10, nfe=19.0,
                                                          **{"FID@500": 77.5})))
    (tmp_path / "stage1.config.json").write_text("{}")  # configs are skipped
    t = C.evals_table(tmp_path)
    ev = t.values["evals"]
    assert list(ev) == ["r5-5", "edm-s10"]              # by total calls: 9 + 9 = 18 < 19
    assert ev["r5-5"]["nfe"] == 18 and ev["edm-s10"]["fid"] == 77.5
    assert ev["r5-5"]["ms"] == pytest.approx(12.5e3 / 500)
    assert t.values["fid_key"] == "FID@500" and "77.5" in t.markdown


def test_time_verdict_goes_both_ways():
    assert C.time_verdict(0.8).word == "held"
    assert C.time_verdict(1.2).word == "did not hold"
    assert "1" in C.time_verdict(1.2).rule


def test_benchmark_table_reads_its_numbers():
    bench = {"configs": {"r9-9": {"nfe_stage1": 17, "nfe_high": 17, "seconds_per_image": 0.25},
                         "edm-s18": {"nfe_stage1": 0, "nfe_high": 35, "seconds_per_image": 0.5}},
             "pairs": [{"relay": "r9-9", "edm": "edm-s18", "time_ratio": 0.5}]}
    t = C.benchmark_table(bench)
    assert t.values["ratios"] == {"r9-9 ÷ edm-s18": 0.5}
    assert t.values["configs"]["r9-9"]["ms"] == 250.0 and "250.0" in t.markdown


@have_full
def test_the_committed_full_runs_are_read_not_typed():
    t = C.evals_table()
    for name, e in t.values["evals"].items():
        ev = read_json(FULL / f"{name}.json")
        assert e["fid"] == metric(ev, "FID")[1] and e["recall"] == metric(ev, "recall")[1]
        assert e["nfe_high"] >= 1
    tt = C.training_table()
    assert set(tt.values) == set(C.RUNS)
