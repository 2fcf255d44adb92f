#!/usr/bin/env python
"""Chapter 7's full runs: Relay Diffusion (Teng et al. 2024) on Fashion-MNIST 8→32 against
single-stage EDM at 32×32, trained and evaluated through the papermill experiment notebooks.
Results: results/ch07_full/.

    .venv/bin/python scripts/run_ch07_full.py              # everything (about 100 min on 2 CPU cores)
    .venv/bin/python scripts/run_ch07_full.py --list       # the jobs and whether they are done
    .venv/bin/python scripts/run_ch07_full.py --only stage1  # just these jobs

Training (fp32, batch 64, seed 0, the `small` U-Net, one thread each): `stage1` is EDM at 8×8
(Fashion-MNIST resized to 8×8) for MINUTES1 minutes, then `stage2`, the `relay`
method at 32×32 with up_scale 4 (the blurring process in the DCT of 4×4 blocks, block noise
s_b = 0.15, the release's ImageNet blur σ_B,max = 3) at patch size 2 for MINUTES2; beside them, on
the other core, `edm32`, single-stage EDM at 32×32 with the same network at patch size 2, for
MINUTES1 + MINUTES2. Equal training
compute: both chains train for the same minutes on one core each (run.max_minutes; the step
counts they reach are in their logs).

Evaluation: N_SAMPLES samples (seed 0) against 1,000 training images (FID, KID,
precision/recall), each through notebooks/experiments/evaluate.ipynb. A relay `rA-B` runs A Heun
steps of stage 1 and B steps of stage 2 (from truncation σ 0.9, s_noise 0.2): NFE (2A − 1) +
(2B − 1) against single-stage EDM's 2N − 1 at `edm-sN`. The ablations change one sampling option
of r9-9 (block noise off, s_noise = 0, the truncation σ); `ch04-relay` runs stage 2 over the
32×32 samples of chapter 4's committed EDM model (`ch04-edm`, 18 Heun steps), block-averaged to
8×8, against that model alone (`ch04-s18`).

Jobs are chains (train, then evaluations) run WORKERS at a time; a job whose output exists is
skipped, so an interrupted run continues where it stopped (training resumes from its last
checkpoint). Settings (environment): MINUTES1=10, MINUTES2=45, N_SAMPLES=500, WORKERS=2, MORE=0
(1: also the evaluations in MORE).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import full_runs  # noqa: E402  (scripts/full_runs.py: the shared job runner)

ROOT = Path(__file__).resolve().parent.parent
RUNS, OUT = Path("runs/ch07_full"), Path("results/ch07_full")     # relative to ROOT (the cwd)
MINUTES1 = float(os.environ.get("MINUTES1", 10))
MINUTES2 = float(os.environ.get("MINUTES2", 45))
N_SAMPLES = int(os.environ.get("N_SAMPLES", 500))
WORKERS = int(os.environ.get("WORKERS", 2))
COMMON = dict(dataset="fashion_mnist", preset="small", patch_size=2, batch_size=64, lr=5e-4,
              amp="none", steps=100_000, sample_every=0, ckpt_every=250, seed=0)
TRAIN = {
    "stage1": dict(method="edm", resolution=8, patch_size=1, max_minutes=MINUTES1),
    "stage2": dict(method="relay", resolution=32, up_scale=4, max_minutes=MINUTES2),
    "edm32": dict(method="edm", resolution=32, max_minutes=MINUTES1 + MINUTES2),
}
STAGE1 = str(RUNS / "stage1" / "latest.pt")
CH04 = "results/weights/ch04-edm.safetensors"              # another base model for stage 2
RELAY = {"stage1": STAGE1, "stage1_steps": 9}
# evaluation name -> (checkpoint: a training run or a file, the runs it needs, steps, sample options)
EVALS = {
    "edm-s10": ("edm32", [], 10, {}),                                       # NFE 19
    "edm-s18": ("edm32", [], 18, {}),                                       # NFE 35
    "r5-5": ("stage2", ["stage1"], 5, {"stage1": STAGE1, "stage1_steps": 5}),  # 9 + 9
    "r9-9": ("stage2", ["stage1"], 9, RELAY),                               # 17 + 17
    "r9-9-noblock": ("stage2", ["stage1"], 9, {**RELAY, "s_block": 0.0}),
    "r9-9-ode": ("stage2", ["stage1"], 9, {**RELAY, "s_noise": 0.0}),
    "r9-9-trunc0.5": ("stage2", ["stage1"], 9, {**RELAY, "truncation_sigma": 0.5}),
    "r9-9-trunc1.5": ("stage2", ["stage1"], 9, {**RELAY, "truncation_sigma": 1.5}),
    "ch04-s18": (CH04, [], 18, {}),
    "ch04-relay": ("stage2", [], 9, {"stage1": CH04, "stage1_steps": 18}),
}
MORE = ["r9-9-trunc1.5"]


def train_job(name: str) -> dict:
    return {"kind": "train", "name": name,
            "params": {**COMMON, **TRAIN[name], "out_dir": str(RUNS / name)}}


def eval_job(name: str) -> dict:
    ckpt, needs, steps, options = EVALS[name]
    if ckpt in TRAIN:
        needs, ckpt = [ckpt, *needs], str(RUNS / ckpt / "latest.pt")
    return {"kind": "evaluate", "name": name, "run": needs,
            "params": {"checkpoint": ckpt, "sampler": "heun", "steps": steps,
                       "sample_options": options, "n_samples": N_SAMPLES, "n_ref": 1000,
                       "batch_size": 100, "out_json": str(OUT / f"{name}.json"),
                       "out_grid": str(OUT / f"{name}.png")}}


def chains() -> list[list[dict]]:
    """Two chains that train for the same minutes: stage 1 then stage 2, then half of the
    evaluations; edm32, then the other half (a relay waits for stage 2 if need be)."""
    first = ["edm-s18", "r9-9", "edm-s10", "r5-5", "r9-9-ode", "r9-9-noblock", "ch04-s18",
             "ch04-relay", "r9-9-trunc0.5"]
    assert sorted(first + MORE) == sorted(EVALS)
    order = first + (MORE if os.environ.get("MORE") == "1" else [])
    return [[train_job("stage1"), train_job("stage2")] + [eval_job(e) for e in order[1::2]],
            [train_job("edm32")] + [eval_job(e) for e in order[0::2]]]


def main() -> int:
    os.chdir(ROOT)
    return full_runs.main(__doc__.split("\n\n")[0], chains(), full_runs.done,
                          full_runs.notebook_runner(RUNS, OUT, wait_minutes=180), WORKERS, OUT)


if __name__ == "__main__":
    sys.exit(main())
