"""benchmarks/tiled_memory.py in its --quick configuration (64×64, 2 images, grids 1, 2, 4; ~45 s on
one CPU thread, mostly the workers' start-up): the JSON's structure, ratios that are the quotients
of its memory and time values, and target verdicts that agree with the ratios."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "tiled_memory.py"
KINDS = {"cpu": "cpu_peak_rss_minus_baseline", "cuda": "cuda_max_allocated"}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiled_memory") / "tiled_memory.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--device", "cpu", "--out", str(out)],
                          capture_output=True, text=True, timeout=280, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout


def test_structure(quick_run):
    d, stdout = quick_run
    assert d["benchmark"] == "tiled_memory" and d["quick"] is True
    assert d["memory_kind"] == KINDS[d["machine"]["device"]]
    s = d["settings"]
    assert (s["preset"], s["patch_size"], s["grids"], s["threads"], s["malloc"]) == ("small", 1, [1, 2, 4], 1, "fixed")
    assert [(r["grid"], r["layout"], r["chunk"]) for r in d["sampling"]] == [
        (1, "untiled", 1), (2, "sequential", 1), (2, "batched", 4), (4, "sequential", 1), (4, "batched", 16)]
    assert [(r["grid"], r["layout"], r["tiles_per_image"]) for r in d["training"]] == [
        (1, "untiled", 1), (2, "tiled", 1), (4, "tiled", 1)]
    for r in d["sampling"] + d["training"]:
        assert r["tile"] == s["resolution"] // r["grid"]
        assert r["gcc"] is r["position"] is (r["grid"] > 1)
        assert r["peak_mem_mb"] > 0 and r["s_per_image"] > 0
        assert len(r["call_s"]) == s["repeats"]
        m = r["measurement"]
        assert m["warmup"] == "small" and isinstance(m["peak_raised_by_call"], bool)
        assert m["peak_source"] in ("VmHWM", "ru_maxrss") and isinstance(m["mmap_threshold_fixed"], bool)
    assert d["all_peaks_raised_by_call"] == all(r["measurement"]["peak_raised_by_call"]
                                                for r in d["sampling"] + d["training"])
    assert "sample MB" in stdout and "wrote" in stdout


def test_ratios_are_the_quotients_of_the_measurements(quick_run):
    d, _ = quick_run
    for rows in (d["sampling"], d["training"]):
        ref = rows[0]
        for r in rows:
            assert r["mem_ratio_vs_untiled"] == pytest.approx(r["peak_mem_mb"] / ref["peak_mem_mb"])
            assert r["time_ratio_vs_untiled"] == pytest.approx(r["s_per_image"] / ref["s_per_image"])
            assert r["s_per_image"] == pytest.approx(statistics.median(r["call_s"]) / d["settings"]["batch"])


def test_targets_agree_with_the_ratios(quick_run):
    d, _ = quick_run
    t = d["targets"]
    by = {(r["grid"], r["layout"]): r for r in d["sampling"]}
    train = {r["grid"]: r for r in d["training"]}
    for N, bound in ((2, 0.55), (4, 0.3)):
        seq = t[f"N={N} sequential sample memory"]
        assert seq["value"] == pytest.approx(by[(N, "sequential")]["mem_ratio_vs_untiled"])
        assert seq["value"] == pytest.approx(seq["tiled_mb"] / seq["untiled_mb"])
        assert seq["target"] == f"<= {bound}"
        assert seq["met"] is (seq["value"] <= bound)
        bat = t[f"N={N} batched sample memory"]
        assert bat["value"] == pytest.approx(by[(N, "batched")]["mem_ratio_vs_untiled"]) and "met" not in bat
        tr = t[f"N={N} train memory"]
        assert tr["value"] == pytest.approx(train[N]["mem_ratio_vs_untiled"]) and "met" not in tr
    assert len(t) == 6
