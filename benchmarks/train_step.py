"""Speed of one training step of pdlib's U-Net against a public peer (diffusers `UNet2DModel`).

    python benchmarks/train_step.py [--quick] [--out results/benchmarks/train_step.json]

For the U-Net at 32×32 and 64×64 with P = 1, 2, 4, in fp32 and under bf16 autocast (fp16 on CUDA
is left to the user: --precisions), it records parameters, FLOPs per image (forward + backward,
FlopCounterMode), images/s of a full step (forward, MSE loss, backward, AdamW step), the achieved
GFLOP/s and its fraction of this machine's fp32 matmul rate and of its 3×3-convolution rate (both
measured at the start and at the end of the same run; the larger is used, both are stored), and
the peak memory. The peer runs the reference configuration (64×64, P=4-equivalent: it sees the same
space-to-depth input, 48 channels on a 16×16 grid) with the same widths and depths. A short loss
curve, fp32 against bf16 autocast from the same seed, is stored for the chapter to plot.

The `dit` part does the same for pdlib's DiT against diffusers' `DiTTransformer2DModel` at matched
size (`common.BENCH_DIT`: hidden 384, depth 6, 6 heads, P=2, 4×32×32, 10 classes, learn_sigma off).
diffusers' DiT gives every block its own timestep MLP and class table (DiT has one, shared); the
peer's are tied to block 0's so that the parameter counts match exactly (both counts are recorded;
the compute is unchanged: the peer still evaluates its embedding once per block).

Options: --channels-last (U-Net rows, ours and the peer, in torch.channels_last), --compile
(torch.compile every measured forward; the first step, which compiles, is reported as compile_s),
--parts (any of unet, dit, variants, loss_curve), --variants (the `variants` part: the reference
U-Net and the DiT, ours and the peer, eager against channels_last / compile, ratios from this run).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
import torch.nn.functional as F

from common import (BENCH_DIT, BENCH_DIT_BATCH, BENCH_UNET, QUICK_DIT, QUICK_DIT_BATCH, QUICK_UNET, PeakMemory,
                    autocast_ctx, conv_gflops, flops_per_image, make_batch, matmul_gflops, parse_common, start,
                    sync, time_fn, train_step_fn, write_json)
from pdlib.nets import DiT, UNet, count_params, unet_preset
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


def build_peer_dit(cfg: dict, device: torch.device):
    """diffusers DiTTransformer2DModel at the size of `cfg` (a pdlib DiT config), embedders tied; None if missing.

    Returns (peer, untied parameter count). diffusers builds one timestep MLP + class table per block
    (`norm1.emb`); DiT shares one, so blocks 1… reuse block 0's module (the final layer already does).
    """
    try:
        from diffusers import DiTTransformer2DModel
    except ImportError:
        return None, None
    peer = DiTTransformer2DModel(
        num_attention_heads=cfg["num_heads"], attention_head_dim=cfg["hidden_size"] // cfg["num_heads"],
        in_channels=cfg["in_channels"], out_channels=cfg["in_channels"], num_layers=cfg["depth"],
        sample_size=cfg["resolution"], patch_size=cfg["patch_size"], num_embeds_ada_norm=cfg["num_classes"],
        activation_fn="gelu-approximate", norm_type="ada_norm_zero", norm_elementwise_affine=False)
    untied = count_params(peer)
    shared = peer.transformer_blocks[0].norm1.emb
    for block in peer.transformer_blocks[1:]:
        block.norm1.emb = shared
    return peer.to(device), untied


def dit_labels(cfg: dict, batch: int, device: torch.device) -> torch.Tensor:
    """Fixed class labels in [0, num_classes) of a step (both DiTs are class-conditional)."""
    g = torch.Generator(device="cpu").manual_seed(1)
    return torch.randint(cfg["num_classes"], (batch,), generator=g).to(device)


def dit_builders(cfg: dict, labels: torch.Tensor, device: torch.device):
    """(ours, peer): builders of pdlib's DiT and diffusers' DiT for `cfg`, each returning
    (module, forward(x, t)) with the step's class labels (the first x.shape[0] of `labels`)."""
    def ours():
        net = DiT(**cfg).to(device)
        return net, lambda x, t: net(x, t, labels[:x.shape[0]])

    def peer():
        net, _ = build_peer_dit(cfg, device)
        return net, lambda x, t: net(x, t, labels[:x.shape[0]], return_dict=False)[0]

    return ours, peer


def set_fractions(row: dict, rates: dict, conv_rates: dict | None = None) -> dict:
    """The row's achieved GFLOP/s as fractions of the rooflines: fp32 matmul, its precision's matmul and 3×3 conv."""
    prec, gflops = row["precision"], row["achieved_gflops"]
    row["frac_of_fp32_matmul"] = gflops / rates["fp32"]
    if prec != "fp32" and prec in rates:
        row[f"frac_of_{prec}_matmul"] = gflops / rates[prec]
    if conv_rates and prec in conv_rates:
        row[f"frac_of_{prec}_conv3x3"] = gflops / conv_rates[prec]
    return row


def measure_rates(device, precisions, quick: bool) -> tuple[dict, dict]:
    """This machine's rooflines now: n×n×n matmul GFLOP/s and 3×3-conv GFLOP/s, per precision."""
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    wanted = [p for p in dtypes if p == "fp32" or p in precisions]
    mm = {p: matmul_gflops(device, dtypes[p], n=512 if quick else 1024) for p in wanted}
    conv = {p: conv_gflops(device, dtypes[p], batch=8 if quick else 32) for p in wanted}
    return mm, conv


def measure(name: str, build, shape, device, precision, batch, rates, warmup, repeats,
            channels_last: bool = False, compile: bool = False, extra: dict | None = None,
            conv_rates: dict | None = None) -> dict:
    """Params, FLOPs/image, images/s, GFLOP/s, matmul fraction and peak memory of one config.

    channels_last: the net and the input in torch.channels_last. compile: torch.compile the forward
    (dynamo reset first; compile_s = first step − median step; FLOPs counted on the eager forward).
    """
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    with PeakMemory(device) as mem:
        net, forward = build()
        net.to(memory_format=fmt)
        eager = forward
        if compile:
            torch._dynamo.reset()
            forward = torch.compile(forward)
        x, target, t = make_batch((batch,) + shape, device)
        x = x.contiguous(memory_format=fmt)
        step = train_step_fn(forward, net.parameters(), x, target, t, device, precision)
        t0 = time.perf_counter()
        step()                                                   # the first step (compiles under --compile)
        sync(device)
        first_s = time.perf_counter() - t0
        timing = time_fn(step, device, warmup=warmup, repeats=repeats)
    flops = flops_per_image(eager, (batch,) + shape, device)
    ips = batch / timing["median_s"]
    gflops = flops * ips / 1e9
    row = dict(name=name, precision=precision, resolution=shape[-1], batch=batch,
               params=count_params(net), gflop_per_image=flops / 1e9, step_s=timing["median_s"],
               images_per_s=ips, achieved_gflops=gflops, peak_mem_mb=mem.mb, first_step_s=first_s,
               memory_format="channels_last" if channels_last else "contiguous", compiled=compile)
    if compile:
        row["compile_s"] = first_s - timing["median_s"]
    set_fractions(row, rates, conv_rates)                        # provisional: main() redoes it at the end
    row.update(extra or {})
    tag = ("+cl" if channels_last else "") + ("+compile" if compile else "")
    print(f"  {name + tag:36s} {precision:4s} B={batch:3d} {row['params'] / 1e6:6.2f}M "
          f"{row['gflop_per_image']:7.2f} GFLOP/img {ips:8.1f} img/s {gflops:7.1f} GFLOP/s "
          f"({100 * row['frac_of_fp32_matmul']:4.0f}% fp32 mm"
          + (f", {100 * row[f'frac_of_{precision}_conv3x3']:3.0f}% {precision} conv" if conv_rates else "")
          + f") mem {mem.mb if mem.mb is None else round(mem.mb)} MB"
          + (f" compile {row['compile_s']:.0f} s" if compile else ""), flush=True)
    return row


def interleaved_ratio(build_ours, build_peer, shape, device, precision, batch, rounds: int,
                      warmup: int = 2) -> dict:
    """Ours/peer throughput per FLOP with the two steps timed alternately (ours, peer, ours, …):
    each round's ratio sees the same machine state, so drift of a shared machine cancels; the
    median over rounds, with the min and max."""
    a_net, a_fwd = build_ours()
    b_net, b_fwd = build_peer()
    fa = flops_per_image(a_fwd, (batch,) + shape, device)
    fb = flops_per_image(b_fwd, (batch,) + shape, device)
    x, target, t = make_batch((batch,) + shape, device)
    steps = [train_step_fn(f, n.parameters(), x, target, t, device, precision)
             for n, f in ((a_net, a_fwd), (b_net, b_fwd))]
    for _ in range(warmup):
        for st in steps:
            st()
    ratios, img = [], []
    for _ in range(rounds):
        ts = []
        for st in steps:
            sync(device)
            t0 = time.perf_counter()
            st()
            sync(device)
            ts.append(time.perf_counter() - t0)
        ratios.append((fa / ts[0]) / (fb / ts[1]))
        img.append(ts[1] / ts[0])
    return dict(precision=precision, batch=batch, rounds=rounds, per_flop_median=statistics.median(ratios),
                per_flop_min=min(ratios), per_flop_max=max(ratios), images_per_s_median=statistics.median(img),
                gflop_per_image_ours=fa / 1e9, gflop_per_image_peer=fb / 1e9)


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


PARTS = ("unet", "dit", "variants", "loss_curve")
VARIANTS = ("eager", "channels_last", "compile", "channels_last+compile")


def per_flop_targets(ours: list[dict], peer: list[dict], precisions, prefix: str = "") -> dict:
    """Ours/peer ratios of GFLOP/s and images/s per precision (rows of the same run)."""
    out = {}
    for prec in precisions:
        a = next((r for r in ours if r["precision"] == prec), None)
        b = next((r for r in peer if r["precision"] == prec), None)
        if a and b:
            out[f"{prefix}ours_per_flop_vs_peer_{prec}"] = dict(value=a["achieved_gflops"] / b["achieved_gflops"])
            out[f"{prefix}ours_images_per_s_vs_peer_{prec}"] = dict(value=a["images_per_s"] / b["images_per_s"])
    return out


def main() -> None:
    parser = parse_common(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--out", default="results/benchmarks/train_step.json")
    parser.add_argument("--precisions", default=None, help="comma list of fp32,bf16,fp16 (default fp32,bf16)")
    parser.add_argument("--parts", default="unet,dit,loss_curve",
                        help=f"comma list of {','.join(PARTS)} (default unet,dit,loss_curve)")
    parser.add_argument("--channels-last", action="store_true",
                        help="U-Net rows (ours and the peer): net and input in torch.channels_last")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile every measured forward (compile time reported per row)")
    parser.add_argument("--variants", default="eager,channels_last,compile",
                        help=f"the variants part: comma list of {','.join(VARIANTS)}")
    args = parser.parse_args()
    device = start(args)
    t_start = time.perf_counter()
    precisions = (args.precisions or "fp32,bf16").split(",")
    parts = args.parts.split(",")
    if unknown := sorted(set(parts) - set(PARTS)):
        parser.error(f"--parts {unknown} unknown; allowed: {','.join(PARTS)}")
    variants = args.variants.split(",")
    if unknown := sorted(set(variants) - set(VARIANTS)):
        parser.error(f"--variants {unknown} unknown; allowed: {','.join(VARIANTS)}")
    family = QUICK_UNET if args.quick else BENCH_UNET
    dit_cfg, dit_batch = (QUICK_DIT, QUICK_DIT_BATCH) if args.quick else (BENCH_DIT, BENCH_DIT_BATCH)
    warmup, repeats = (1, 3) if args.quick else (2, 5)
    configs = [(32, 1), (32, 2), (64, 4)] if args.quick else [(r, p) for r in (32, 64) for p in (1, 2, 4)]
    ref_res, ref_p, ref_batch = 64, 4, (8 if args.quick else 32)

    # The rooflines, measured now and again at the end: on a shared machine the rate drifts with the
    # load, so the fractions use the larger (less disturbed) of the two; both are recorded.
    rates, conv_rates = measure_rates(device, precisions, args.quick)
    rates_start, conv_rates_start = dict(rates), dict(conv_rates)
    print(f"matmul GFLOP/s: {', '.join(f'{k} {v:.0f}' for k, v in rates.items())}; 3x3 conv (128 ch, 16x16) "
          f"GFLOP/s: {', '.join(f'{k} {v:.0f}' for k, v in conv_rates.items())}", flush=True)
    opts = dict(channels_last=args.channels_last, compile=args.compile, conv_rates=conv_rates)  # of every U-Net row

    def ours(res, p):
        def build():
            net = UNet(in_channels=3, resolution=res, patch_size=p, **family).to(device)
            return net, lambda x, t: net(x, t)
        return build

    grid = ref_res // ref_p
    have_peer = build_peer(family, grid, 3 * ref_p ** 2, device) is not None

    def peer_build():
        peer = build_peer(family, grid, 3 * ref_p ** 2, device)
        return peer, peer_forward(peer, ref_p)

    labels = dit_labels(dit_cfg, max(dit_batch, 2), device)

    dit_build, peer_dit_build = dit_builders(dit_cfg, labels, device)

    dit_shape = (dit_cfg["in_channels"], dit_cfg["resolution"], dit_cfg["resolution"])
    peer_note = None if have_peer else "diffusers is not installed: pip install --no-deps -r requirements-bench.txt"
    if peer_note:
        print("peers skipped:", peer_note)

    # U-Net: ours over resolutions and patch sizes, the peer at the reference configuration.
    rows, peer_rows, targets = [], [], {}
    if "unet" in parts:
        # Per-step FLOP budget = the reference step; other configs shrink the batch to stay near it.
        ref_flops = flops_per_image(ours(ref_res, ref_p)()[1], (2, 3, ref_res, ref_res), device)
        for res, p in configs:
            f = ref_flops if (res, p) == (ref_res, ref_p) else \
                flops_per_image(ours(res, p)()[1], (2, 3, res, res), device)
            batch = max(2, min(ref_batch, math.floor(ref_batch * ref_flops / f)))
            for prec in precisions:
                rows.append(measure(f"pdlib UNet {res}x{res} P={p}", ours(res, p), (3, res, res), device,
                                    prec, batch, rates, warmup, repeats, **opts))
        if have_peer:
            for prec in precisions:
                peer_rows.append(measure(f"diffusers UNet2DModel {ref_res}x{ref_res} P={ref_p}-eq", peer_build,
                                         (3, ref_res, ref_res), device, prec, ref_batch, rates, warmup, repeats,
                                         **opts))

    # DiT: ours against diffusers' DiTTransformer2DModel at the same size, same batch, same run.
    dit = None
    if "dit" in parts:
        n_ours = count_params(DiT(**dit_cfg))
        peer, n_untied = build_peer_dit(dit_cfg, device)
        n_peer = None if peer is None else count_params(peer)
        del peer
        dit = dict(config=dit_cfg, batch=dit_batch, rows=[], peer=[],
                   params=dict(ours=n_ours, peer_tied=n_peer, peer_untied=n_untied,
                               peer_tied_over_ours=None if n_peer is None else n_peer / n_ours,
                               peer_untied_over_ours=None if n_untied is None else n_untied / n_ours))
        print(f"DiT params: ours {n_ours}, diffusers tied {n_peer}, untied {n_untied}", flush=True)
        tag = f"{dit_cfg['resolution']}x{dit_cfg['resolution']}x{dit_cfg['in_channels']} P={dit_cfg['patch_size']}"
        for prec in precisions:
            dit["rows"].append(measure(f"pdlib DiT {tag}", dit_build, dit_shape, device, prec, dit_batch,
                                       rates, warmup, repeats, compile=args.compile, conv_rates=conv_rates))
        if have_peer:
            for prec in precisions:
                dit["peer"].append(measure(f"diffusers DiT2DModel {tag}", peer_dit_build, dit_shape, device,
                                           prec, dit_batch, rates, warmup, repeats, compile=args.compile,
                                           conv_rates=conv_rates))

    # Interleaved ours/peer steps: the per-FLOP ratios that the targets are judged on.
    inter = {}
    rounds = 3 if args.quick else 9
    if have_peer and "unet" in parts:
        inter["unet"] = [interleaved_ratio(ours(ref_res, ref_p), peer_build, (3, ref_res, ref_res), device,
                                           prec, ref_batch, rounds) for prec in precisions]
    if have_peer and "dit" in parts:
        inter["dit"] = [interleaved_ratio(dit_build, peer_dit_build, dit_shape, device, prec, dit_batch, rounds)
                        for prec in precisions]
    for net, rs in inter.items():
        for r in rs:
            print(f"  interleaved {net} {r['precision']}: ours/peer per FLOP median {r['per_flop_median']:.3f} "
                  f"(min {r['per_flop_min']:.3f}, max {r['per_flop_max']:.3f}, {r['rounds']} rounds)", flush=True)

    # Variants: eager against channels_last / torch.compile, the reference nets only, ratios from this run.
    var = None
    if "variants" in parts:
        nets = [("pdlib UNet", ours(ref_res, ref_p), (3, ref_res, ref_res), ref_batch, True)]
        if have_peer:
            nets.append(("diffusers UNet2DModel", peer_build, (3, ref_res, ref_res), ref_batch, True))
        nets.append(("pdlib DiT", dit_build, dit_shape, dit_batch, False))
        if have_peer:
            nets.append(("diffusers DiT2DModel", peer_dit_build, dit_shape, dit_batch, False))
        var = dict(variants=variants, rows=[], ratios={})
        for name, build, shape, batch, conv_net in nets:
            for prec in precisions:
                base = None
                for v in variants:
                    if "channels_last" in v and not conv_net:
                        continue                                 # a transformer: nothing to reorder
                    row = measure(name, build, shape, device, prec, batch, rates, warmup, repeats,
                                  channels_last="channels_last" in v, compile="compile" in v,
                                  extra=dict(variant=v), conv_rates=conv_rates)
                    var["rows"].append(row)
                    base = row if v == "eager" else base
                    if base is not None and v != "eager":
                        var["ratios"][f"{name} {prec} {v} / eager"] = row["images_per_s"] / base["images_per_s"]
        for k, v in var["ratios"].items():
            print(f"  ratio {k}: {v:.3f}")

    # Rooflines again; every fraction from the larger of the two measurements.
    rates_end, conv_rates_end = measure_rates(device, precisions, args.quick)
    rates = {k: max(v, rates_end[k]) for k, v in rates_start.items()}
    conv_rates = {k: max(v, conv_rates_end[k]) for k, v in conv_rates_start.items()}
    print(f"matmul GFLOP/s at the end: {', '.join(f'{k} {v:.0f}' for k, v in rates_end.items())}; 3x3 conv: "
          f"{', '.join(f'{k} {v:.0f}' for k, v in conv_rates_end.items())}", flush=True)
    drift = max(abs(rates_end[k] / rates_start[k] - 1) for k in rates)
    if drift > 0.15:
        print(f"warning: the matmul rate moved by {100 * drift:.0f}% during the run; the machine is not quiet",
              flush=True)
    for row in rows + peer_rows + (dit["rows"] + dit["peer"] if dit else []) + (var["rows"] if var else []):
        set_fractions(row, rates, conv_rates)

    def ref(prec):
        return next((r for r in rows if r["resolution"] == ref_res and f"P={ref_p}" in r["name"]
                     and r["precision"] == prec), None)
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
        targets["frac_of_fp32_conv3x3_reference"] = dict(ours=ref("fp32")["frac_of_fp32_conv3x3"],
                                                        peer=peer32["frac_of_fp32_conv3x3"])
    if dit:
        dit["targets"] = per_flop_targets(dit["rows"], dit["peer"], precisions)
        targets.update({f"dit_{k}": v for k, v in dit["targets"].items()})
    for net, rs in inter.items():                 # the judged targets: interleaved, drift-free
        for r in rs:
            v = r["per_flop_median"]
            targets[f"{net}_ours_per_flop_vs_peer_{r['precision']}_interleaved"] = dict(
                value=v, min=r["per_flop_min"], max=r["per_flop_max"], target=">= 1.0", met=v >= 1.0)

    curves, steps = {}, (15 if args.quick else 60)
    if "loss_curve" in parts:
        curves = {prec: loss_curve(device, prec, steps, args.quick) for prec in precisions}
        print("loss curve (last 10 mean): " + ", ".join(
            f"{k} {sum(v[-10:]) / len(v[-10:]):.4f}" for k, v in curves.items()))

    path = write_json(args.out, dict(
        benchmark="train_step", quick=args.quick, parts=parts,
        options=dict(channels_last=args.channels_last, compile=args.compile), family=family,
        matmul_gflops=rates, conv3x3_gflops=conv_rates,
        rates_measured=dict(matmul_start=rates_start, matmul_end=rates_end, conv3x3_start=conv_rates_start,
                            conv3x3_end=conv_rates_end, note="fractions use the larger of start and end"),
        reference=dict(resolution=ref_res, patch_size=ref_p, batch=ref_batch),
        rows=rows, peer=peer_rows, peer_note=peer_note, targets=targets, dit=dit, variants=var,
        interleaved=inter,
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
