"""Papermill smoke runs of the experiment notebooks: train → checkpoint → evaluate → results JSON,
and a bad parameter failing with a message that names it."""
import json
from pathlib import Path

import pytest

papermill = pytest.importorskip("papermill")

ROOT = Path(__file__).resolve().parents[1]
EXP = ROOT / "notebooks" / "experiments"
pytestmark = [pytest.mark.notebooks, pytest.mark.slow]


def _run(name, out, cwd, **params):
    return papermill.execute_notebook(str(EXP / name), str(out), parameters=params, cwd=str(cwd),
                                      kernel_name="python3", progress_bar=False)


def test_train_then_evaluate(tmp_path):
    run = tmp_path / "run"
    _run("train.ipynb", tmp_path / "train.out.ipynb", tmp_path, method="vp", preset="tiny",
         dataset="digits", resolution=8, batch_size=16, steps=6, sample_every=3, ckpt_every=3,
         out_dir=str(run), extra={"log_every": 2, "sample_n": 4, "sample_steps": 4, "warmup_steps": 2})
    assert (run / "latest.pt").is_file() and (run / "ckpt-0000006.pt").is_file()
    records = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records][-1] == 6
    assert sorted(p.name for p in (run / "samples").glob("*.png"))[-1] == "0000006.png"

    out_json = tmp_path / "eval.json"
    _run("evaluate.ipynb", tmp_path / "eval.out.ipynb", tmp_path, checkpoint=str(run / "latest.pt"),
         steps=5, n_samples=12, batch_size=8, n_ref=16, metrics=["fid", "kid", "pr"],
         out_json=str(out_json), out_grid=str(tmp_path / "grid.png"), x0_mse_t=[10, 500], x0_mse_n=8)
    result = json.loads(out_json.read_text())
    assert result["x0_mse_t"] == [10, 500] and result["x0_mse_n"] == 8
    assert 0 < result["x0_mse"][0] < result["x0_mse"][1]       # denoising is harder at more noise
    assert result["n_samples"] == 12 and result["nfe_per_image"] == 5       # DDIM: one call per step
    assert result["FID@12"] > 0 and 0 <= result["precision@12"] <= 1
    assert (tmp_path / "grid.png").is_file()


def test_bad_parameter_names_itself(tmp_path):
    with pytest.raises(papermill.PapermillExecutionError) as info:
        _run("train.ipynb", tmp_path / "bad.ipynb", tmp_path, method="nope", dataset="digits",
             out_dir=str(tmp_path / "run"))
    assert "method" in str(info.value) and "nope" in str(info.value)
    with pytest.raises(papermill.PapermillExecutionError) as info:
        _run("evaluate.ipynb", tmp_path / "bad2.ipynb", tmp_path, checkpoint=str(tmp_path / "missing.pt"))
    assert "checkpoint" in str(info.value) and "missing.pt" in str(info.value)
    with pytest.raises(papermill.PapermillExecutionError) as info:
        _run("train.ipynb", tmp_path / "bad3.ipynb", tmp_path, method="vp", preset="tiny", dataset="digits",
             resolution=8, batch_size=16, steps=2, out_dir=str(tmp_path / "run3"), init_from="missing.pt")
    assert "init_from='missing.pt' does not exist" in str(info.value)
    # the evaluate notebook checks every parameter in its first cell, before sampling
    with pytest.raises(papermill.PapermillExecutionError) as info:
        _run("evaluate.ipynb", tmp_path / "bad4.ipynb", tmp_path, checkpoint=str(tmp_path / "missing.pt"),
             steps=0, out_json=str(tmp_path / "e.json"))
    assert info.value.ename == "ValueError" and info.value.evalue.startswith("steps=0 is invalid")
    assert "\n" not in info.value.evalue and not (tmp_path / "e.json").exists()
