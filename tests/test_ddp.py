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
from pdlib.train import TrainConfig, train

ARGS = dict(method="vp", dataset="digits", preset="tiny", resolution=8, batch_size=16, steps=3,
            class_cond=True, dropout=0.1, n_data=64, lr=2e-3, warmup_steps=0, log_every=1,
            sample_every=0, sample_n=4, sample_steps=2, ckpt_every=0)


@pytest.mark.slow
def test_torchrun_two_processes_match_one_process(tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "pdlib.train", "--out", str(out), "--resume", "never", "--no-progress"]
    for key, value in ARGS.items():
        cmd += [f"--{key}"] if value is True else [f"--{key}", str(value)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1])
    assert summary["step"] == 3

    # only rank 0 wrote: one metrics line per step, one set of checkpoints
    steps = [json.loads(s)["step"] for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
    assert sorted(p.name for p in out.glob("*.pt")) == ["ckpt-0000003.pt", LATEST]

    # The reference runs with one thread, like each rank: with more threads, convolution
    # backward sums in another order and Adam magnifies the ~1e-7 differences.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = train(TrainConfig(**ARGS, grad_accum=2, out_dir=None), progress=False)
    finally:
        torch.set_num_threads(threads)
    ddp = load_checkpoint(out / LATEST)
    ref_model, ref_ema = single.method.state_dict(), single.ema.state_dict()
    for name, value in ddp["model"].items():
        torch.testing.assert_close(value, ref_model[name], rtol=1e-5, atol=1e-6)
    for name, value in ddp["ema"].items():
        torch.testing.assert_close(value, ref_ema[name], rtol=1e-5, atol=1e-6)
    assert abs(summary["loss"] - single.metrics["loss"]) < 1e-5   # the all-reduced loss
    init = train(TrainConfig(**{**ARGS, "steps": 0}, out_dir=None), progress=False).method.state_dict()
    assert max((ref_model[k] - init[k]).abs().max() for k in init) > 1e-3   # the run did train
