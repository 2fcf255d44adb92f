"""Where the time of a training step goes: torch.profiler self-CPU time by operator category.

    python benchmarks/profile_nets.py [--quick] [--out results/benchmarks/profile.json]
                                      [--nets unet,peer_unet,dit,peer_dit] [--precisions fp32,bf16]
                                      [--channels-last]

For pdlib's U-Net (the reference configuration of train_step.py: 64×64, P=4, `BENCH_UNET`), the
diffusers UNet2DModel peer, pdlib's DiT (`BENCH_DIT`) and diffusers' DiTTransformer2DModel, in fp32
and under bf16 autocast, a full step (forward, MSE, backward, fused AdamW) is profiled and every
operator's self-CPU time is put in one category:

    conv/matmul      convolutions (forward and backward), Linear / mm / bmm outside attention
    norm             GroupNorm, LayerNorm (forward and backward)
    activation       SiLU, GELU (forward and backward)
    attention        scaled_dot_product_attention and everything inside it (forward and backward)
    layout           copies, contiguous, cat/stack, permutes, pixel (un)shuffle
    resample         nearest upsampling, average pooling (forward and backward)
    casts            dtype conversions (`to` / `_to_copy`: autocast's casts of weights and activations)
    elementwise      add, mul, sum, loss, ... (residuals, FiLM, broadcasting reductions of the backward)
    optimizer        everything under Optimizer.step / zero_grad
    autograd         the autograd engine's own nodes (no kernel of their own)
    other            anything not matched (listed in `unmatched`)

Rules, walking from an operator up its parents: anything under the optimizer -> optimizer; a cast
anywhere on the way -> casts; else the OUTERMOST compound operator (a conv, Linear, norm,
activation, attention or resample op) decides, so the fills, sums and copies a convolution's
backward runs internally count as conv/matmul; else the innermost operator with a category.

Also recorded: the step time without the profiler, the achieved GFLOP/s inside the convolutions and
inside the other matmuls (FlopCounterMode FLOPs of those operators / their self-CPU time), next to
this machine's n×n×n matmul rate and 3×3-convolution rate (`common.conv_gflops`) measured in the
same run, which tells how much of the gap to the
matmul rate is the matmul-class kernels themselves and how much the rest of the step.
"""

from __future__ import annotations

import argparse
import collections
import time

import torch
from torch.profiler import ProfilerActivity, profile

from common import (BENCH_DIT, BENCH_UNET, QUICK_DIT, QUICK_UNET, conv_gflops, flop_counter, make_batch,
                    matmul_gflops, parse_common, start, time_fn, train_step_fn, write_json)
from pdlib.nets import UNet
from train_step import build_peer, dit_builders, dit_labels, peer_forward

CATEGORIES = ("conv/matmul", "norm", "activation", "attention", "layout", "resample", "casts",
              "elementwise", "optimizer", "autograd", "other")

CONV = {"conv2d", "convolution", "_convolution", "mkldnn_convolution", "convolution_backward",
        "thnn_conv2d", "_slow_conv2d_forward", "_slow_conv2d_backward", "mkldnn_convolution_backward",
        "_mkldnn_convolution"}
MATMUL = {"linear", "addmm", "mm", "bmm", "matmul", "baddbmm", "addbmm", "mkldnn_linear", "_addmm_activation",
          "mv", "dot"}
NORM = {"group_norm", "native_group_norm", "native_group_norm_backward", "layer_norm", "native_layer_norm",
        "native_layer_norm_backward", "batch_norm"}
ACTIVATION = {"silu", "silu_", "silu_backward", "gelu", "gelu_", "gelu_backward"}
ATTENTION_PREFIX = ("scaled_dot_product", "_scaled_dot_product", "_flash_attention", "_efficient_attention")
RESAMPLE = {"upsample_nearest2d", "upsample_nearest2d_backward", "avg_pool2d", "avg_pool2d_backward",
            "_upsample_nearest_exact2d", "_upsample_nearest_exact2d_backward", "interpolate"}
CASTS = {"to", "_to_copy", "type_as"}
LAYOUT = {"copy_", "clone", "contiguous", "cat", "stack", "permute", "transpose", "t", "reshape", "view",
          "_unsafe_view", "as_strided", "expand", "unbind", "chunk", "split", "split_with_sizes", "slice",
          "select", "unsqueeze", "squeeze", "flatten", "pixel_shuffle", "pixel_unshuffle", "narrow",
          "einsum", "unflatten", "_reshape_alias", "view_as", "expand_as", "repeat", "movedim",
          "alias", "detach", "lift_fresh", "numpy_T", "constant_pad_nd", "pad"}
ELEMENTWISE = {"add", "add_", "mul", "mul_", "sub", "sub_", "div", "div_", "neg", "exp", "cos", "sin",
               "rsub", "pow", "sum", "mean", "fill_", "zero_", "zeros", "zeros_like", "ones_like", "full",
               "full_like", "where", "mse_loss", "mse_loss_backward", "clamp", "sqrt", "rsqrt", "addcmul",
               "addcmul_", "addcdiv", "lerp_", "embedding", "embedding_backward", "embedding_dense_backward",
               "index_select", "lt", "gt", "eq", "ne", "rand", "randint", "arange", "cumsum", "exp_",
               "reciprocal", "abs", "log", "masked_fill", "all", "any", "scatter_add_", "index_add_",
               "_foreach_add_", "_foreach_mul_", "fmod", "floor_divide", "bitwise_not", "logical_not",
               "new_zeros", "new_empty_strided", "scalar_tensor", "item", "_local_scalar_dense", "sort",
               "_softmax", "softmax"}
ALLOC = {"empty", "empty_strided", "empty_like", "resize_", "new_empty", "set_", "record_stream"}


def _op(name: str) -> str:
    return name[6:] if name.startswith("aten::") else name


def _compound(op: str) -> str | None:
    if op in CONV or op in MATMUL:
        return "conv/matmul"
    if op in NORM:
        return "norm"
    if op in ACTIVATION:
        return "activation"
    if op.startswith(ATTENTION_PREFIX):
        return "attention"
    if op in RESAMPLE:
        return "resample"
    return None


def categorize(chain: list[str], fwd_chain: list[str] | None = None) -> tuple[str, bool]:
    """Category of an event given the names from itself up to the root; (category, matched by a rule).

    fwd_chain: for an operator of the backward pass, the chain of the forward operator that recorded
    its autograd node (same sequence number), so that e.g. the bmm backward of an attention that ran
    on the math path counts as attention, and a convolution's backward as conv/matmul.
    """
    ops = [_op(n) for n in chain]
    if any(n.startswith("Optimizer.") for n in ops):
        return "optimizer", True
    if any(o in CASTS for o in ops):
        return "casts", True
    if _is_node(ops[0]):                                        # the engine's own node, not a kernel
        return "autograd", True
    for c in (fwd_chain or []), ops:
        compound = [k for k in map(_compound, map(_op, c)) if k]
        if compound:
            return compound[-1], True                           # the outermost compound operator
    for o in ops:                                               # innermost operator with a category
        if o in LAYOUT:
            return "layout", True
        if o in ELEMENTWISE:
            return "elementwise", True
        if o in ALLOC:
            continue
        if _is_node(o):
            return "autograd", True
    return "other", False


def _is_node(op: str) -> bool:
    return op.startswith(("autograd::", "torch::autograd::")) or op.endswith(("Backward0", "Backward1"))


def _chain(e) -> list[str]:
    chain = []
    while e is not None:
        chain.append(e.name)
        e = e.cpu_parent
    return chain


def profile_step(step, steps: int) -> tuple[dict, list, dict, float]:
    """Profile `steps` calls of step(); per-category and per-operator self-CPU seconds per step."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        wall = (time.perf_counter() - t0) / steps
    events = list(prof.events())
    chains = {id(e): _chain(e) for e in events}
    backward = {id(e) for e in events if any(n.startswith("autograd::engine::evaluate_function") for n in chains[id(e)])}
    forward_of: dict[int, list[str]] = {}                         # sequence number -> deepest forward chain
    for e in events:
        seq = getattr(e, "sequence_nr", -1)
        if seq is not None and seq >= 0 and id(e) not in backward:
            if len(chains[id(e)]) > len(forward_of.get(seq, ())):
                forward_of[seq] = chains[id(e)]
    node_seq: dict[int, int] = {}                                 # backward event -> its autograd node's sequence number
    for e in events:
        if id(e) in backward:
            p = e
            while p is not None and not p.name.startswith("autograd::engine::evaluate_function"):
                p = p.cpu_parent
            node_seq[id(e)] = getattr(p, "sequence_nr", -1) if p is not None else -1
    cats, ops, unmatched = collections.Counter(), collections.Counter(), collections.Counter()
    for e in events:
        self_s = e.self_cpu_time_total / 1e6 / steps
        if self_s <= 0:
            continue
        fwd = forward_of.get(node_seq.get(id(e), -1)) if id(e) in backward else None
        cat, matched = categorize(chains[id(e)], fwd)
        cats[cat] += self_s
        ops[(e.name, cat)] += self_s
        if not matched:
            unmatched[e.name] += self_s
    return dict(cats), ops.most_common(), dict(unmatched.most_common(10)), wall


def step_flops(forward, x, target, t) -> dict[str, float]:
    """FLOPs of one forward + backward by FlopCounterMode operator (convolution, mm, bmm, sdpa, ...)."""
    counter = flop_counter()
    with counter:
        torch.nn.functional.mse_loss(forward(x, t).float(), target).backward()
    return {str(k).split(".")[-1]: float(v) for k, v in counter.get_flop_counts()["Global"].items()}


def run_net(name, build, shape, batch, device, precision, channels_last, warmup, steps, repeats, rates, conv_rates):
    net, forward = build()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net.to(memory_format=fmt)
    x, target, t = make_batch((batch,) + shape, device)
    x = x.contiguous(memory_format=fmt)
    step = train_step_fn(forward, net.parameters(), x, target, t, device, precision)
    plain = time_fn(step, device, warmup=warmup, repeats=repeats)
    cats, ops, unmatched, wall = profile_step(step, steps)
    flops = step_flops(forward, x, target, t)
    total = sum(cats.values())
    # Kernel time of the convolutions (their own self time) and of the other matmul-class operators;
    # FLOPs: convolutions; Linears (addmm, mm); attention (sdpa, or the bmm of its math path).
    conv_s = sum(s for (op, c), s in ops if c == "conv/matmul" and "conv" in op)
    mm_s = sum(s for (op, c), s in ops if c == "conv/matmul" and _op(op) in MATMUL)
    conv_f = sum(v for k, v in flops.items() if "convolution" in k)
    attn_f = sum(v for k, v in flops.items() if "scaled_dot_product" in k or k == "bmm")
    mm_f = sum(flops.values()) - conv_f - attn_f
    step_gflop = sum(flops.values()) / 1e9
    prate = rates.get(precision, rates["fp32"])
    res = dict(
        net=name, precision=precision, batch=batch, channels_last=channels_last,
        step_s=plain["median_s"], step_s_profiled=wall, self_cpu_s_per_step=total,
        gflop_per_step=step_gflop, achieved_gflops=step_gflop / plain["median_s"],
        frac_of_fp32_matmul=step_gflop / plain["median_s"] / rates["fp32"],
        frac_of_precision_matmul=step_gflop / plain["median_s"] / prate,
        fractions={c: cats.get(c, 0.0) / total for c in CATEGORIES},
        seconds={c: cats.get(c, 0.0) for c in CATEGORIES},
        conv_gflops_in_kernel=conv_f / 1e9 / conv_s if conv_s else None,
        matmul_gflops_in_kernel=mm_f / 1e9 / mm_s if mm_s else None,
        attention_gflops_in_kernel=(attn_f / 1e9 / cats["attention"]) if attn_f and cats.get("attention") else None,
        conv_in_kernel_frac_of_conv3x3=(conv_f / 1e9 / conv_s / conv_rates[precision]) if conv_s else None,
        flops_by_op={k: v / 1e9 for k, v in flops.items()},
        top_ops=[dict(op=op, category=c, frac=s / total, ms=1e3 * s) for (op, c), s in ops[:25]],
        unmatched={k: v / total for k, v in unmatched.items()},
    )
    f = res["fractions"]
    print(f"  {name:22s} {precision:4s} B={batch:3d} step {plain['median_s']:.3f} s "
          f"({100 * res['frac_of_precision_matmul']:.0f}% {precision} mm)  " +
          " ".join(f"{c.split('/')[0]} {100 * f[c]:.0f}%" for c in CATEGORIES if f[c] >= 0.005), flush=True)
    for key in ("conv_gflops_in_kernel", "matmul_gflops_in_kernel", "attention_gflops_in_kernel"):
        if res[key]:
            print(f"      {key}: {res[key]:.0f} GFLOP/s ({100 * res[key] / prate:.0f}% of the {precision} matmul "
                  f"rate, {100 * res[key] / conv_rates[precision]:.0f}% of the {precision} 3x3 conv rate)")
    return res


def main() -> None:
    parser = parse_common(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--out", default="results/benchmarks/profile.json")
    parser.add_argument("--nets", default="unet,peer_unet,dit,peer_dit")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--channels-last", action="store_true", help="U-Nets in torch.channels_last")
    parser.add_argument("--unet-batch", type=int, default=None, help="default 32 (quick 8), train_step's reference")
    parser.add_argument("--dit-batch", type=int, default=None, help="default 8 (quick 8)")
    args = parser.parse_args()
    device = start(args)
    t_start = time.perf_counter()
    family = QUICK_UNET if args.quick else BENCH_UNET
    dit_cfg = QUICK_DIT if args.quick else BENCH_DIT
    unet_batch = args.unet_batch or (8 if args.quick else 32)
    dit_batch = args.dit_batch or 8
    warmup, steps, repeats = (1, 1, 2) if args.quick else (1, 2, 3)
    rate = matmul_gflops(device, torch.float32, n=512 if args.quick else 1024)
    rate_bf16 = matmul_gflops(device, torch.bfloat16, n=512 if args.quick else 1024)
    conv_rates = dict(fp32=conv_gflops(device, torch.float32, batch=8 if args.quick else 32),
                      bf16=conv_gflops(device, torch.bfloat16, batch=8 if args.quick else 32))
    print(f"matmul GFLOP/s: fp32 {rate:.0f}, bf16 {rate_bf16:.0f}; 3x3 conv (128 ch, 16x16): "
          f"fp32 {conv_rates['fp32']:.0f}, bf16 {conv_rates['bf16']:.0f}", flush=True)

    labels = dit_labels(dit_cfg, dit_batch, device)

    def unet():
        net = UNet(in_channels=3, resolution=64, patch_size=4, **family).to(device)
        return net, lambda x, t: net(x, t)

    def peer_unet():
        peer = build_peer(family, 16, 48, device)
        return peer, peer_forward(peer, 4)

    dit, peer_dit = dit_builders(dit_cfg, labels, device)

    dit_shape = (dit_cfg["in_channels"], dit_cfg["resolution"], dit_cfg["resolution"])
    table = dict(unet=("pdlib UNet", unet, (3, 64, 64), unet_batch, True),
                 peer_unet=("diffusers UNet2DModel", peer_unet, (3, 64, 64), unet_batch, True),
                 dit=("pdlib DiT", dit, dit_shape, dit_batch, False),
                 peer_dit=("diffusers DiT2DModel", peer_dit, dit_shape, dit_batch, False))
    results, skipped = [], []
    for key in args.nets.split(","):
        name, build, shape, batch, conv_net = table[key]
        if key.startswith("peer") and build_peer(family, 16, 48, device) is None:
            skipped.append(key)
            continue
        for prec in args.precisions.split(","):
            results.append(run_net(name, build, shape, batch, device, prec, args.channels_last and conv_net,
                                   warmup, steps, repeats, dict(fp32=rate, bf16=rate_bf16), conv_rates))
    path = write_json(args.out, dict(
        benchmark="profile", quick=args.quick, categories=list(CATEGORIES), matmul_gflops=dict(fp32=rate, bf16=rate_bf16),
        conv3x3_gflops=conv_rates,
        configs=dict(unet=dict(family=family, resolution=64, patch_size=4, batch=unet_batch),
                     dit=dict(config=dit_cfg, batch=dit_batch)),
        note="fractions are of the summed self-CPU time of all profiled operators; *_gflops_in_kernel are "
             "FlopCounterMode FLOPs of those operators over their self-CPU time",
        results=results, skipped=skipped, wall_s=time.perf_counter() - t_start), device)
    print(f"wrote {path} in {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
