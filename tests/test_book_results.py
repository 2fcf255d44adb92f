"""pdlib.book.results on the committed results/ files, its verdicts both ways, and what chapter 3
and the results page show: code lines that fit the page, no JSON dumps or machine paths in
outputs, every glued number that the prose quotes present. Fast: no training, no notebook run."""
from __future__ import annotations

import json
import math
import re

import nbformat
import pytest

from pdlib.book import REPO_ROOT, evaluation_files, metric, read_json, read_log
from pdlib.book import results as R

NOTEBOOKS = [REPO_ROOT / "notebooks" / "03_patched_unet.ipynb", REPO_ROOT / "book" / "results.ipynb",
             REPO_ROOT / "notebooks" / "04_patch_diffusion.ipynb",
             REPO_ROOT / "notebooks" / "05_patch_by_patch.ipynb",
             REPO_ROOT / "notebooks" / "06_fixed_point_dit.ipynb",
             REPO_ROOT / "notebooks" / "07_relay.ipynb",
             REPO_ROOT / "notebooks" / "08_measuring_quality.ipynb"]
MAX_LINE = 80
ABSOLUTE = re.compile(r"/(work|root|home|tmp)/")
BASE64 = re.compile(r"data:[a-z]+/[a-z0-9.+-]+;base64,[A-Za-z0-9+/=]+")


def _cells(table: R.Table) -> list[int]:
    """Cells per line of the rendered Markdown table (escaped pipes are not separators)."""
    return [len(re.split(r"(?<!\\)\|", line.strip())[1:-1]) for line in table.markdown.splitlines()]


def _one_cell_per_column(table: R.Table) -> None:
    assert table.rows, "the table has no rows"
    assert all(len(row) == len(table.header) for row in table.rows)
    assert set(_cells(table)) == {len(table.header)}


# --- tables on the committed files ---------------------------------------------------------------
def test_equal_time_table_holds_the_runs_numbers():
    t = R.equal_time_table()
    _one_cell_per_column(t)
    ev, log = read_json("patching_equal_time/P4.json"), read_log("patching_equal_time/P4.metrics.jsonl")
    assert t.values["fid"][4] == pytest.approx(metric(ev, "FID")[1])
    assert t.values["recall"][4] == pytest.approx(metric(ev, "recall")[1])
    assert t.values["steps"][4] == log[-1]["step"]
    assert t.values["minutes"][4] == pytest.approx(log[-1]["time"] / 60)
    row = next(r for r in t.rows if r[0] == 4)
    assert f"{log[-1]['step']:,}" in row and metric(ev, "FID")[0] in t.header
    assert t.values["batch"] == read_json("patching_equal_time/P4.config.json")["batch_size"]


def test_weighting_table_means_seeds_and_noise():
    t = R.weighting_table()
    _one_cell_per_column(t)
    s0, s1 = read_json("ch03_full/w-sqrt_snr-s0.json"), read_json("ch03_full/w-sqrt_snr-s1.json")
    f0, f1 = metric(s0, "FID")[1], metric(s1, "FID")[1]
    assert t.values["fid"]["sqrt_snr"] == pytest.approx((f0 + f1) / 2)
    assert t.values["noise"]["FID"] == pytest.approx(abs(f0 - f1))     # the one pair of seeds
    p2 = read_json("ch03_full/w-p2-s0.json")
    assert t.values["fid"]["p2"] == pytest.approx(metric(p2, "FID")[1])
    assert t.values["ranked"][0] == min(t.values["fid"], key=t.values["fid"].get)
    assert f"{f0:.1f}" in t.rows[0] and f"{f1:.1f}" in t.rows[0]
    assert t.values["steps"] == read_json("ch03_full/w-sqrt_snr-s0.config.json")["steps"]


def test_split_table_pairs_each_seed_with_one_model():
    t = R.split_table(t_boundary=396)
    _one_cell_per_column(t)
    sp, one = read_json("ch03_full/split-s1.json"), read_json("ch03_full/w-sqrt_snr-s1.json")
    assert t.values["fid"][1] == pytest.approx((metric(sp, "FID")[1], metric(one, "FID")[1]))
    hi = [i for i, t_ in enumerate(sp["x0_mse_t"]) if t_ < 396]
    ratio = (sum(sp["x0_mse"][i] for i in hi) / sum(one["x0_mse"][i] for i in hi))
    assert t.values["mse_ratio_hi"][1] == pytest.approx(ratio)
    assert "t < 396" in " ".join(t.header)
    assert t.values["steps_per_model"] == read_json("ch03_full/split-s0-model0.config.json")["steps"]


def test_guidance_table_counts_w1_for_both_and_reads_the_grids():
    t = R.guidance_table()
    _one_cell_per_column(t)
    r = read_json("ch03_full/cc-s0-w3-nothreshold.json")
    assert t.values["fid"][3.0, False] == pytest.approx(metric(r, "FID")[1])
    assert t.values["fid"][1.0, False] == t.values["fid"][1.0, True]
    assert len(t.rows) == len(t.values["keys"]) and (1.0, False) not in t.values["keys"]
    assert all(0 <= d <= 1 for d in t.values["dark"].values())


def test_respacing_and_learned_variance_tables():
    rt = R.respacing_table()
    _one_cell_per_column(rt)
    r25 = read_json("ch03_full/cc-s0-w1.5-steps25.json")
    assert rt.values["fid"][25] == pytest.approx(metric(r25, "FID")[1])
    assert rt.values["nfe"][25] == r25["nfe_per_image"]
    lt = R.learned_variance_table()
    _one_cell_per_column(lt)
    ls = read_json("ch03_full/ls-s0-ddpm50.json")
    assert lt.values["fid"]["learned Σ, DDPM-50"] == pytest.approx(metric(ls, "FID")[1])
    assert lt.values["v"]["v_mean"] == ls["v_mean"]


def test_full_runs_table_has_every_evaluation():
    t = R.full_runs_table()
    _one_cell_per_column(t)
    evals = evaluation_files(REPO_ROOT / "results/ch03_full")
    assert len(t.rows) == len(evals)


def test_benchmark_tables_label_every_target_in_plain_words():
    for name in ("train_step", "patching"):
        bench = read_json(f"benchmarks/{name}.json")
        t = R.benchmark_targets_table(bench)
        _one_cell_per_column(t)
        assert len(t.rows) == len(bench["targets"])
        for (key, target), row in zip(bench["targets"].items(), t.rows):
            assert "_" not in row[0], f"{key}: label {row[0]!r} is a key name"
            if "met" in target:
                assert row[3] == ("met" if target["met"] else "**not met**")
    ts = read_json("benchmarks/train_step.json")
    t = R.benchmark_targets_table(ts)
    row = t.rows[list(ts["targets"]).index("bf16_speedup_over_fp32")]
    assert row[1] == f"{ts['targets']['bf16_speedup_over_fp32']['value']:.3g}"
    lc = R.loss_curve_table(ts)
    _one_cell_per_column(lc)
    assert lc.values["final"]["fp32"] == pytest.approx(sum(ts["loss_curve"]["curves"]["fp32"][-10:]) / 10)


def test_patching_benchmark_tables():
    bench = read_json("benchmarks/patching.json")
    rows, claim = R.patching_benchmark_table(bench), R.patching_claim_table(bench)
    _one_cell_per_column(rows)
    _one_cell_per_column(claim)
    assert [r[0] for r in rows.rows] == [r["patch_size"] for r in bench["rows"]]
    assert claim.values["ratios"]["train_flops"] == bench["claim"]["ratios_p4_over_p1_quarter"]["train_flops"]
    assert R.cost_verdict(claim.values["ratios"]).word == "held"


# --- verdicts: each can come out both ways -------------------------------------------------------
def test_equal_time_verdict_is_not_testable_for_the_committed_runs():
    v = R.equal_time_table().values
    assert max(v["recall"].values()) < R.RECALL_MIN                 # what the files hold
    verdict = R.equal_time_verdict(v["fid"], v["recall"])
    assert verdict.word == R.NOT_TESTABLE
    assert "P4" in verdict.reason and "<" in verdict.reason          # the ranking is reported


def test_equal_time_verdict_held_and_failed_on_synthetic_runs():
    good = dict(fid={1: 40.0, 2: 41.0, 4: 42.0}, recall={1: 0.5, 2: 0.45, 4: 0.4})
    assert R.equal_time_verdict(**good).word == "held"
    bad = dict(fid={1: 40.0, 4: 60.0}, recall={1: 0.5, 4: 0.3})
    assert R.equal_time_verdict(**bad).word == "did not hold"
    assert R.equal_time_verdict({}, {}).word == R.NOT_TESTABLE


def test_committed_full_run_verdicts():
    wv = R.weighting_table().values
    noise = wv["noise"]["FID"]
    assert R.weighting_verdict(wv["fid"], wv["recall"], noise).word == "held"
    sv = R.split_table().values
    assert R.split_verdict(sv["fid"], sv["recall"], noise).word == "did not hold"
    lv = R.learned_variance_table().values
    names = [n for n, _ in R.LEARNED_VARIANCE_RUNS]
    assert R.learned_variance_verdict(lv["fid"][names[0]], lv["fid"][names[3]], lv["recall"], lv["fid"],
                                      noise, clipped=lv["fid"][names[1]]).word == "did not hold"
    rv = R.respacing_table().values
    assert R.respacing_verdict(rv["fid"], rv["recall"]).word == "held"


def test_verdicts_on_synthetic_inputs_go_both_ways():
    rec = {"a": 0.3, "b": 0.3}
    assert R.weighting_verdict({"sqrt_snr": 50.0, "b": 60.0}, {"sqrt_snr": 0.3, "b": 0.3}, 2.0).word == "held"
    assert R.weighting_verdict({"sqrt_snr": 60.0, "b": 50.0}, {"sqrt_snr": 0.3, "b": 0.3}, 2.0).word == "did not hold"
    assert R.weighting_verdict({"sqrt_snr": 300.0, "b": 290.0}, {"sqrt_snr": 0.0, "b": 0.01}, 2.0).word \
        == R.NOT_TESTABLE
    assert R.split_verdict({0: (50.0, 60.0), 1: (51.0, 61.0)}, {0: (0.3, 0.3), 1: (0.3, 0.3)}, 2.0).word == "held"
    assert R.split_verdict({0: (50.0, 60.0), 1: (62.0, 61.0)}, {0: (0.3, 0.3), 1: (0.3, 0.3)}, 2.0).word \
        == "inconclusive"
    noise = dict(FID=2.0, precision=0.02, recall=0.02)
    f, p, r = {1.0: 60.0, 1.5: 50.0}, {1.0: 0.4, 3.0: 0.6}, {1.0: 0.4, 1.5: 0.35, 3.0: 0.2}
    assert R.guidance_verdict(f, p, r, noise).word == "held"
    assert R.guidance_verdict({1.0: 60.0, 1.5: 61.0}, {1.0: 0.4, 3.0: 0.4}, r, noise).word == "did not hold"
    assert R.fidelity_verdict({1.0: 0.5, 3.0: 0.8}, n=100).word == "held"
    assert R.fidelity_verdict({1.0: 0.5, 3.0: 0.45}, n=100).word == "did not hold"
    assert R.fidelity_verdict({1.0: 0.1, 3.0: 0.1}, n=10).word == R.NOT_TESTABLE
    assert R.rms_verdict({25: 0.05, 250: 0.0}).word == "held"
    assert R.rms_verdict({25: 0.3, 250: 0.0}).word == "did not hold"
    assert R.cost_verdict({"FLOPs": 1.0, "time": 1.1}).word == "held"
    assert R.cost_verdict({"FLOPs": 1.0, "time": 2.0}).word == "partly"
    assert R.cost_verdict({"FLOPs": 3.0, "time": 2.0}).word == "did not hold"
    assert R.respacing_verdict({25: 90.0, 250: 60.0}, {25: 0.3, 250: 0.3}).word == "did not hold"
    assert R.learned_variance_verdict(50.0, 60.0, rec, {"a": 50.0, "b": 60.0}, 2.0).word == "held"
    assert R.ranking_only_verdict({"a": 1.0, "b": 0.5}, "x0-MSE").reason.endswith("b 0.5 < a 1")


def test_claims_table_shows_the_rule_and_the_verdict():
    v = R.Verdict("held", "why", "rule with 0.1")
    t = R.claims_table([R.Claim("a | b", "m", v)])
    _one_cell_per_column(t)
    assert t.rows[0][2] == "rule with 0.1" and t.rows[0][3] == "**held**: why"


def test_glue_values_makes_numpy_scalars_plain(monkeypatch):
    np = pytest.importorskip("numpy")
    seen = {}
    import myst_nb
    monkeypatch.setattr(myst_nb, "glue", lambda name, v, display=True: seen.update({name: (v, display)}))
    R.glue_values(a=np.float64(1.5), b=np.int64(3), c="held")
    assert seen == {"a": (1.5, False), "b": (3, False), "c": ("held", False)}
    assert type(seen["a"][0]) is float and type(seen["b"][0]) is int


# --- the notebooks as stored ---------------------------------------------------------------------
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_code_lines_fit_the_page(path):
    nb = nbformat.read(path, as_version=4)
    long = [(i, len(line), line) for i, c in enumerate(nb.cells) if c.cell_type == "code"
            for line in c.source.splitlines() if len(line) > MAX_LINE]
    assert not long, f"code lines over {MAX_LINE} characters: {long[:5]}"


def _texts(output) -> list[tuple[str, str]]:
    """(kind, text) of every textual part of an output."""
    if output["output_type"] == "stream":
        return [("stream", output["text"])]
    if output["output_type"] == "error":
        return [("error", "\n".join(output.get("traceback", [])))]
    out = []
    for mime, data in output.get("data", {}).items():
        if isinstance(data, str) and (mime.startswith("text/") or mime.endswith("text/plain")):
            out.append((mime, data))
    return out


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_outputs_have_no_json_dumps_or_machine_paths(path):
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            for kind, text in _texts(output):
                if kind != "text/html":          # listings and players may hold `{"` in code
                    assert '{"' not in text and "{'" not in text, f"cell {i}: a dict or JSON in {kind}: {text[:200]}"
                bare = BASE64.sub("", text)
                assert not ABSOLUTE.search(bare), f"cell {i}: absolute path in {kind}: " \
                                                  f"{ABSOLUTE.search(bare).group(0)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_glued_name_the_prose_quotes_is_in_the_outputs(path):
    nb = nbformat.read(path, as_version=4)
    quoted = {m.group(1).split(":")[0] for c in nb.cells if c.cell_type == "markdown"
              for m in re.finditer(r"\{glue(?::text)?\}`([^`]+)`", c.source)}
    glued = {o["metadata"]["scrapbook"]["name"] for c in nb.cells for o in c.get("outputs", [])
             if "scrapbook" in o.get("metadata", {})}
    assert quoted <= glued, f"quoted but never glued (execute the notebook): {sorted(quoted - glued)}"


def test_chapter3_opens_and_closes_as_the_book_asks():
    nb = nbformat.read(NOTEBOOKS[0], as_version=4)
    first, last = nb.cells[0].source, nb.cells[-1].source
    assert "What you'll learn" in first and "The paper's claim" in first
    assert ":::{admonition} Exercise" in last and ":class: dropdown" in last
    tags = [c.metadata.get("tags", []) for c in nb.cells if c.cell_type == "code"]
    assert ["parameters"] in tags and sum("hide-input" in t for t in tags) >= 10
    claims = next(c for c in nb.cells if "claims_table(" in c.source)
    assert "hide-input" in claims.metadata.get("tags", [])
    assert "not testable at this scale" in json.dumps(claims.get("outputs", [])) or not claims.get("outputs")
