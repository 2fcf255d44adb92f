"""pdlib.book.ch04: chapter 4's tables on the committed results/ch04_full/ files, and its verdicts
both ways on synthetic inputs. Fast: no training, no notebook run."""
from __future__ import annotations

import pytest

from pdlib.book import REPO_ROOT, metric, read_json, read_log
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
