"""benchmarks/relay.py at its quick size (tiny nets, batch 1, one timed call): the JSON's
structure, the counted NFE against 2N − 1 per Heun stage, the time ratios as the quotients of the
stored times, the target verdicts against those ratios, and the FIDs read from the full runs'
JSON (a folder of made-up results here, to check the reading and the equal-FID verdict)."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))                      # its `from common import ...`
_spec = importlib.util.spec_from_file_location("relay_benchmark", BENCH / "relay.py")
rb = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rb)

FIDS = {"r5-5": 120.0, "edm-s10": 110.0, "r9-9": 90.0, "edm-s18": 95.0}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    torch.set_num_threads(1)
    results = tmp_path_factory.mktemp("ch07_full")
    for name, fid in FIDS.items():
        (results / f"{name}.json").write_text(json.dumps({"FID@500": fid, "KID@500": 0.1}))
    old, rb.RESULTS = rb.RESULTS, results
    try:
        out = tmp_path_factory.mktemp("bench") / "relay.json"
        doc, path = rb.run_benchmark(dict(rb.QUICK, batch=1, repeats=1), device=torch.device("cpu"),
                                     out=out, quick=True)
    finally:
        rb.RESULTS = old
    assert path == out
    return json.loads(out.read_text())


def test_structure_and_counted_nfe(run):
    assert run["benchmark"] == "relay" and run["quick"] is True and run["machine"]["device"] == "cpu"
    assert set(run["configs"]) == set(rb.CONFIGS)
    for name, (a, b) in rb.CONFIGS.items():
        c = run["configs"][name]
        assert c["nfe_high"] == 2 * b - 1                       # Heun at the high resolution
        assert c["nfe_stage1"] == (0 if a is None else 2 * a - 1)
        assert c["nfe_total"] == c["nfe_stage1"] + c["nfe_high"]
        assert c["seconds_per_image"] > 0 and c["timing"]["repeats"] == 1
    # the pairs compared are at (nearly) equal total NFE, relay never above EDM
    for p in run["pairs"]:
        assert p["nfe_total"][0] <= p["nfe_total"][1] <= p["nfe_total"][0] + 1


def test_ratios_and_verdicts_follow_the_stored_numbers(run):
    cfg = run["configs"]
    for p in run["pairs"]:
        ratio = cfg[p["relay"]]["seconds_per_image"] / cfg[p["edm"]]["seconds_per_image"]
        assert p["time_ratio"] == pytest.approx(ratio)
        assert p["fid"] == [FIDS[p["relay"]], FIDS[p["edm"]]]
        t = run["targets"][f"{p['relay']} ÷ {p['edm']} time at equal total NFE"]
        assert t["value"] == pytest.approx(ratio) and t["met"] == (ratio <= 1)
        f = run["targets"][f"{p['relay']} ÷ {p['edm']} time at equal or better FID"]
        assert f["met"] == (ratio <= 1 and FIDS[p["relay"]] <= FIDS[p["edm"]])
    # r5-5 has the worse FID here: its equal-FID target cannot be met, whatever the times
    assert run["targets"]["r5-5 ÷ edm-s10 time at equal or better FID"]["met"] is False


def test_without_results_there_is_no_equal_fid_target(tmp_path):
    old, rb.RESULTS = rb.RESULTS, tmp_path / "absent"
    try:
        assert rb.fid_of("r9-9") is None
    finally:
        rb.RESULTS = old


def test_bad_options_are_one_line_errors(capsys):
    with pytest.raises(SystemExit) as e:
        rb.main(["--batch", "0"])
    assert e.value.code == 2 and "--batch 0: allowed: an integer >= 1" in capsys.readouterr().err
