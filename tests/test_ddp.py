"""DistributedDataParallel: a 2-process torchrun (gloo, CPU) run equals one process with the same
global batch. Micro-batch k of a step is the same images with the same noise, σ, label dropout
and dropout masks whichever rank or accumulation round computes it, so world=2/accum=1 and
world=1/accum=2 do the same arithmetic up to the order of the gradient sum."""
import json
import os
import subprocess
import sys

import pytest
import torch

from pdlib.checkpoint import LATEST, load_checkpoint
from pdlib.train import config_from_args, train

# The run, as the CLI's nested flags; the single-process reference parses the very same flags.
FLAGS = ["--method.name", "vp", "--data.dataset", "digits", "--net.preset", "tiny",
         "--data.resolution", "8", "--optim.batch-size", "16", "--run.steps", "3",
         "--data.class-cond", "True", "--net.overrides", "dropout", "0.1", "--data.n-data", "64",
         "--optim.lr", "2e-3", "--optim.warmup-steps", "0", "--run.log-every", "1",
         "--run.sample-every", "0", "--run.sample-n", "4", "--run.sample-steps", "2",
         "--run.ckpt-every", "0"]


@pytest.mark.slow
def test_torchrun_two_processes_match_one_process(tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "pdlib.train", *FLAGS, "--run.out-dir", str(out), "--run.resume", "never",
           "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summaries = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert len(summaries) == 1                                      # rank 0 reports
    summary = summaries[0]
    assert summary["step"] == 3

    # only rank 0 wrote: one metrics line per step, one set of checkpoints
    steps = [json.loads(s)["step"] for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
    assert sorted(p.name for p in out.glob("*.pt")) == ["ckpt-0000003.pt", LATEST]

    cfg, _ = config_from_args(FLAGS)
    assert cfg.net.overrides == {"dropout": 0.1} and cfg.data.class_cond and cfg.method.name == "vp"
    # The reference runs with one thread, like each rank: with more threads, convolution
    # backward sums in another order and Adam magnifies the ~1e-7 differences.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = train(cfg.replace(grad_accum=2, out_dir=None), progress=False)
    finally:
        torch.set_num_threads(threads)
    ddp = load_checkpoint(out / LATEST)
    # the DDP run saved the same config (grad_accum aside: the global batch is what is fixed)
    saved = json.loads(ddp["config"])
    assert saved["optim"] == {**single.config.to_dict()["optim"], "grad_accum": 1}
    assert saved["method"] == single.config.to_dict()["method"]
    ref_model, ref_ema = single.method.state_dict(), single.ema.state_dict()
    for name, value in ddp["model"].items():
        torch.testing.assert_close(value, ref_model[name], rtol=1e-5, atol=1e-6)
    for name, value in ddp["ema"].items():
        torch.testing.assert_close(value, ref_ema[name], rtol=1e-5, atol=1e-6)
    assert abs(summary["loss"] - single.metrics["loss"]) < 1e-5   # the all-reduced loss
    init = train(cfg.replace(steps=0, out_dir=None), progress=False).method.state_dict()
    assert max((ref_model[k] - init[k]).abs().max() for k in init) > 1e-3   # the run did train


@pytest.mark.slow
def test_torchrun_refusal_by_rank_0_stops_every_rank(tmp_path):
    """Rank 0 alone checks the run folder (and takes its lock); when it refuses, the other ranks
    stop too instead of waiting for it forever."""
    out = tmp_path / "taken"
    train(config_from_args([*FLAGS, "--run.out-dir", str(out)])[0], progress=False)
    before = sorted((p.name, p.stat().st_mtime_ns) for p in out.iterdir())
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "pdlib.train", *FLAGS, "--run.out-dir", str(out), "--run.resume", "never",
           "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode != 0
    ours = [ln for ln in proc.stderr.splitlines() if ln.startswith("pdlib.train: error: ")]
    assert any("holds another run" in ln for ln in ours), proc.stderr[-3000:]
    assert any("rank 0 of this run failed" in ln for ln in ours), proc.stderr[-3000:]
    assert sorted((p.name, p.stat().st_mtime_ns) for p in out.iterdir()) == before
