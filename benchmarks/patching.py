"""What patching buys (Luhman & Luhman 2022): throughput against P next to the FLOP ratio.

    python benchmarks/patching.py [--quick] [--out results/benchmarks/patching.json] [--precision fp32]

One U-Net family (the same widths and depths; only the patch size P changes) at 64×64 for
P = 1, 2, 4, 8: FLOPs per image, images/s of a training step (forward, MSE, backward, AdamW) and of a
sampling evaluation (forward only), and the fraction of the ideal speed-up (the FLOP ratio) that is
reached (target ≥ 85%). Each P runs at a batch that keeps the FLOPs of a step about equal, so small
grids are not starved. Then the paper's claim: 64×64 at P=4 costs about what 16×16 at P=1 costs
(FLOPs, time, peak memory, same batch).
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from common import (BENCH_UNET, QUICK_UNET, PeakMemory, flops_per_image, forward_fn, make_batch,
                    matmul_gflops, parse_common, start, time_fn, train_step_fn, write_json)
from pdlib.nets import UNet, count_params


def run_config(family, res, P, batch, device, precision, warmup, repeats) -> dict:
    """Params, FLOPs (train and sample), images/s (train and sample) and train peak memory of one net."""
    shape = (batch, 3, res, res)
    with PeakMemory(device) as mem:
        net = UNet(in_channels=3, resolution=res, patch_size=P, **family).to(device)
        x, target, t = make_batch(shape, device)
        step = train_step_fn(net, net.parameters(), x, target, t, device, precision)
        train = time_fn(step, device, warmup=warmup, repeats=repeats)
    net.eval()
    sample = time_fn(forward_fn(net, x, t, device, precision), device, warmup=warmup, repeats=repeats)
    row = dict(resolution=res, patch_size=P, grid=res // P, batch=batch, params=count_params(net),
               train_gflop_per_image=flops_per_image(net, shape, device) / 1e9,
               sample_gflop_per_image=flops_per_image(net, shape, device, backward=False) / 1e9,
               train_images_per_s=batch / train["median_s"], sample_images_per_s=batch / sample["median_s"],
               train_peak_mem_mb=mem.mb)
    print(f"  {res}x{res} P={P} grid {res // P:2d} B={batch:3d} {row['train_gflop_per_image']:7.3f} GFLOP/img "
          f"train {row['train_images_per_s']:8.1f} img/s  sample {row['sample_images_per_s']:8.1f} img/s  "
          f"mem {mem.mb if mem.mb is None else round(mem.mb)} MB", flush=True)
    return row


def main() -> None:
    parser = parse_common(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--out", default="results/benchmarks/patching.json")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    args = parser.parse_args()
    device = start(args)
    t_start = time.perf_counter()
    family = QUICK_UNET if args.quick else BENCH_UNET
    warmup, repeats = (1, 3) if args.quick else (2, 5)
    res, Ps = (32 if args.quick else 64), (1, 2, 4, 8)                # --quick: 32×32 (a smoke check)
    base_batch, max_batch = (4, 64) if args.quick else (4, 256)      # batch at P=1; cap for large P

    rate = matmul_gflops(device, torch.float32, n=512 if args.quick else 1024)
    print(f"fp32 matmul {rate:.0f} GFLOP/s", flush=True)

    def flops(r, p):
        return flops_per_image(UNet(in_channels=3, resolution=r, patch_size=p, **family).to(device),
                               (2, 3, r, r), device)
    f1 = flops(res, 1)
    rows = []
    for P in Ps:
        batch = min(max_batch, max(1, round(base_batch * f1 / flops(res, P))))
        rows.append(run_config(family, res, P, batch, device, args.precision, warmup, repeats))

    r1 = rows[0]
    for r in rows:
        for kind in ("train", "sample"):
            flop_ratio = r1[f"{kind}_gflop_per_image"] / r[f"{kind}_gflop_per_image"]
            speedup = r[f"{kind}_images_per_s"] / r1[f"{kind}_images_per_s"]
            r[f"{kind}_flop_ratio_vs_p1"] = flop_ratio
            r[f"{kind}_speedup_vs_p1"] = speedup
            r[f"{kind}_frac_of_flop_ratio"] = speedup / flop_ratio
        r["train_achieved_gflops"] = r["train_gflop_per_image"] * r["train_images_per_s"]
        r["train_frac_of_fp32_matmul"] = r["train_achieved_gflops"] / rate

    # The paper's claim: 64×64 at P=4 against 16×16 at P=1, at the same batch.
    claim_batch = next(r["batch"] for r in rows if r["patch_size"] == 4)
    p4 = next(r for r in rows if r["patch_size"] == 4)
    low = run_config(family, res // 4, 1, claim_batch, device, args.precision, warmup, repeats)
    claim = dict(
        description=f"{res}x{res} at P=4 costs about what {res // 4}x{res // 4} at P=1 costs "
                    f"(same widths, depths, batch)",
        p4=p4, p1_quarter_resolution=low,
        ratios_p4_over_p1_quarter=dict(
            train_flops=p4["train_gflop_per_image"] / low["train_gflop_per_image"],
            train_time=low["train_images_per_s"] / p4["train_images_per_s"],
            sample_time=low["sample_images_per_s"] / p4["sample_images_per_s"],
            train_peak_mem=(p4["train_peak_mem_mb"] / low["train_peak_mem_mb"]
                            if p4["train_peak_mem_mb"] and low["train_peak_mem_mb"] else None)))

    targets = {f"P={r['patch_size']} {kind}": dict(value=r[f"{kind}_frac_of_flop_ratio"], target=">= 0.85",
                                                   met=r[f"{kind}_frac_of_flop_ratio"] >= 0.85)
               for r in rows[1:] for kind in ("train", "sample")}
    path = write_json(args.out, dict(
        benchmark="patching", quick=args.quick, precision=args.precision, family=family,
        matmul_gflops=dict(fp32=rate), rows=rows, claim=claim, targets=targets,
        wall_s=time.perf_counter() - t_start), device)
    for r in rows:
        print(f"P={r['patch_size']}: FLOP ratio {r['train_flop_ratio_vs_p1']:6.2f}  train speed-up "
              f"{r['train_speedup_vs_p1']:6.2f} ({100 * r['train_frac_of_flop_ratio']:.0f}%)  sample speed-up "
              f"{r['sample_speedup_vs_p1']:6.2f} ({100 * r['sample_frac_of_flop_ratio']:.0f}%)")
    print(f"claim P=4@{res} / P=1@{res // 4}:", {k: (None if v is None else round(v, 3))
                                                for k, v in claim["ratios_p4_over_p1_quarter"].items()})
    print(f"wrote {path} in {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
