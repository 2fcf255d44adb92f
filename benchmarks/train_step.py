"""Speed of one training step of pdlib's U-Net against a public peer (diffusers `UNet2DModel`).

    python benchmarks/train_step.py [--quick] [--out results/benchmarks/train_step.json]

For the U-Net at 32×32 and 64×64 with P = 1, 2, 4, in fp32 and under bf16 autocast (fp16 on CUDA
is left to the user: --precisions), it records parameters, FLOPs per image (forward + backward,
FlopCounterMode), images/s of a full step (forward, MSE loss, backward, AdamW step), the achieved
GFLOP/s and its fraction of this machine's fp32 matmul rate measured in the same run, and the peak
memory. The peer runs the reference configuration (64×64, P=4-equivalent: it sees the same
space-to-depth input, 48 channels on a 16×16 grid) with the same widths and depths. A short loss
curve, fp32 against bf16 autocast from the same seed, is stored for the chapter to plot.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F

from common import (BENCH_UNET, QUICK_UNET, PeakMemory, autocast_ctx, flops_per_image, make_batch,
                    matmul_gflops, parse_common, start, time_fn, train_step_fn, write_json)
from pdlib.nets import UNet, count_params, unet_preset
from pdlib.patching import depth_to_space, space_to_depth
from pdlib.precond import SIGMA_DATA


def build_peer(family: dict, grid: int, channels: int, device: torch.device):
    """diffusers UNet2DModel with the family's widths/depths, run on the patched grid; None if missing."""
    try:
        from diffusers import UNet2DModel
    except ImportError:
        return None
    widths = tuple(int(family["model_channels"] * m) for m in family["channel_mult"])
    attn = [grid // 2 ** k in family["attention_resolutions"] for k in range(len(widths))]
    return UNet2DModel(
        sample_size=grid, in_channels=channels, out_channels=channels, block_out_channels=widths,
        layers_per_block=family["num_res_blocks"], attention_head_dim=family["head_channels"],
        norm_num_groups=min(32, widths[0] // 2),
        down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attn),
        up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
    ).to(device)


def peer_forward(peer, patch_size: int):
    """The peer on the same space-to-depth input as our net: x -> s2d -> UNet2DModel -> d2s."""
    def forward(x, t):
        return depth_to_space(peer(space_to_depth(x, patch_size), t, return_dict=False)[0], patch_size)
    return forward


def measure(name: str, build, shape, device, precision, batch, rates, warmup, repeats) -> dict:
    """Params, FLOPs/image, images/s, GFLOP/s, matmul fraction and peak memory of one config."""
    with PeakMemory(device) as mem:
        net, forward = build()
        x, target, t = make_batch((batch,) + shape, device)
        step = train_step_fn(forward, net.parameters(), x, target, t, device, precision)
        timing = time_fn(step, device, warmup=warmup, repeats=repeats)
    flops = flops_per_image(forward, (batch,) + shape, device)
    ips = batch / timing["median_s"]
    gflops = flops * ips / 1e9
    row = dict(name=name, precision=precision, resolution=shape[-1], batch=batch,
               params=count_params(net), gflop_per_image=flops / 1e9, step_s=timing["median_s"],
               images_per_s=ips, achieved_gflops=gflops, frac_of_fp32_matmul=gflops / rates["fp32"],
               peak_mem_mb=mem.mb)
    if precision != "fp32" and precision in rates:
        row[f"frac_of_{precision}_matmul"] = gflops / rates[precision]
    print(f"  {name:28s} {precision:4s} B={batch:3d} {row['params'] / 1e6:6.2f}M "
          f"{row['gflop_per_image']:7.2f} GFLOP/img {ips:8.1f} img/s {gflops:7.1f} GFLOP/s "
          f"({100 * row['frac_of_fp32_matmul']:4.0f}% fp32 mm) mem {mem.mb if mem.mb is None else round(mem.mb)} MB",
          flush=True)
    return row


def loss_curve(device, precision: str, steps: int, quick: bool, seed: int = 0) -> list[float]:
    """EDM denoising loss (Karras et al. 2022, Eq. 2 + Table 1) per step of the `small` preset on digits at 32×32."""
    try:
        from sklearn.datasets import load_digits
        data = torch.tensor(load_digits().images, dtype=torch.float32)[:, None] / 16 * 2 - 1  # (1797,1,8,8)
        data = F.interpolate(data, size=32, mode="bilinear", align_corners=False)
    except ImportError:
        data = torch.randn(1797, 1, 32, 32, generator=torch.Generator().manual_seed(seed)).clamp(-1, 1)
    torch.manual_seed(seed)
    net = unet_preset("tiny" if quick else "small", in_channels=1, resolution=32, patch_size=2).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    sigma_data, losses = SIGMA_DATA, []
    for _ in range(steps):
        x0 = data[torch.randint(len(data), (32,), generator=g)].to(device)
        sigma = (torch.randn(32, 1, 1, 1, generator=g) * 1.2 - 1.2).exp().to(device)
        n = torch.randn(x0.shape, generator=g).to(device) * sigma
        c_skip = sigma_data ** 2 / (sigma ** 2 + sigma_data ** 2)
        c_out = sigma * sigma_data / (sigma ** 2 + sigma_data ** 2).sqrt()
        c_in = 1 / (sigma ** 2 + sigma_data ** 2).sqrt()
        with autocast_ctx(device, precision):
            F_x = net(c_in * (x0 + n), sigma.flatten().log() / 4)
        D_x = c_skip * (x0 + n) + c_out * F_x.float()
        weight = (sigma ** 2 + sigma_data ** 2) / (sigma * sigma_data) ** 2
        loss = (weight * (D_x - x0) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def main() -> None:
    parser = parse_common(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--out", default="results/benchmarks/train_step.json")
    parser.add_argument("--precisions", default=None, help="comma list of fp32,bf16,fp16 (default fp32,bf16)")
    args = parser.parse_args()
    device = start(args)
    t_start = time.perf_counter()
    precisions = (args.precisions or "fp32,bf16").split(",")
    family = QUICK_UNET if args.quick else BENCH_UNET
    warmup, repeats = (1, 3) if args.quick else (2, 5)
    configs = [(32, 1), (32, 2), (64, 4)] if args.quick else [(r, p) for r in (32, 64) for p in (1, 2, 4)]
    ref_res, ref_p, ref_batch = 64, 4, (8 if args.quick else 32)

    rates = {"fp32": matmul_gflops(device, torch.float32, n=512 if args.quick else 1024)}
    for prec, dt in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        if prec in precisions:
            rates[prec] = matmul_gflops(device, dt, n=512 if args.quick else 1024)
    print(f"matmul GFLOP/s: {', '.join(f'{k} {v:.0f}' for k, v in rates.items())}", flush=True)

    def ours(res, p):
        def build():
            net = UNet(in_channels=3, resolution=res, patch_size=p, **family).to(device)
            return net, lambda x, t: net(x, t)
        return build

    # Per-step FLOP budget = the reference step; other configs shrink the batch to stay near it.
    ref_flops = flops_per_image(ours(ref_res, ref_p)()[1], (2, 3, ref_res, ref_res), device)
    rows = []
    for res, p in configs:
        f = ref_flops if (res, p) == (ref_res, ref_p) else \
            flops_per_image(ours(res, p)()[1], (2, 3, res, res), device)
        batch = max(2, min(ref_batch, math.floor(ref_batch * ref_flops / f)))
        for prec in precisions:
            rows.append(measure(f"pdlib UNet {res}x{res} P={p}", ours(res, p), (3, res, res), device,
                                prec, batch, rates, warmup, repeats))

    peer_rows, peer_note = [], None
    grid = ref_res // ref_p
    if build_peer(family, grid, 3 * ref_p ** 2, device) is None:
        peer_note = "diffusers is not installed: pip install --no-deps -r requirements-bench.txt"
        print("peer skipped:", peer_note)
    else:
        def peer_build():
            peer = build_peer(family, grid, 3 * ref_p ** 2, device)
            return peer, peer_forward(peer, ref_p)
        for prec in precisions:
            peer_rows.append(measure(f"diffusers UNet2DModel {ref_res}x{ref_res} P={ref_p}-eq", peer_build,
                                     (3, ref_res, ref_res), device, prec, ref_batch, rates, warmup, repeats))

    def ref(prec):
        return next((r for r in rows if r["resolution"] == ref_res and f"P={ref_p}" in r["name"]
                     and r["precision"] == prec), None)
    targets = {}
    if ref("fp32") and ref("bf16"):
        s = ref("bf16")["images_per_s"] / ref("fp32")["images_per_s"]
        targets["bf16_speedup_over_fp32"] = dict(value=s, target=">= 1.5", met=s >= 1.5)
    if peer_rows and ref("fp32"):
        peer32 = next(r for r in peer_rows if r["precision"] == "fp32")
        q = ref("fp32")["achieved_gflops"] / peer32["achieved_gflops"]
        targets["ours_per_flop_vs_peer_fp32"] = dict(value=q, target=">= 1.0", met=q >= 1.0)
        targets["ours_images_per_s_vs_peer_fp32"] = dict(value=ref("fp32")["images_per_s"] / peer32["images_per_s"])
        targets["frac_of_fp32_matmul_reference"] = dict(ours=ref("fp32")["frac_of_fp32_matmul"],
                                                       peer=peer32["frac_of_fp32_matmul"], target="~0.8")

    steps = 15 if args.quick else 60
    curves = {prec: loss_curve(device, prec, steps, args.quick) for prec in precisions}
    print("loss curve (last 10 mean): " + ", ".join(
        f"{k} {sum(v[-10:]) / len(v[-10:]):.4f}" for k, v in curves.items()))

    path = write_json(args.out, dict(
        benchmark="train_step", quick=args.quick, family=family, matmul_gflops=rates,
        reference=dict(resolution=ref_res, patch_size=ref_p, batch=ref_batch),
        rows=rows, peer=peer_rows, peer_note=peer_note, targets=targets,
        loss_curve=dict(data="sklearn digits, bilinear 8->32, [-1,1]", loss="EDM (P_mean -1.2, P_std 1.2)",
                        net=f"unet_preset({'tiny' if args.quick else 'small'!r}, in_channels=1, patch_size=2)",
                        optimizer="AdamW lr 1e-3", steps=steps, batch=32,
                        seed=0, curves=curves),
        wall_s=time.perf_counter() - t_start), device)
    for k, v in targets.items():
        print(f"target {k}: {v}")
    print(f"wrote {path} in {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
