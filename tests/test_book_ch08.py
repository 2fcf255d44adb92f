"""pdlib.book.ch08: chapter 8's tables on made-up results files (every number read from the
JSON, none typed), the 1/N fit of a range of N against a closed form, and each verdict both ways;
the committed results/ch08_full/ files read without error. Fast: no Inception, no notebook run."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pdlib.book import REPO_ROOT
from pdlib.book import ch08 as C

FULL = REPO_ROOT / "results" / "ch08_full"


def _curve(ns, fid_inf, slope, reps=3, jitter=0.0):
    fids = [[fid_inf + slope / n + jitter * (r - 1) for r in range(reps)] for n in ns]
    return dict(ns=list(ns), fids=fids, fid_inf=fid_inf, slope=slope, fit_error=0.25)


def _write(folder, name, d):
    (folder / f"{name}.json").write_text(json.dumps(d))


@pytest.fixture
def folder(tmp_path):
    ns = [100, 200, 300, 400, 600, 800, 1000]
    _write(tmp_path, "fid_vs_n", dict(
        train_vs_test=_curve(ns, 7.5, 4000.0, jitter=0.5),
        train_vs_train=_curve([100, 200, 400], 3.25, 5000.0),
        kid_train_vs_test=[0.00125, 0.0005], n_train=1000, n_test=1000, reps=3))
    row = dict(n=50, n_ref=100, KID_std=0.001, border_energy_ratio=0.5)
    _write(tmp_path, "corruptions", dict(
        rows=[dict(row, set="clean", FID=10.0, sFID=20.0, KID=0.0, precision=0.8, recall=0.8),
              dict(row, set="modes", FID=15.0, sFID=22.0, KID=0.01, precision=0.78, recall=0.4),
              dict(row, set="blur", FID=40.0, sFID=30.0, KID=0.05, precision=0.2, recall=0.6,
                   border_energy_ratio=0.25)],
        blur_sigma=1.5, noise_std=0.2, mode_classes=[0, 1], grid=2,
        clean_border_energy_ratio_train=0.625))
    seam = dict(KID_std_straddle=0.001, KID_std_inner=0.001, n=30)
    _write(tmp_path, "seams", dict(
        rows=[dict(seam, set="test", FID_straddle=50.0, FID_inner=40.0, FID_gap=10.0,
                   KID_straddle=0.0, KID_inner=0.0, KID_gap=0.0),
              dict(seam, set="seamed", FID_straddle=90.0, FID_inner=41.0, FID_gap=49.0,
                   KID_straddle=0.05, KID_inner=0.0005, KID_gap=0.0495)],
        crop=16, grid=2, n_crops=30))
    return tmp_path


def test_fid_vs_n_table_reads_its_numbers(folder):
    t = C.fid_vs_n_table(folder)
    v = t.values
    assert v["ns"] == [100, 200, 300, 400, 600, 800, 1000]
    assert v["mean"][0] == pytest.approx(7.5 + 40.0)          # the subsets' mean at N = 100
    assert v["sd"][0] == pytest.approx(0.5)                   # jitter ±0.5 over 3 reps
    assert v["fid_inf"] == 7.5 and v["fit_error"] == 0.25 and v["slope"] == 4000.0
    assert v["halves"] == {100: pytest.approx(53.25), 200: pytest.approx(28.25),
                           400: pytest.approx(15.75)}
    assert (v["kid"], v["kid_std"], v["reps"]) == (0.00125, 0.0005, 3)
    md = t.markdown
    assert "47.5" in md and "7.5 ± 0.2" in md and "—" in md   # N = 300 has no halves value


def test_fit_ranges_recover_the_intercept_of_a_1_over_n_curve(folder):
    t = C.fit_ranges_table(((100, 400), (400, 1000), (900, 1000)), folder)
    icpt = t.values["intercepts"]
    assert set(icpt) == {(100, 400), (400, 1000)}             # (900, 1000): fewer than 3 sizes
    for v, err in icpt.values():
        assert v == pytest.approx(7.5, abs=1e-9) and 0 < err < 1   # jitter: symmetric, not 0


def test_corruptions_and_moves_tables(folder):
    ct = C.corruptions_table(folder)
    v = ct.values
    assert v["sets"]["modes"]["recall"] == 0.4 and v["n"] == 50 and v["n_ref"] == 100
    assert (v["blur_sigma"], v["noise_std"], v["mode_classes"], v["grid"]) == (1.5, 0.2, [0, 1], 2)
    assert v["train_border"] == 0.625
    assert "FID@50" in ct.header and C.SET_LABELS["modes"] in ct.markdown
    ch = C.moves_table(ct).values["change"]
    assert set(ch) == {"modes", "blur"}                       # the clean set is the baseline
    assert ch["modes"]["FID"] == pytest.approx(0.5)           # 15 / 10 − 1
    assert ch["modes"]["recall"] == pytest.approx(0.5)        # (0.8 − 0.4) / 0.8
    assert ch["blur"]["border_energy_ratio"] == pytest.approx(-0.5)


def test_seams_table(folder):
    t = C.seams_table(folder)
    assert t.values["sets"]["seamed"]["FID_gap"] == 49.0
    assert (t.values["crop"], t.values["grid"], t.values["n_crops"]) == (16, 2, 30)
    assert "0.0495" in t.markdown


def test_models_table_is_none_until_written_then_reads_the_floor(folder):
    assert C.models_table(folder) is None
    def row(model, fid_inf, committed=None):
        return dict(model=model, n=2000, n_ref=1000, n_1k=1000, fid_1k=fid_inf + 9,
                    fid_all=fid_inf + 5, kid=[0.02, 0.001], committed_fid=committed,
                    committed_fid_key="FID@1k",
                    fid_inf=dict(ns=[500, 1000, 2000], fids=[[1.0]] * 3, fid_inf=fid_inf,
                                 slope=100.0, fit_error=0.5))
    _write(folder, "models", dict(rows=[row("ch01", 40.0, 48.5), row("ch03", 60.0),
                                        row("real", 12.5)]))
    t = C.models_table(folder)
    assert t.values["above_floor"] == {"ch01": 27.5, "ch03": 47.5}
    assert t.values["n"] == 2000 and "FID@2k" in t.header
    assert "48.5" in t.markdown and "—" in t.markdown          # ch03 has no committed FID


def test_law_verdict_both_ways():
    assert C.law_verdict(1.0, 0.5, 20.0, 1000).word == "held"         # 5% of FID@1000
    v = C.law_verdict(5.0, 0.5, 20.0, 1000)                            # 25%
    assert v.word == "did not hold" and "5.0 ± 0.5" in v.reason and "10%" in v.rule


def test_n_dependence_verdict_both_ways():
    assert C.n_dependence_verdict([100, 1000], [90.0, 20.0]).word == "held"
    assert C.n_dependence_verdict([100, 1000], [30.0, 20.0]).word == "did not hold"


def test_kid_unbiased_verdict_both_ways():
    assert C.kid_unbiased_verdict(0.0001, 0.0001).word == "held"
    assert C.kid_unbiased_verdict(0.001, 0.0001).word == "did not hold"


def test_mode_drop_verdict_all_three_words():
    clean = dict(precision=0.8, recall=0.8)
    assert C.mode_drop_verdict(clean, dict(precision=0.78, recall=0.5)).word == "held"
    assert C.mode_drop_verdict(clean, dict(precision=0.5, recall=0.5)).word == "partly"
    assert C.mode_drop_verdict(clean, dict(precision=0.5, recall=0.78)).word == "did not hold"


def test_seam_verdict_all_three_words(folder):
    sets = C.seams_table(folder).values["sets"]
    real, seamed = sets["test"], sets["seamed"]
    assert C.seam_verdict(real, seamed).word == "held"
    assert C.seam_verdict(real, dict(seamed, KID_inner=0.02)).word == "partly"
    assert C.seam_verdict(real, dict(seamed, KID_straddle=0.001)).word == "did not hold"


def test_ranking_verdict_three_words():
    a = dict(fid_1k=50.0, fid_inf=40.0, fit_error=0.5)
    assert C.ranking_verdict(a, dict(fid_1k=60.0, fid_inf=50.0, fit_error=0.5)).word == "held"
    assert C.ranking_verdict(a, dict(fid_1k=60.0, fid_inf=40.5, fit_error=0.5)).word == \
        "inconclusive"
    assert C.ranking_verdict(a, dict(fid_1k=60.0, fid_inf=35.0, fit_error=0.5)).word == \
        "did not hold"


def test_missing_file_names_the_script(tmp_path):
    with pytest.raises(FileNotFoundError, match="run_ch08_full"):
        C.fid_vs_n_table(tmp_path)


@pytest.mark.skipif(not (FULL / "fid_vs_n.json").is_file(), reason="results/ch08_full/ not written")
def test_committed_results_read_and_agree_with_their_fits():
    t = C.fid_vs_n_table()
    v = t.values
    assert v["ns"] == sorted(v["ns"]) and len(v["ns"]) >= 3
    # the committed intercept is the least-squares fit of the committed points
    from pdlib.metrics import fit_inverse_n
    raw = C.read("fid_vs_n")["train_vs_test"]
    r = fit_inverse_n(np.asarray(raw["ns"]), np.asarray(raw["fids"]))
    assert r.fid_inf == pytest.approx(v["fid_inf"], rel=1e-9)
    for table in (C.fit_ranges_table(), C.corruptions_table(), C.seams_table()):
        assert table.rows
    if (FULL / "models.json").is_file():
        m = C.models_table().values
        assert set(m["models"]) == {"ch01", "ch03", "real"}
