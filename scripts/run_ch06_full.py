#!/usr/bin/env python
"""Chapter 6's full runs: Fixed Point Diffusion Models (Bai & Melas-Kyriazi 2024) against DiT at
equal training compute, then sampled at limited compute, with and without solution reuse and
iteration reallocation; trained and evaluated through the papermill experiment notebooks.
Results: results/ch06_full/.

    .venv/bin/python scripts/run_ch06_full.py              # everything (about 40 min on 2 CPU cores)
    .venv/bin/python scripts/run_ch06_full.py --list       # the jobs and whether they are done
    .venv/bin/python scripts/run_ch06_full.py --only dit   # just these jobs

Training: class-conditional Fashion-MNIST 32×32 (label dropout 0.1), v-prediction on the linear
schedule rescaled to zero terminal SNR (the release's objective), batch 64, fp32, one thread. `dit`
is the `dit-small` DiT (6 blocks of width 128) at patch size 4 (the `vp` method); `fpdm` is
`fpdm-small` at the same width and patch size (1 pre block, the implicit block, 1 post block; the
`fpdm` method), trained with k1 ~ U{0..K1}, k2 ~ U{1..K2} iterations per batch. Equal training
compute: the two train at the same time, each for MINUTES minutes of training (run.max_minutes),
so each gets the same share of this CPU (the step counts they reach are in their logs).
Evaluation: N_SAMPLES EMA samples (seed 0, no guidance) by DDIM against 1,000 training images
(FID, KID, precision/recall). The sampling compute of one image is counted in block evaluations:
a DiT step is 6, an FPDM step 2 + its iterations (`EVALS` below: steps, iterations, reuse,
reallocation of a budget of steps × iterations).

Jobs are chains (train, then its evaluations) run WORKERS at a time, one thread each; a job whose
output exists is skipped, so an interrupted run continues where it stopped (training resumes from
its last checkpoint). Settings (environment): MINUTES=22, N_SAMPLES=500, K1=2, K2=2, WORKERS=2,
MORE=0 (1: also the evaluations in MORE).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import full_runs  # noqa: E402  (scripts/full_runs.py: the shared job runner)

ROOT = Path(__file__).resolve().parent.parent
RUNS, OUT = Path("runs/ch06_full"), Path("results/ch06_full")     # relative to ROOT (the cwd)
MINUTES = float(os.environ.get("MINUTES", 22))
N_SAMPLES = int(os.environ.get("N_SAMPLES", 500))
K1, K2 = int(os.environ.get("K1", 2)), int(os.environ.get("K2", 2))
WORKERS = int(os.environ.get("WORKERS", 2))
COMMON = dict(dataset="fashion_mnist", resolution=32, class_cond=True, patch_size=4,
              prediction="v", schedule="linear", zero_snr=True, batch_size=64, lr=5e-4,
              amp="none", sample_every=0, steps=20000, ckpt_every=250, max_minutes=MINUTES, seed=0)
TRAIN = {
    "dit": dict(method="vp", preset="dit-small"),
    "fpdm": dict(method="fpdm", preset="fpdm-small", k1_range=[0, K1], k2_range=[1, K2]),
}
# evaluation name -> (run, DDIM steps, FPDM sample options); block evaluations per image in the name's comment
EVALS = {
    "dit-s5": ("dit", 5, None),                                        # 30
    "dit-s10": ("dit", 10, None),                                      # 60
    "dit-s20": ("dit", 20, None),                                      # 120
    "fpdm-s5-i4": ("fpdm", 5, dict(iters=4)),                          # 30
    "fpdm-s10-i4": ("fpdm", 10, dict(iters=4)),                        # 60
    "fpdm-s20-i4": ("fpdm", 20, dict(iters=4)),                        # 120
    "fpdm-s10-i1": ("fpdm", 10, dict(iters=1)),                        # 30
    "fpdm-s10-i1-reuse": ("fpdm", 10, dict(iters=1, reuse=True)),      # 30
    "fpdm-s10-i2": ("fpdm", 10, dict(iters=2)),                        # 40
    "fpdm-s10-i2-reuse": ("fpdm", 10, dict(iters=2, reuse=True)),      # 40
    "fpdm-s10-i2-reuse-inc": ("fpdm", 10, dict(iters=2, reuse=True, reallocation="increasing")),
    "fpdm-s10-i2-reuse-dec": ("fpdm", 10, dict(iters=2, reuse=True, reallocation="decreasing")),
    "fpdm-s10-i4-reuse": ("fpdm", 10, dict(iters=4, reuse=True)),      # 60
}


def train_job(name: str) -> dict:
    return {"kind": "train", "name": name,
            "params": {**COMMON, **TRAIN[name], "out_dir": str(RUNS / name)}}


def eval_job(name: str) -> dict:
    run, steps, options = EVALS[name]
    return {"kind": "evaluate", "name": name, "run": run,
            "params": {"checkpoint": str(RUNS / run / "latest.pt"), "sampler": "ddim",
                       "steps": steps, "sample_options": options or {},
                       "n_samples": N_SAMPLES, "n_ref": 1000, "batch_size": 100,
                       "out_json": str(OUT / f"{name}.json"), "out_grid": str(OUT / f"{name}.png")}}


# The order the evaluations start in: what the claims need first; MORE=1 adds the rest of EVALS
# (the committed results ran without: each evaluation takes about 3 minutes of one thread).
ORDER = ["dit-s5", "fpdm-s5-i4", "dit-s20", "fpdm-s20-i4", "fpdm-s10-i1", "fpdm-s10-i1-reuse",
         "fpdm-s10-i2-reuse", "fpdm-s10-i2-reuse-inc"]
MORE = ["dit-s10", "fpdm-s10-i4", "fpdm-s10-i2-reuse-dec", "fpdm-s10-i2", "fpdm-s10-i4-reuse"]
assert sorted(ORDER + MORE) == sorted(EVALS)
if os.environ.get("MORE") == "1":
    ORDER += MORE


def chains() -> list[list[dict]]:
    """Two chains, one per training run: each trains, then takes every second evaluation of
    ORDER (both trainings end together, after the same minutes)."""
    return [[train_job("dit")] + [eval_job(e) for e in ORDER[0::2]],
            [train_job("fpdm")] + [eval_job(e) for e in ORDER[1::2]]]


def main() -> int:
    os.chdir(ROOT)
    return full_runs.main(__doc__.split("\n\n")[0], chains(), full_runs.done,
                          full_runs.notebook_runner(RUNS, OUT), WORKERS, OUT)


if __name__ == "__main__":
    sys.exit(main())
