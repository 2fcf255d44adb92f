"""pdlib.book.ch04: chapter 4's tables on the committed results/ch04_full/ files, and its verdicts
both ways on synthetic inputs. Fast: no training, no notebook run."""
from __future__ import annotations

import pytest

from pdlib.book import REPO_ROOT, evaluation_files, metric, read_json, read_log
from pdlib.book import ch04 as C
from pdlib.book.results import FID_MAX, NOT_TESTABLE

FULL = REPO_ROOT / "results" / "ch04_full"
have_full = pytest.mark.skipif(not (FULL / "rp1-s0.json").is_file(),
                               reason="results/ch04_full/ not written yet (scripts/run_ch04_full.py)")


# --- verdicts on synthetic inputs ----------------------------------------------------------------
def test_time_to_fid_interpolates_between_checkpoints_and_says_never():
    curve = [(1.0, 200.0), (2.0, 100.0), (3.0, 80.0)]
    assert C.time_to_fid(curve, 150.0) == pytest.approx(1.5)
    assert C.time_to_fid(curve, 80.0) == pytest.approx(3.0)
    assert C.time_to_fid(curve, 250.0) == pytest.approx(1.0)      # already at the first point
    assert C.time_to_fid(curve, 79.9) is None
    assert C.time_to_fid([(1.0, 90.0), (2.0, 120.0), (3.0, 60.0)], 100.0) == pytest.approx(1.0)


def test_speedup_verdict_goes_every_way():
    fid = {(1.0, 0): 90.0, (0.5, 0): 80.0}
    rec = {(1.0, 0): 0.3, (0.5, 0): 0.3}
    assert C.speedup_verdict({0: 2.5, 1: 2.1}, fid, rec).word == "held"
    assert C.speedup_verdict({0: 2.5, 1: 1.4}, fid, rec).word == "partly"
    assert C.speedup_verdict({0: 2.5, 1: 0.9}, fid, rec).word == "did not hold"
    assert C.speedup_verdict({0: None, 1: 3.0}, fid, rec).word == "did not hold"
    bad = {k: 300.0 for k in fid}
    assert C.speedup_verdict({0: 3.0}, bad, rec).word == NOT_TESTABLE
    assert C.speedup_verdict({0: 3.0}, fid, {k: 0.01 for k in rec}).word == NOT_TESTABLE


def test_close_worse_and_fails_verdicts_go_both_ways():
    rec = {"a": 0.3, "b": 0.3}
    assert C.close_verdict(100.0, 109.0, rec, "a", "b").word == "held"
    assert C.close_verdict(100.0, 111.0, rec, "a", "b").word == "did not hold"
    assert C.worse_verdict(100.0, 111.0, rec, "a", "b").word == "held"
    assert C.worse_verdict(100.0, 105.0, rec, "a", "b").word == "did not hold"
    assert C.close_verdict(200.0, 210.0, rec, "a", "b").word == NOT_TESTABLE
    r = {"real_p 1": 0.3, "real_p 0": 0.0}
    assert C.fails_verdict(60.0, 130.0, r).word == "held"
    assert C.fails_verdict(60.0, 90.0, r).word == "did not hold"
    assert C.fails_verdict(100.0, FID_MAX + 1, r).word == "held"
    assert C.fails_verdict(FID_MAX + 10, 400.0, r).word == NOT_TESTABLE


# --- tables on the committed files ---------------------------------------------------------------
@have_full
def test_real_p_table_holds_the_runs_numbers_and_their_images_per_step():
    t = C.real_p_table()
    assert all(len(r) == len(t.header) for r in t.rows) and len(t.rows) == len(C.REAL_P)
    v = t.values
    for p in C.REAL_P:
        ev = read_json(f"ch04_full/rp{p:g}-s0.json")
        assert v["fid"][p] == pytest.approx(metric(ev, "FID")[1])
        assert v["recall"][p] == pytest.approx(metric(ev, "recall")[1])
        log = read_log(f"ch04_full/rp{p:g}-s0.metrics.jsonl")
        assert v["kimg"][p] == pytest.approx(log[-1]["kimg"])
        # the logs count the images the multiplier drew: E[k] = 8.8 (1 − p) + p at R = 32 (cap 16),
        # within 4 standard errors of the mean of the run's draws (sd of k ≤ 5.9)
        want, se = 8.8 * (1 - p) + p, 5.9 / v["steps"] ** 0.5
        assert abs(v["images_per_step"][p] - want) <= 4 * se + 1e-9, (p, v["images_per_step"][p])
    assert v["images_per_step"][1.0] == 1.0


@have_full
def test_fid_time_table_reads_every_checkpoint_in_time_order():
    t = C.fid_time_table()
    v = t.values
    assert set(v["curves"]) == {(p, s) for p in (1.0, 0.5) for s in (0, 1)}
    for (p, s), curve in v["curves"].items():
        times = [m for m, _ in curve]
        assert len(curve) >= 4 and times == sorted(times)
        final = read_json(f"ch04_full/rp{p:g}-s{s}.json")
        assert curve[-1][1] == pytest.approx(metric(final, "FID")[1])
    for s, target in v["target"].items():
        assert target == pytest.approx(max(v["fid"][1.0, s], v["fid"][0.5, s]))
        # both runs reach the worse final FID, so the speed-up is always defined
        assert v["time"][1.0, s] is not None and v["time"][0.5, s] is not None
        assert v["speedup"][s] == pytest.approx(v["time"][1.0, s] / v["time"][0.5, s])


@have_full
def test_evaluations_and_pair_tables_cover_the_committed_files():
    n = len(evaluation_files(FULL))
    assert C.evaluations_table().values["n"] == n
    pt = C.pair_table({"coordinates off": ("rp0.5-s0", "nocoords-rp0.5-s0")})
    pair = pt.values["pairs"]["coordinates off"]
    assert pair["other"]["fid"] == pytest.approx(metric(read_json("ch04_full/nocoords-rp0.5-s0.json"), "FID")[1])
    assert len(C.subtable(pt, ["coordinates off"]).rows) == 2
