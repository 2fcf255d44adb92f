#!/usr/bin/env python
"""Chapter 5's full runs: patch-by-patch generation (Arakawa et al. 2023) against the untiled
network, 2×2 and 4×4 grids, with and without Global Content Conditioning and position, one tile
per image, the release's loss, and a second seed; trained and evaluated through the papermill
experiment notebooks. Results: results/ch05_full/.

    .venv/bin/python scripts/run_ch05_full.py              # everything (about 100 min on 2 CPU cores)
    .venv/bin/python scripts/run_ch05_full.py --list       # the jobs and whether they are done
    .venv/bin/python scripts/run_ch05_full.py --only n2-s0 # just these jobs

Every run: the `tiled` method on Fashion-MNIST 32×32 with the U-Net preset `small` at P = 2, batch
64 images, STEPS optimizer steps, bf16 autocast, one thread, a checkpoint every STEPS/4 steps.
EDM's preconditioning and loss (`precond='edm'`) unless the name starts with `vp-`: the release's
ε-prediction on the cosine schedule with an L1 loss. Each step trains on all N² tiles of each of
its 64 images (`tiles_per_image = N²`), so every grid sees the same pixels per step at about the
same cost; `n2-k1-*` trains on one random tile per image (the release's sampling of tiles: a
quarter of the pixels per step, the memory-saving training). N = 1 without position and GCC is
the plain untiled model of the same network.
Every evaluation: N_SAMPLES EMA samples (seed 0), tile by tile (chunk 1), by EDM's Heun sampler
with SAMPLER_STEPS steps (the `vp-` runs: DDIM with VP_SAMPLER_STEPS), against 1,000 training
images: FID, KID, precision/recall, and the seam scores on the 2×2 and 4×4 tile borders
(pdlib.metrics.seam_score: 1 = as smooth as the same lines in real images). The untiled and the
2×2 seed-0 runs are also evaluated at step STEPS/2 (`NAME-k{step}`), and trained on from STEPS to
LONG_STEPS (`NAME-long`, resumed from a copy of the finished run): FID against training steps.

Jobs are chains (train, then its evaluation) run WORKERS at a time, one thread each; a job whose
output exists is skipped, so an interrupted run continues where it stopped (training resumes from
its last checkpoint). Settings (environment): STEPS=2000, N_SAMPLES=500, SAMPLER_STEPS=10,
VP_SAMPLER_STEPS=50, LONG_STEPS=2·STEPS, WORKERS=2.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import full_runs  # noqa: E402  (scripts/full_runs.py: the shared job runner)

ROOT = Path(__file__).resolve().parent.parent
RUNS, OUT = Path("runs/ch05_full"), Path("results/ch05_full")     # relative to ROOT (the cwd)
STEPS = int(os.environ.get("STEPS", 2000))
LONG_STEPS = int(os.environ.get("LONG_STEPS", 2 * STEPS))
N_SAMPLES = int(os.environ.get("N_SAMPLES", 500))
SAMPLER_STEPS = int(os.environ.get("SAMPLER_STEPS", 10))
VP_SAMPLER_STEPS = int(os.environ.get("VP_SAMPLER_STEPS", 50))
WORKERS = int(os.environ.get("WORKERS", 2))
COMMON = dict(method="tiled", preset="small", patch_size=2, dataset="fashion_mnist",
              resolution=32, batch_size=64, amp="bf16", sample_every=0, steps=STEPS,
              ckpt_every=STEPS // 4, precond="edm")

# name -> options; the order is the order they start in (what the claims need most first).
RUNS_OPTIONS = {
    "n1-s0": dict(grid=1, gcc=False, position=False),                  # the untiled network
    "n2-s0": dict(grid=2),                                             # 2×2, GCC and position
    "n2-nogcc-s0": dict(grid=2, gcc=False),
    "n4-s0": dict(grid=4),
    "n1-s1": dict(grid=1, gcc=False, position=False, seed=1),          # the seed-to-seed spread
    "n2-s1": dict(grid=2, seed=1),
    "n2-k1-s0": dict(grid=2, tiles_per_image=1),                       # one tile per image
    "vp-n1-s0": dict(grid=1, gcc=False, position=False, precond="vp"),   # the release's loss
    "vp-n2-s0": dict(grid=2, precond="vp"),
    "n2-nopos-s0": dict(grid=2, position=False),
    "n4-nogcc-s0": dict(grid=4, gcc=False),
    "n2-none-s0": dict(grid=2, gcc=False, position=False),
}
FIRST = 6                         # the runs above before the continued ones start (see chains())


def train_job(name: str, **params) -> dict:
    p = {**COMMON, **params}
    p.setdefault("tiles_per_image", p["grid"] ** 2)
    p.setdefault("seed", 0)
    return {"kind": "train", "name": name, "params": {**p, "out_dir": str(RUNS / name)}}


def eval_job(name: str, run: str, vp: bool, step: int | None = None) -> dict:
    """Evaluate run's checkpoint at `step` (None: its last)."""
    sampler = dict(sampler="ddim", steps=VP_SAMPLER_STEPS) if vp else \
        dict(sampler="heun", steps=SAMPLER_STEPS)
    ckpt = RUNS / run / ("latest.pt" if step is None else f"ckpt-{step:07d}.pt")
    return {"kind": "evaluate", "name": name, "run": run,
            "params": {"checkpoint": str(ckpt), **sampler,
                       "n_samples": N_SAMPLES, "n_ref": 1000, "batch_size": 100,
                       "seam_grids": [2, 4],
                       "out_json": str(OUT / f"{name}.json"), "out_grid": str(OUT / f"{name}.png")}}


CURVES = ("n1-s0", "n2-s0")       # evaluated at an earlier checkpoint, and trained on to LONG_STEPS
CURVE_STEPS = (STEPS // 2,)       # the earlier checkpoints evaluated
LONG = "-long"                    # NAME-long: NAME's run folder copied, then trained on to LONG_STEPS


def chains() -> list[list[dict]]:
    """The first FIRST runs, then the continued ones (NAME-long), then the rest of the runs and
    the earlier checkpoints' evaluations (the order they start in)."""
    runs = [[train_job(name, **kw), eval_job(name, name, kw.get("precond") == "vp")]
            for name, kw in RUNS_OPTIONS.items()]
    long = [[train_job(name + LONG, **RUNS_OPTIONS[name], steps=LONG_STEPS),
             eval_job(name + LONG, name + LONG, False)] for name in CURVES]
    earlier = [[train_job(name, **RUNS_OPTIONS[name])]
               + [eval_job(f"{name}-k{k}", name, False, k) for k in CURVE_STEPS] for name in CURVES]
    return runs[:FIRST] + long + runs[FIRST:FIRST + 3] + earlier + runs[FIRST + 3:]


def continue_from(job: dict) -> None:
    """A NAME-long training starts as a copy of NAME's finished run folder (its checkpoints and
    log), so pdlib.train resumes it exactly from step STEPS to LONG_STEPS."""
    if job["kind"] != "train" or not job["name"].endswith(LONG):
        return
    src, dst = RUNS / job["name"][:-len(LONG)], Path(job["params"]["out_dir"])
    if dst.exists():
        return
    if not (src / "done.json").is_file():
        raise RuntimeError(f"{job['name']}: {src} has not finished; train it first")
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("done.json", ".lock"))


_run = full_runs.notebook_runner(RUNS, OUT)    # one job through the papermill notebooks


def run(job: dict) -> None:
    continue_from(job)
    _run(job)


def main() -> int:
    os.chdir(ROOT)
    return full_runs.main(__doc__.split("\n\n")[0], chains(), full_runs.done, run, WORKERS, OUT)


if __name__ == "__main__":
    sys.exit(main())
