"""The job runner the full-run scripts share (scripts/run_ch0N_full.py): chains of jobs (train,
then its evaluations) run `workers` at a time; a job whose output exists is skipped; a failed
chain is reported and the others go on; --list and --only. `notebook_runner` runs one job
through the papermill experiment notebooks; a finished training records its provenance
(pdlib.provenance: git state when it started, machine, config, seed, start and end) in its
done.json and in `out`/NAME.provenance.json."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:                 # run as a script: pdlib from this checkout
    sys.path.insert(0, str(ROOT))

from pdlib.provenance import git_state, provenance  # noqa: E402  (after the path above)

# The parameters of notebooks/experiments/train.ipynb; any other TrainConfig field or method
# option of a train job goes through its `extra` dict.
TRAIN_PARAMS = {"method", "preset", "dataset", "resolution", "n_data", "class_cond", "patch_size",
                "prediction", "weighting", "schedule", "batch_size", "lr", "steps", "amp", "seed",
                "sample_every", "ckpt_every", "out_dir", "device", "max_minutes", "init_from",
                "overwrite"}


def training_provenance(folder: Path, job: dict, git: dict, started: float, ended: float,
                        threads: int | None = None) -> dict:
    """The provenance of a finished training job: git (the state when it started), machine (the
    kernel's `threads`), the run's resolved config (its config.json), its seed, start and end
    (Unix times), and the job (name and notebook parameters)."""
    cfg = json.loads((Path(folder) / "config.json").read_text())
    seed = cfg.get("optim", {}).get("seed", cfg.get("seed"))      # sectioned, or an old flat config
    prov = provenance(cfg, seed, started, ended, git=git, threads=threads)
    prov["job"] = dict(name=job["name"], kind=job["kind"], params=job["params"])
    return prov


FID_INF_MIN = 100        # evaluations of at least this many samples also report FID∞ (chapter 8)


def notebook_runner(runs: Path, out: Path, wait_minutes: float = 0) -> Callable[[dict], None]:
    """run(job): a 'train' job (params of TrainConfig.flat) or an 'evaluate' job (params of the
    evaluate notebook, with fid_inf=True unless the job says otherwise or has fewer than
    FID_INF_MIN samples; its `run`, one name or a list, must be trained, or finish training within
    wait_minutes: another chain may be training it) through papermill, one thread, its executed
    notebook and log in runs/NAME.KIND.*; a finished training copies its config and metrics log
    into `out`, writes its provenance (training_provenance) to `out`/NAME.provenance.json, and
    done.json (seconds, provenance) into its run folder."""
    def run(job: dict) -> None:
        name, kind = job["name"], job["kind"]
        notebook = ROOT / "notebooks" / "experiments" / f"{kind}.ipynb"
        log_base = runs / f"{name}.{kind}"
        log_base.parent.mkdir(parents=True, exist_ok=True)
        out.mkdir(parents=True, exist_ok=True)
        params = dict(job["params"])
        if kind == "train":
            params["extra"] = {k: params.pop(k) for k in list(params) if k not in TRAIN_PARAMS}
        else:
            if params.get("n_samples", 1000) >= FID_INF_MIN:
                params.setdefault("fid_inf", True)    # FID∞ beside FID@N in every full run
            for r in ([job["run"]] if isinstance(job["run"], str) else job["run"]):
                deadline = time.time() + 60 * wait_minutes
                if not (runs / r / "done.json").is_file() and wait_minutes:
                    print(f"[{time.strftime('%H:%M:%S')}] {name} waits for {r}", flush=True)
                while not (runs / r / "done.json").is_file() and time.time() < deadline:
                    time.sleep(20)
                if not (runs / r / "done.json").is_file():
                    raise RuntimeError(f"{name}: its training run {r} has not finished")
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        cmd = [str(ROOT / ".venv" / "bin" / "papermill"), "-k", "python3", "--cwd", str(ROOT),
               str(notebook), f"{log_base}.ipynb", "-y", json.dumps(params)]
        git = git_state(ROOT)                  # the code that runs: its state when the job starts
        t0 = time.time()
        print(f"[{time.strftime('%H:%M:%S')}] start {kind} {name}", flush=True)
        with open(f"{log_base}.log", "w") as log:
            rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT).returncode
        if rc != 0:
            raise RuntimeError(f"{kind} {name} failed (exit {rc}); see {log_base}.log")
        if kind == "train":
            folder, stem, t1 = Path(params["out_dir"]), name.replace('/', '-'), time.time()
            for f in ("config.json", "metrics.jsonl"):
                shutil.copyfile(folder / f, out / f"{stem}.{f}")
            prov = training_provenance(folder, job, git, t0, t1, threads=int(env["OMP_NUM_THREADS"]))
            (out / f"{stem}.provenance.json").write_text(json.dumps(prov, indent=1) + "\n")
            (folder / "done.json").write_text(json.dumps({"seconds": t1 - t0, "provenance": prov},
                                                         indent=1) + "\n")
        print(f"[{time.strftime('%H:%M:%S')}] done  {kind} {name} in {time.time() - t0:.0f} s", flush=True)
    return run


def done(job: dict) -> bool:
    """Whether a job's output exists: a training's done.json, an evaluation's out_json."""
    if job["kind"] == "train":
        return (Path(job["params"]["out_dir"]) / "done.json").is_file()
    return Path(job["params"]["out_json"]).is_file()


_JOB_LOCKS: defaultdict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)


def run_chain(chain: list[dict], done: Callable, run: Callable) -> str | None:
    """Run a chain's jobs in order, skipping those done. A job that is in two chains (a training
    that several evaluations need) runs once: the second chain waits for the first to finish it,
    then finds it done."""
    try:
        for job in chain:
            with _JOB_LOCKS[(job["kind"], job["name"])]:
                if not done(job):
                    run(job)
    except Exception as e:                                   # report, let the other chains go on
        print(f"FAILED: {e}", flush=True)
        return str(e)
    return None


def main(description: str, chains: list[list[dict]], done: Callable, run: Callable,
         workers: int, out) -> int:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--list", action="store_true", help="list the jobs and whether each is done")
    p.add_argument("--only", nargs="+", metavar="NAME",
                   help="run only these jobs (an evaluation's training run must be done)")
    args = p.parse_args()
    cs = chains
    if args.only:
        unknown = set(args.only) - {j["name"] for c in cs for j in c}
        if unknown:
            p.error(f"--only {sorted(unknown)}: no such job; see --list")
        cs = [c for c in ([j for j in c if j["name"] in args.only] for c in cs) if c]
    if args.list:
        for c in cs:
            for j in c:
                print(f"{'done' if done(j) else 'todo'}  {j['kind']:<8} {j['name']}")
        return 0
    with ThreadPoolExecutor(workers) as pool:
        errors = [e for e in pool.map(lambda c: run_chain(c, done, run), cs) if e]
    print(f"{len(errors)} chain(s) failed" if errors else f"all done: {out}")
    return 1 if errors else 0
