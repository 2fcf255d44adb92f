"""The job runner the full-run scripts share (scripts/run_ch03_full.py, run_ch04_full.py): chains of
jobs (train, then its evaluations) run `workers` at a time; a job whose output exists is skipped;
a failed chain is reported and the others go on; --list and --only."""
from __future__ import annotations

import argparse
from concurrent.futures import ThreadPoolExecutor
from typing import Callable


def run_chain(chain: list[dict], done: Callable, run: Callable) -> str | None:
    try:
        for job in chain:
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
