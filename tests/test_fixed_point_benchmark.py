"""benchmarks/fixed_point.py at a tiny size: one pair (dit-tiny at depth 6 vs fpdm-tiny at (k1, k2) =
(2, 2), batch 2), measured in this process (`fresh=False`) for speed, plus one measurement in a fresh
worker (the benchmark's default path) and the CLI's option errors. Checks the JSON's structure, that
the FPDM has fewer parameters, that ratios are the quotients of the stored numbers, that the target
verdicts agree with the ratios, and the parameter counts at the release's scale (~25 s on one CPU
thread, mostly the worker's start-up)."""
from __future__ import annotations

import importlib.util
import json
import statistics
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))                      # its `from common import ...`
_spec = importlib.util.spec_from_file_location("fixed_point_benchmark", BENCH / "fixed_point.py")
fp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fp)

BATCH, REPEATS, K = 2, 2, (2, 2)
ROLES, KINDS = ("dit", "fpdm"), ("train", "sample")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    torch.set_num_threads(1)
    pair = fp.make_pair("tiny", "dit-tiny", "fpdm-tiny", dit_depth=6, k=K, batch=BATCH)
    out = tmp_path_factory.mktemp("fixed_point") / "fixed_point.json"
    doc, path = fp.run_benchmark([pair], device=torch.device("cpu"), repeats=REPEATS, threads=1, out=out,
                                 fresh=False, quick=True)
    assert path == out
    return json.loads(out.read_text())


def test_structure(tiny_run):
    d = tiny_run
    assert d["benchmark"] == "fixed_point" and d["quick"] is True
    assert d["memory_kind"] == "cpu_peak_rss_minus_baseline" and d["machine"]["device"] == "cpu"
    s = d["settings"]
    assert (s["repeats"], s["threads"], s["precision"], s["fresh_workers"], s["pairs"]) == (REPEATS, 1, "fp32", False, ["tiny"])
    assert s["net"] == fp.NET
    (p,) = d["pairs"]
    assert p["name"] == "tiny" and p["batch"] == BATCH and p["train_iterations"] == list(K)
    assert p["eval_iters"] == 6 - 1 - 1 and p["hidden_size"] == 32
    assert p["dit"]["preset"] == "dit-tiny" and p["dit"]["net"]["depth"] == 6
    assert p["fpdm"]["preset"] == "fpdm-tiny" and p["fpdm"]["net"]["iters"] == 4
    assert p["fpdm"]["train_iterations"] == list(K)
    assert p["block_evaluations"]["fpdm"] == dict(train_forward=1 + 1 + 2 + 2, train_with_grad=1 + 1 + 2, sample=6)
    assert p["block_evaluations"]["dit"] == dict(train_forward=6, train_with_grad=6, sample=6)
    for role in ROLES:
        e = p[role]
        for kind in KINDS:
            r = e[kind]
            assert r["params"] == e["params"]                  # the worker's real net = the meta count
            assert r["peak_mem_mb"] > 0 and r["images_per_s"] > 0 and r["persistent_mb"] > 0
            assert len(r["call_s"]) == REPEATS and r["first_call_s"] > 0
            m = r["measurement"]
            assert m["warmup"] == "small" and m["fresh_process"] is False
            assert isinstance(m["peak_raised_by_call"], bool) and m["peak_source"] in ("VmHWM", "ru_maxrss")
        # The state kept between training steps: parameters, gradients and AdamW's two moments (fp32).
        assert e["train"]["persistent_mb"] == pytest.approx(4 * 4 * e["params"] / 2 ** 20, rel=0.01)
        assert e["sample"]["persistent_mb"] == pytest.approx(4 * e["params"] / 2 ** 20)
    assert set(p["ratios"]) == {"params", "train_memory", "train_memory_with_state", "sample_memory",
                                "train_images_per_s", "sample_images_per_s"}
    assert set(p["targets"]) == {"params", "train_memory", "train_memory_with_state"}
    assert d["all_peaks_raised_by_call"] == all(p[r][k]["measurement"]["peak_raised_by_call"]
                                                for r in ROLES for k in KINDS)


def test_fpdm_has_fewer_parameters(tiny_run):
    (p,) = tiny_run["pairs"]
    assert p["fpdm"]["params"] < p["dit"]["params"]
    assert p["fpdm"]["train"]["persistent_mb"] < p["dit"]["train"]["persistent_mb"]


def test_ratios_are_the_quotients_of_the_measurements(tiny_run):
    (p,) = tiny_run["pairs"]
    d, f, q = p["dit"], p["fpdm"], p["ratios"]
    assert q["params"] == pytest.approx(f["params"] / d["params"])
    assert q["train_memory"] == pytest.approx(f["train"]["peak_mem_mb"] / d["train"]["peak_mem_mb"])
    assert q["train_memory_with_state"] == pytest.approx(f["train"]["total_mb"] / d["train"]["total_mb"])
    assert q["sample_memory"] == pytest.approx(f["sample"]["peak_mem_mb"] / d["sample"]["peak_mem_mb"])
    assert q["train_images_per_s"] == pytest.approx(f["train"]["images_per_s"] / d["train"]["images_per_s"])
    assert q["sample_images_per_s"] == pytest.approx(f["sample"]["images_per_s"] / d["sample"]["images_per_s"])
    for e in (d, f):
        for kind in KINDS:
            r = e[kind]
            assert r["total_mb"] == pytest.approx(r["peak_mem_mb"] + r["persistent_mb"])
            assert r["images_per_s"] == pytest.approx(BATCH / statistics.median(r["call_s"]))


def test_targets_agree_with_the_ratios(tiny_run):
    (p,) = tiny_run["pairs"]
    t, q = p["targets"], p["ratios"]
    for key, bound in (("params", 0.2), ("train_memory", 0.5), ("train_memory_with_state", 0.5)):
        assert t[key]["value"] == pytest.approx(q[key])
        assert t[key]["bound"] == bound and t[key]["target"] == f"<= {bound}"
        assert t[key]["met"] is (q[key] <= bound)
    assert t["params"]["value"] == pytest.approx(t["params"]["fpdm"] / t["params"]["dit"])
    for key in ("train_memory", "train_memory_with_state"):
        assert t[key]["value"] == pytest.approx(t[key]["fpdm_mb"] / t[key]["dit_mb"])
    assert tiny_run["targets_met"] == {"tiny": {k: v["met"] for k, v in t.items()}}


def test_release_scale_parameter_counts(tiny_run):
    xl = tiny_run["release_scale"]
    assert (xl["dit"]["preset"], xl["fpdm"]["preset"]) == ("DiT-XL/2", "FPDM-XL/2")
    assert xl["config"] == dict(in_channels=4, resolution=32, num_classes=1000, learn_sigma=True)
    assert 86.4e6 <= xl["fpdm"]["params"] <= 86.6e6
    assert 674.7e6 <= xl["dit"]["params"] <= 674.9e6
    assert xl["ratio"] == pytest.approx(xl["fpdm"]["params"] / xl["dit"]["params"])
    assert xl["ratio"] == pytest.approx(0.128, abs=0.001)
    assert xl["met"] is (xl["ratio"] <= 0.2)


def test_a_measurement_in_a_fresh_worker():
    pair = fp.make_pair("tiny", "dit-tiny", "fpdm-tiny", dit_depth=6, k=K, batch=BATCH)
    spec = dict(pair["fpdm"], kind="train", batch=BATCH, repeats=1, device="cpu", threads=1, warmup="small",
                malloc="fixed", precision="fp32", fresh=True)
    r = fp.run_worker(spec)
    m = r["measurement"]
    assert m["fresh_process"] is True and m["peak_source"] == "VmHWM" and m["mmap_threshold_fixed"] is True
    assert isinstance(m["peak_raised_by_call"], bool) and "hwm_reset" not in m
    assert r["peak_mem_mb"] > 0 and r["params"] == fp.meta_params("fpdm-tiny", **pair["fpdm"]["net"])
    assert r["images_per_s"] == pytest.approx(BATCH / r["call_s"][0])


def test_default_pairs():
    chapter, paper = fp.default_pairs(["chapter", "paper-shaped"])
    assert (chapter["dit"]["preset"], chapter["dit"]["net"]["depth"], chapter["train_iterations"]) == ("dit-small", 6, [2, 2])
    assert (paper["dit"]["preset"], paper["dit"]["net"]["depth"], paper["train_iterations"]) == ("dit-small", 28, [10, 12])
    assert chapter["eval_iters"] == 4 and paper["eval_iters"] == 26
    assert chapter["batch"] == paper["batch"] == 64
    for p in (chapter, paper):
        assert p["fpdm"]["preset"] == "fpdm-small" and p["hidden_size"] == 128
        assert p["dit"]["net"]["patch_size"] == p["fpdm"]["net"]["patch_size"] == 4
        assert p["dit"]["net"]["in_channels"] == 1 and p["dit"]["net"]["num_classes"] == 10
    quick = fp.default_pairs(["paper-shaped"], quick=True, batch=8)[0]
    assert (quick["dit"]["preset"], quick["fpdm"]["preset"], quick["batch"]) == ("dit-tiny", "fpdm-tiny", 8)
    with pytest.raises(ValueError, match="same width"):
        fp.make_pair("bad", "dit-tiny", "fpdm-small", dit_depth=6, k=K, batch=2)
    with pytest.raises(ValueError, match="dit_depth"):
        fp.make_pair("bad", "dit-tiny", "fpdm-tiny", dit_depth=2, k=K, batch=2)


@pytest.mark.parametrize("argv, message", [
    (["--pairs", "nope"], "--pairs"), (["--batch", "0"], "--batch"), (["--repeats", "0"], "--repeats"),
    (["--precision", "fp16"], "--precision fp16"), (["--pairs", "chapter,chapter"], "--pairs"),
] + ([] if torch.cuda.is_available() else [(["--device", "cuda"], "--device cuda")]))
def test_bad_options_are_one_line_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        fp.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "error:" in err[-1] and message in err[-1]                # usage, then the one-line error
