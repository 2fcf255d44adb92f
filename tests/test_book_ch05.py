"""pdlib.book.ch05: chapter 5's tables on the committed results/ch05_full/ files and the memory
benchmark's JSON, and its verdicts both ways on synthetic inputs. Fast: no training, no notebook
run."""
from __future__ import annotations

import re

import pytest

from pdlib.book import REPO_ROOT, evaluation_files, metric, read_json
from pdlib.book import ch05 as C
from pdlib.book.results import NOT_TESTABLE

FULL = REPO_ROOT / "results" / "ch05_full"
BENCH = REPO_ROOT / "results" / "benchmarks" / "tiled_memory.json"
have_full = pytest.mark.skipif(not (FULL / "n1-s0.json").is_file(),
                               reason="results/ch05_full/ not written yet (scripts/run_ch05_full.py)")
have_bench = pytest.mark.skipif(not BENCH.is_file(),
                                reason="results/benchmarks/tiled_memory.json not written yet")


# --- verdicts on synthetic inputs ----------------------------------------------------------------
def test_memory_verdicts_go_both_ways():
    assert C.memory_verdict(0.50, 0.55, 2).word == "held"
    assert C.memory_verdict(0.56, 0.55, 2).word == "did not hold"
    assert "0.55" in C.memory_verdict(0.5, 0.55, 2).rule
    assert C.no_saving_verdict({1: 1.0, 2: 0.98, 4: 1.02}).word == "held"
    assert C.no_saving_verdict({1: 1.0, 2: 0.98, 4: 0.6}).word == "did not hold"
    assert "4×4 0.60×" in C.no_saving_verdict({1: 1.0, 2: 0.98, 4: 0.6}).reason


def test_seam_verdict_goes_every_way():
    fid, rec = {"a": 100.0, "b": 110.0}, {"a": 0.2, "b": 0.2}
    assert C.seam_verdict(1.05, fid, rec, "a").word == "held"
    assert C.seam_verdict(1.30, fid, rec, "a").word == "did not hold"
    assert C.seam_verdict(1.05, fid, {"a": 0.01, "b": 0.02}, "a").word == NOT_TESTABLE
    assert C.seam_verdict(None, fid, rec, "a").word == "inconclusive"
    assert C.lower_seam_verdict(2.0, 5.0, fid, rec, "a", "b").word == "held"
    assert C.lower_seam_verdict(5.0, 2.0, fid, rec, "a", "b").word == "did not hold"
    assert C.lower_seam_verdict(2.0, 5.0, fid, {"a": 0.0, "b": 0.05}, "a", "b").word == NOT_TESTABLE


def test_pair_verdict_gates_on_the_two_runs_by_label():
    runs = {"a": dict(label="untiled", fid=80.0, recall=0.3),
            "b": dict(label="2×2", fid=120.0, recall=0.1),
            "c": dict(label="4×4", fid=85.0, recall=0.02)}
    v = C.pair_verdict(runs, "a", "b")
    assert v.word == "did not hold" and "2×2 120 against untiled 80" in v.reason
    assert C.pair_verdict(runs, "a", "c").word == "held"
    assert C.pair_verdict(runs, "a", "b", C.worse_verdict).word == "held"
    assert C.pair_verdict(runs, "a", "missing") is None
    low = {k: dict(r, recall=0.01) for k, r in runs.items()}
    assert C.pair_verdict(low, "a", "b").word == NOT_TESTABLE


def test_run_label_says_what_the_tiles_are_told():
    assert C.run_label(dict(grid=1, gcc=False, position=False)) == "untiled"
    assert C.run_label(dict(grid=2, gcc=True, position=True, tiles_per_image=4)) == \
        "2×2, GCC + position"
    assert C.run_label(dict(grid=4, gcc=False, position=True, tiles_per_image=16)) == \
        "4×4, position"
    assert C.run_label(dict(grid=2, gcc=False, position=False, tiles_per_image=1)) == \
        "2×2, neither, 1 tile per image"
    assert C.run_label(dict(grid=2, gcc=True, position=True, tiles_per_image=4,
                            precond="vp")).endswith("the release's loss")


# --- tables on the committed files ---------------------------------------------------------------
@have_full
def test_runs_table_holds_each_evaluations_numbers():
    t = C.runs_table()
    assert all(len(r) == len(t.header) for r in t.rows)
    runs = t.values["runs"]
    evals = [f for f in evaluation_files(FULL)
             if not re.search(r"-k\d+$", f.stem)]                # not an earlier checkpoint's
    assert any("-k1" in f.stem for f in evals)                # n2-k1-s0: one tile per image
    assert set(runs) == {f.stem for f in evals}
    for f in evals:
        ev = read_json(f)
        r = runs[f.stem]
        assert r["fid"] == pytest.approx(metric(ev, "FID")[1])
        assert r["recall"] == pytest.approx(metric(ev, "recall")[1])
        assert r["seam2"] == pytest.approx(ev["seam@2"])
        cfg = read_json(FULL / f"{f.stem}.config.json")
        assert r["grid"] == cfg["method"]["grid"]
        assert r["label"] == C.run_label(cfg["method"])


@have_full
def test_steps_table_has_each_checkpoint_and_the_final_evaluation():
    t = C.steps_table()
    v = t.values
    for name, fids in v["fid"].items():
        final = read_json(FULL / f"{name}.json")
        if (FULL / f"{name}-long.json").is_file():
            long = read_json(FULL / f"{name}-long.json")
            assert fids[max(fids)] == pytest.approx(metric(long, "FID")[1])
        else:
            assert fids[max(fids)] == pytest.approx(metric(final, "FID")[1])
        for f in FULL.glob(f"{name}-k*.json"):
            step = int(f.stem.rsplit("-k", 1)[1])
            assert fids[step] == pytest.approx(metric(read_json(f), "FID")[1])
            assert v["seam"][name][step] == pytest.approx(read_json(f)["seam@2"])


@have_bench
def test_memory_table_ratios_are_the_benchmarks_and_the_targets_its_own():
    bench = read_json(BENCH)
    t = C.memory_table(bench)
    v = t.values
    assert all(len(r) == len(t.header) for r in t.rows)
    assert v["seq"][1] == pytest.approx(1.0) and v["train"][1] == pytest.approx(1.0)
    for N in v["seq"]:
        assert v["seq"][N] == pytest.approx(v["mb"]["seq", N] / v["mb"]["seq", 1], rel=1e-3)
        assert v["batched"][N] == pytest.approx(v["mb"]["batched", N] / v["mb"]["seq", 1], rel=1e-3)
    assert v["targets"] == {2: 0.55, 4: 0.3}
    for N in v["train"]:
        assert v["train"][N] == pytest.approx(v["mb"]["train", N] / v["mb"]["train", 1], rel=1e-3)
    assert v["kind"] in ("cpu_peak_rss_minus_baseline", "cuda_max_allocated")


def test_memory_table_reads_a_quick_benchmark_run(tmp_path):
    """The table on a synthetic file of the benchmark's format: ratios, targets, settings."""
    rows = lambda kind: [dict(grid=1, layout="untiled", peak_mem_mb=100.0, s_per_image=1.0,
                              mem_ratio_vs_untiled=1.0)] + [
        dict(grid=N, layout=lay, peak_mem_mb=mb, s_per_image=0.5, mem_ratio_vs_untiled=mb / 100)
        for N, lay, mb in ((2, "sequential", 40.0), (2, "batched", 99.0),
                           (4, "sequential", 20.0), (4, "batched", 97.0))
        if kind == "sample" or lay == "sequential"]
    train = [dict(r, layout="tiled" if r["grid"] > 1 else "untiled") for r in rows("train")]
    bench = dict(memory_kind="cpu_peak_rss_minus_baseline", sampling=rows("sample"), training=train,
                 settings=dict(preset="small", resolution=128, batch=4, channels=3, threads=1),
                 machine=dict(device="cpu", cpu="AMD EPYC"),
                 targets={"N=2 sequential sample memory": dict(value=0.4, target="<= 0.55", met=True),
                          "N=2 batched sample memory": dict(value=0.99, target="~1"),
                          "N=4 sequential sample memory": dict(value=0.2, target="<= 0.3", met=True)})
    v = C.memory_table(bench).values
    assert v["seq"] == {1: 1.0, 2: 0.4, 4: 0.2} and v["batched"] == {1: 1.0, 2: 0.99, 4: 0.97}
    assert v["train"] == {1: 1.0, 2: 0.4, 4: 0.2} and v["targets"] == {2: 0.55, 4: 0.3}
    assert v["device"] == "CPU (AMD EPYC, 1 thread(s))" and v["resolution"] == 128
    assert C.memory_verdict(v["seq"][4], v["targets"][4], 4).word == "held"
    assert C.no_saving_verdict(v["batched"]).word == "held"
