"""What Patch Diffusion's patch sizes cost (Wang et al. 2023): a training step per patch size, and
the expected step under the real_p draw against what its FLOPs predict.

    python benchmarks/patch_diffusion.py [--quick] [--out results/benchmarks/patch_diffusion.json]

The step is the method's own (`pdlib.methods.patch_diffusion`: prepare_batch's crops and coordinate
channels, the EDM loss per image, backward, AdamW), at EQUAL images per step (one crop per image,
max_batch_multiplier = 1), on a U-Net (the benchmarks' family, 64×64 at P = 2) and a DiT
(`common.BENCH_DIT`, 4×32×32 at P = 2); synthetic inputs of the data shape. Per patch size s of the
default set (R/4, R/2, R): FLOPs of a step (forward + backward, FlopCounterMode), images/s and peak
memory, and the FLOPs of the equal-cost batch of (R/s)² crops per image (what training uses).

The claim checked: a step under real_p = 0.5 (sizes drawn with P = 0.2, 0.3, 0.5) costs what its
FLOPs predict, Σ P(s)·F(s) / F(R) (≈ 0.59 when FLOPs are linear in pixels), within 5 %. The
measured ratio comes from one run: steps whose sizes the method draws, interleaved with full-size
reference steps (reference, drawn, reference, drawn, …), each timed; Σ P(s)·median t(s) / median
t(reference). The plain mean over the drawn steps is recorded too (it carries the draw's noise).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from common import (BENCH_DIT, BENCH_UNET, QUICK_DIT, QUICK_UNET, PeakMemory, autocast_ctx, count_flops,
                    parse_common, start, sync, write_json)
from pdlib.config import TrainConfig
from pdlib.methods import build_method
from pdlib.methods.patch_diffusion import patch_probabilities

TARGET = "a real_p = 0.5 step costs <= 1.05x what its FLOPs predict (0.59x a full-size step)"
REAL_PS = (0.0, 0.25, 0.5, 0.75, 1.0)          # the paper's ablation on p (CelebA-64)


def nets(quick: bool) -> dict:
    """The two nets as method configs: (preset, overrides, channels, resolution, batch, class_cond)."""
    unet = {k: v for k, v in (QUICK_UNET if quick else BENCH_UNET).items()}
    dit_src = QUICK_DIT if quick else BENCH_DIT
    dit = {k: dit_src[k] for k in ("patch_size", "hidden_size", "depth", "num_heads")}
    return {
        "unet": dict(preset="small", overrides={**unet, "patch_size": 1 if quick else 2},
                     channels=3, resolution=32 if quick else 64, batch=8 if quick else 16, class_cond=False),
        "dit": dict(preset="DiT-S/2", overrides=dit, channels=dit_src["in_channels"],
                    resolution=dit_src["resolution"], batch=8 if quick else 16, class_cond=True),
    }


def build(spec: dict, device, **method_kw):
    """The Patch Diffusion method of a net spec (equal images per step unless method_kw says)."""
    cfg = TrainConfig.flat(method="patch_diffusion", preset=spec["preset"], overrides=spec["overrides"],
                           dataset="emoji", resolution=spec["resolution"], img_channels=spec["channels"],
                           num_classes=10, class_cond=spec["class_cond"], **method_kw)
    torch.manual_seed(0)
    return build_method(cfg).to(device)


def step_fn(method, images, labels, device, precision: str):
    """One training step at patch side s: prepare_batch, loss per image, backward, AdamW step."""
    opt = torch.optim.AdamW(method.parameters(), lr=1e-4)
    g = torch.Generator(device=device).manual_seed(0)

    def step(s: int, optimize: bool = True):
        batch = method.prepare_batch(images, labels, g, patch_size=s)
        with autocast_ctx(device, precision):
            losses = method.loss(batch, g)
        loss = losses.float().sum() / batch.n_images
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if optimize:
            opt.step()
        return loss
    return step


def timed(step, s: int, device) -> float:
    sync(device)
    t0 = time.perf_counter()
    step(s)
    sync(device)
    return time.perf_counter() - t0


def run_net(name: str, spec: dict, device, precision: str, n_drawn: int, warmup: int, repeats: int,
            real_p: float = 0.5) -> dict:
    """Rows per patch size, the interleaved real_p run, the predicted and measured ratios."""
    method = build(spec, device, real_p=real_p, max_batch_multiplier=1)
    wide = build(spec, device, real_p=real_p)                       # (R/s)² crops per image
    R, B, C = spec["resolution"], spec["batch"], spec["channels"]
    gen = torch.Generator().manual_seed(1)
    images = (torch.rand(B, C, R, R, generator=gen) * 2 - 1).to(device)
    labels = torch.randint(10, (B,), generator=gen).to(device) if spec["class_cond"] else None
    step = step_fn(method, images, labels, device, precision)
    wide_step = step_fn(wide, images, labels, device, precision)
    sizes, probs = method.patch_sizes, method.patch_probs
    print(f"{name}: R={R} batch {B} sizes {sizes} P {tuple(round(p, 3) for p in probs)} "
          f"params {sum(p.numel() for p in method.parameters()) / 1e6:.2f}M", flush=True)

    rows = []
    for s in sizes:
        flops = count_flops(lambda: step(s, optimize=False))
        wide_flops = count_flops(lambda: wide_step(s, optimize=False))
        for _ in range(warmup):
            step(s)
        with PeakMemory(device) as mem:
            times = [timed(step, s, device) for _ in range(repeats)]
        t = statistics.median(times)
        rows.append(dict(patch_size=s, probability=probs[sizes.index(s)], crops_per_image=1,
                         gflop_per_step=flops / 1e9, step_s=t, images_per_s=B / t, peak_mem_mb=mem.mb,
                         multiplier=wide.multiplier(s), gflop_per_step_at_multiplier=wide_flops / 1e9))
        print(f"  s={s:3d} {flops / 1e9:8.3f} GFLOP/step ({wide_flops / 1e9:8.3f} at x{wide.multiplier(s)}) "
              f"{B / t:8.1f} img/s  mem {mem.mb if mem.mb is None else round(mem.mb)} MB", flush=True)
    full = next(r for r in rows if r["patch_size"] == R)
    for r in rows:
        r["flops_vs_full"] = r["gflop_per_step"] / full["gflop_per_step"]
        r["time_vs_full"] = r["step_s"] / full["step_s"]
        r["flops_at_multiplier_vs_full"] = r["gflop_per_step_at_multiplier"] / full["gflop_per_step"]

    # Steps under the real_p draw, interleaved with full-size reference steps, all timed.
    draw = torch.Generator().manual_seed(2)
    drawn = [method.step_patch_size(draw) for _ in range(n_drawn)]
    for s in sorted(set(drawn)):
        step(s)                                                      # warm every size once more
    ref_t, drawn_t = [], {s: [] for s in sizes}
    for s in drawn:
        ref_t.append(timed(step, R, device))
        drawn_t[s].append(timed(step, s, device))
    t_ref = statistics.median(ref_t)
    missing = [s for s in sizes if probs[sizes.index(s)] > 0 and not drawn_t[s]]
    measured = None if missing else sum(p * statistics.median(drawn_t[s]) for s, p in zip(sizes, probs)
                                        if p > 0) / t_ref
    predicted = sum(p * r["flops_vs_full"] for p, r in zip(probs, rows))
    plain = statistics.mean(t for ts in drawn_t.values() for t in ts) / statistics.mean(ref_t)
    counts = {s: len(drawn_t[s]) for s in sizes}
    ratio = None if measured is None else measured / predicted
    print(f"  real_p={real_p}: predicted by FLOPs {predicted:.3f}x a full-size step, measured "
          f"{'n/a' if measured is None else f'{measured:.3f}'}x (mean of the draw {plain:.3f}x; "
          f"{counts} steps per size, {len(ref_t)} references) -> "
          f"{'n/a' if ratio is None else f'{ratio:.3f}'} of the prediction", flush=True)

    # The expected step at other p from the same rows (FLOPs and per-size medians).
    by_p = []
    for p in REAL_PS:
        pr = patch_probabilities(sizes, R, p)
        by_p.append(dict(real_p=p, probabilities=pr,
                         predicted_by_flops=sum(q * r["flops_vs_full"] for q, r in zip(pr, rows)),
                         from_step_times=sum(q * r["time_vs_full"] for q, r in zip(pr, rows))))
    return dict(net=name, preset=spec["preset"], overrides=spec["overrides"], channels=C, resolution=R,
                batch=B, class_cond=spec["class_cond"], real_p=real_p, sizes=sizes, probabilities=probs,
                rows=rows, drawn_sizes=drawn, drawn_counts=counts, reference_step_s=ref_t,
                drawn_step_s={str(s): v for s, v in drawn_t.items()},
                predicted_ratio=predicted, measured_ratio=measured, mean_ratio_of_the_draw=plain,
                measured_over_predicted=ratio, by_real_p=by_p)


def main() -> None:
    parser = parse_common(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--out", default="results/benchmarks/patch_diffusion.json")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--nets", default="unet,dit", help="comma list of unet,dit")
    args = parser.parse_args()
    device = start(args)
    t_start = time.perf_counter()
    specs = nets(args.quick)
    chosen = args.nets.split(",")
    if unknown := sorted(set(chosen) - set(specs)):
        parser.error(f"--nets {unknown} unknown; allowed: {','.join(specs)}")
    n_drawn, warmup, repeats = (30, 1, 3) if args.quick else (120, 2, 7)
    results, targets = [], {}
    for name in chosen:
        r = run_net(name, specs[name], device, args.precision, n_drawn, warmup, repeats)
        results.append(r)
        v = r["measured_over_predicted"]
        targets[f"{name}_real_p_0.5_measured_over_flops_predicted"] = dict(
            value=v, predicted_ratio=r["predicted_ratio"], measured_ratio=r["measured_ratio"],
            target=TARGET, met=None if v is None else v <= 1.05)
    path = write_json(args.out, dict(
        benchmark="patch_diffusion", quick=args.quick, precision=args.precision,
        step="PatchDiffusionMethod.prepare_batch + loss per image + backward + AdamW, equal images "
             "per step (max_batch_multiplier=1); synthetic images of the data shape",
        nets=results, targets=targets, wall_s=time.perf_counter() - t_start), device)
    for k, v in targets.items():
        print(f"target {k}: {v}")
    print(f"wrote {path} in {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
