"""Relay Diffusion against single-stage sampling: time and NFE per image of the two-stage pipeline
(EDM at R/s, then the relay stage 2 at R) against single-stage EDM at R, at equal total NFE, and at
equal FID where chapter 7's full runs give it.

    .venv/bin/python benchmarks/relay.py                 # the chapter's nets, ~2 min on one thread
    .venv/bin/python benchmarks/relay.py --quick         # tiny nets, seconds (a smoke check)

Each configuration is the sampling recipe of one evaluation in results/ch07_full/ (`rA-B`: A Heun
steps of stage 1 and B of stage 2; `edm-sN`: N Heun steps at R), on the networks of those runs
(weights drawn at random: the time of a net call does not depend on them). Every configuration is
timed in this process, one after another, as the median of `repeats` calls of `sample()` on a
batch after a warm-up call; NFE are counted calls of each stage's denoiser per image. The time
ratio relay ÷ EDM of a pair is taken from one run. With the full runs' results present, each pair
also carries both FIDs, and the target "time at equal or better FID" is checked on them.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

from common import ROOT, parse_common, start, time_fn, write_json

# configuration -> (stage-1 Heun steps or None for single-stage, steps at R); the pairs compared
CONFIGS = {"edm-s10": (None, 10), "edm-s18": (None, 18), "r5-5": (5, 5), "r9-9": (9, 9)}
PAIRS = [("r5-5", "edm-s10"), ("r9-9", "edm-s18")]
FULL = dict(preset="small", patch_size=2, stage1_patch_size=1, batch=16, repeats=3)
QUICK = dict(preset="tiny", patch_size=2, stage1_patch_size=1, batch=2, repeats=2)
RESULTS = ROOT / "results" / "ch07_full"


def build(method: str, resolution: int, preset: str, patch_size: int, **options):
    """A method on Fashion-MNIST's shape (1 channel, unconditional), weights at random."""
    from pdlib.methods import build_method
    from pdlib.train import TrainConfig
    cfg = TrainConfig.flat(method=method, preset=preset, dataset="fashion_mnist",
                           resolution=resolution, patch_size=patch_size, **options)
    cfg = cfg.replace(data=dataclasses.replace(cfg.data, img_channels=1))
    m = build_method(cfg)
    m.denoiser.eval()
    return m


def measure(name: str, methods: dict, batch: int, repeats: int, device) -> dict:
    """Seconds and NFE per image of one configuration (methods' denoisers are NFECounters)."""
    a, b = CONFIGS[name]
    g = torch.Generator().manual_seed(0)
    m1, m2 = methods["stage1"], methods["relay"]

    def run():
        if a is None:
            return methods["edm"].sample(batch, generator=g, steps=b)
        return m2.sample(batch, generator=g, steps=b, low_res=m1.sample(batch, generator=g, steps=a))

    for m in methods.values():
        m.denoiser.reset()
    run()                                                       # the warm-up call, counted
    high = methods["edm" if a is None else "relay"].denoiser.rows / batch
    low = m1.denoiser.rows / batch
    t = time_fn(run, device, warmup=0, repeats=repeats)
    return dict(name=name, stage1_steps=a, steps=b, nfe_stage1=low, nfe_high=high,
                nfe_total=low + high, seconds_per_image=t["median_s"] / batch, timing=t)


def fid_of(name: str):
    """FID of a configuration from results/ch07_full/NAME.json, or None."""
    path = RESULTS / f"{name}.json"
    if not path.is_file():
        return None
    doc = json.loads(path.read_text())
    keys = [k for k in doc if k.startswith("FID@")]
    return float(doc[keys[0]]) if keys else None


def run_benchmark(opts: dict, *, device, out, quick: bool = False) -> tuple[dict, Path]:
    t0 = time.perf_counter()
    R, s = 32, 4
    methods = dict(
        stage1=build("edm", R // s, opts["preset"], opts["stage1_patch_size"]),
        relay=build("relay", R, opts["preset"], opts["patch_size"], up_scale=s),
        edm=build("edm", R, opts["preset"], opts["patch_size"]))
    from pdlib.denoisers import NFECounter
    for m in methods.values():
        m.to(device)
        m.denoiser = NFECounter(m.denoiser)
    rows = {}
    for name in CONFIGS:
        rows[name] = measure(name, methods, opts["batch"], opts["repeats"], device)
        r = rows[name]
        print(f"  {name:8s} NFE {r['nfe_stage1']:4.0f} + {r['nfe_high']:4.0f}: "
              f"{1e3 * r['seconds_per_image']:7.1f} ms/image", flush=True)
    pairs, targets = [], {}
    for relay, edm in PAIRS:
        a, b = rows[relay], rows[edm]
        ratio = a["seconds_per_image"] / b["seconds_per_image"]
        p = dict(relay=relay, edm=edm, nfe_total=[a["nfe_total"], b["nfe_total"]],
                 time_ratio=ratio, fid=[fid_of(relay), fid_of(edm)])
        targets[f"{relay} ÷ {edm} time at equal total NFE"] = dict(
            value=ratio, target="<= 1", bound=1.0, met=bool(ratio <= 1))
        if None not in p["fid"]:
            better = p["fid"][0] <= p["fid"][1]
            targets[f"{relay} ÷ {edm} time at equal or better FID"] = dict(
                value=ratio, target="<= 1 with FID(relay) <= FID(EDM)", bound=1.0,
                fid_relay=p["fid"][0], fid_edm=p["fid"][1], met=bool(ratio <= 1 and better))
        pairs.append(p)
    doc = dict(benchmark="relay", quick=quick,
               settings=dict(device=str(device), threads=torch.get_num_threads(), **opts,
                             resolution=R, up_scale=s, precision="fp32"),
               configs=rows, pairs=pairs, targets=targets,
               fid_source="results/ch07_full/NAME.json (FID of the trained models; None where absent)",
               wall_s=time.perf_counter() - t0)
    return doc, write_json(out, doc, device)


def main(argv=None) -> None:
    parser = parse_common(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.set_defaults(threads=1, device="cpu")
    parser.add_argument("--out", default="results/benchmarks/relay.json")
    parser.add_argument("--batch", type=int, default=None, help=f"images per call (default {FULL['batch']})")
    parser.add_argument("--repeats", type=int, default=None,
                        help=f"timed calls per configuration (default {FULL['repeats']})")
    args = parser.parse_args(argv)
    for key in ("batch", "repeats", "threads"):
        if getattr(args, key) is not None and getattr(args, key) < 1:
            parser.error(f"--{key} {getattr(args, key)}: allowed: an integer >= 1")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available here; allowed: cpu")
    device = start(args)
    opts = dict(QUICK if args.quick else FULL)
    opts.update({k: getattr(args, k) for k in ("batch", "repeats") if getattr(args, k)})
    doc, path = run_benchmark(opts, device=device, out=args.out, quick=args.quick)
    for k, v in doc["targets"].items():
        print(f"target {k}: {v['value']:.3f} {v['target']} {'met' if v['met'] else 'NOT met'}")
    print(f"wrote {path} in {doc['wall_s']:.0f} s")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
