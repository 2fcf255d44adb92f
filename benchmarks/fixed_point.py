"""Fixed Point Diffusion Models (Bai & Melas-Kyriazi 2024) against DiT: parameters, training memory, speed.

    python benchmarks/fixed_point.py [--quick] [--out results/benchmarks/fixed_point.json]
        [--pairs chapter,paper-shaped] [--batch 64] [--repeats 3] [--device cpu] [--threads 1]
        [--precision fp32] [--warmup small] [--malloc fixed] [--in-process]

Each PAIR is a DiT and the FPDM (`pdlib.nets.FixedPointDiT`) of the same width (hidden size, heads,
patch size), both built on 1-channel 32×32 images with 10 classes and P = 4 (synthetic tensors, no
data set). The FPDM is evaluated (sampling) with iters = DiT depth − pre − post implicit-block
iterations, so one sampling step costs as many block evaluations as the DiT's; it trains with the
pair's (k1, k2) (`net.train_iterations`: k1 Picard iterations without gradient, then k2 with
backpropagation through them). The default pairs (`PAIRS`):

- "chapter": dit-small (depth 6) vs fpdm-small at (k1, k2) = (2, 2), the chapter's training maximum;
- "paper-shaped": a DiT of dit-small's width at the release's depth 28 vs fpdm-small at the
  release's maximum (k1, k2) = (10, 12).

Both at batch 64 (--batch sets every pair's batch; on CUDA it can be much larger). --quick swaps the
presets for dit-tiny / fpdm-tiny (width 32) at the same depths and (k1, k2), batch 4, 1 timed repeat.

Per network (a pair's four measurements, DiT and FPDM, train and sample, run one after the other in
the same run, so that its ratios come from one run):

- parameters: `count_params` of the net (built on the meta device in this process; the worker's
  count of the real net is stored too);
- training: one full step (forward, MSE loss to a random target, backward, AdamW step, fused, lr
  1e-4; zero_grad(set_to_none) between forward and backward, as `common.train_step_fn`). Peak memory
  of that step and images/s (batch ÷ the median of `repeats` timed steps after one untimed one);
- sampling: one network evaluation under no_grad with the net in eval mode (for the FPDM, the Picard
  solve with `iters` iterations). Peak memory and images/s, the same way.

Each measurement runs in a FRESH process (this script with a hidden --worker flag), which builds the
net (seed 0), warms up with one full call on ONE image (--warmup small; this also allocates the
gradients and AdamW's two moment buffers), then measures one call on the batch with
`common.measure_peak`, exactly as `benchmarks/tiled_memory.py` does:

- CUDA: torch.cuda.max_memory_allocated after reset_peak_memory_stats, minus the memory allocated
  just before the call ("cuda_max_allocated");
- CPU: the process's high-water mark VmHWM after the call minus the resident memory just before it
  (/proc/self/statm, after gc and malloc_trim), with glibc's mmap threshold fixed at 128 KiB during
  the call ("cpu_peak_rss_minus_baseline"; see common.py and tiled_memory.py for why). Each worker
  checks that the call raised the high-water mark (`peak_raised_by_call`).

The measured peak is what the step adds on top of the state that persists between steps (parameters,
gradients, AdamW moments); that state is counted from the tensors (`persistent_mb`) and
`total_mb` = peak + persistent state is the step's whole footprint. --in-process runs the
measurements in this process instead (resetting VmHWM through /proc/self/clear_refs before each
call): faster, for smoke tests, less exact.

Targets (from the issue), per pair, FPDM ÷ DiT: parameters <= 0.2 and training memory (the step's
measured peak) <= 0.5; the ratio of the whole footprint is judged against the same 0.5 as
"train_memory_with_state". The verdicts are computed from the stored numbers. At the release's
scale the parameters of DiT-XL/2 and FPDM-XL/2 with DIT_PAPER_CONFIG (4×32×32 latents, 1000
classes, learn_sigma) are counted on the meta device (no memory): 674.8M and 86.5M, ratio ≈ 0.128.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from common import autocast_ctx, measure_peak, parse_common, run_worker as _run_worker, start, sync, write_json

# The images both nets of a pair see: 1-channel 32×32 (Fashion-MNIST's shape), 10 classes, P = 4.
NET = dict(patch_size=4, in_channels=1, resolution=32, num_classes=10)
# name -> the DiT preset and its depth, the FPDM preset, the FPDM's training (k1, k2), the batch.
PAIRS: dict[str, dict] = {
    "chapter": dict(dit="dit-small", dit_depth=6, fpdm="fpdm-small", k=(2, 2), batch=64,
                    description="dit-small (depth 6) vs fpdm-small at the chapter's training maximum "
                                "(k1, k2) = (2, 2)"),
    "paper-shaped": dict(dit="dit-small", dit_depth=28, fpdm="fpdm-small", k=(10, 12), batch=64,
                         description="dit-small's width at the release's depth 28 vs fpdm-small at the "
                                     "release's maximum (k1, k2) = (10, 12)"),
}
QUICK_PRESETS = {"dit-small": "dit-tiny", "fpdm-small": "fpdm-tiny"}      # --quick: the same pairs, width 32
FULL = dict(repeats=3)
QUICK = dict(repeats=1, batch=4)
TARGETS = {"params": 0.2, "train_memory": 0.5, "train_memory_with_state": 0.5}   # FPDM ÷ DiT, at most
XL = dict(dit="DiT-XL/2", fpdm="FPDM-XL/2")
LR = 1e-4


# ----------------------------------------------------------------------------------------------
# Pairs.

def make_pair(name: str, dit: str, fpdm: str, dit_depth: int, k: tuple[int, int], batch: int,
              net: dict | None = None, description: str = "") -> dict:
    """The specification of one pair: the DiT `dit` at depth `dit_depth` and the FPDM `fpdm` of the
    same width, both with `net` (default NET); the FPDM samples with dit_depth − pre − post
    iterations and trains at (k1, k2) = k. ValueError if the widths differ or the depth is too small."""
    from pdlib.nets import preset_defaults, preset_family
    net = dict(NET if net is None else net)
    if preset_family(dit) != "dit" or preset_family(fpdm) != "fpdm":
        raise ValueError(f"pair {name!r}: dit={dit!r}, fpdm={fpdm!r}; allowed: a DiT preset and an FPDM preset")
    d, f = {**preset_defaults(dit), **net}, {**preset_defaults(fpdm), **net}
    for key in ("hidden_size", "num_heads", "patch_size"):
        if d.get(key) != f.get(key):
            raise ValueError(f"pair {name!r}: {key} {d.get(key)} (DiT) != {f.get(key)} (FPDM); allowed: "
                             f"a DiT and an FPDM of the same width")
    pre, post = f["pre_depth"], f["post_depth"]
    iters = dit_depth - pre - post
    if iters < 1:
        raise ValueError(f"pair {name!r}: dit_depth={dit_depth}; allowed: > pre + post = {pre + post} "
                         f"(the FPDM samples with depth - pre - post iterations)")
    k1, k2 = k
    if not (k1 >= 0 and k2 >= 1) or batch < 1:
        raise ValueError(f"pair {name!r}: k={k}, batch={batch}; allowed: k1 >= 0, k2 >= 1, batch >= 1")
    return dict(
        name=name, description=description, batch=batch, train_iterations=[k1, k2], eval_iters=iters,
        dit=dict(family="dit", preset=dit, net={**net, "depth": dit_depth}),
        fpdm=dict(family="fpdm", preset=fpdm, net={**net, "iters": iters}, train_iterations=[k1, k2]),
        hidden_size=d["hidden_size"], num_heads=d["num_heads"],
        # DiT-block evaluations per call (the FPDM's implicit block counted once per iteration).
        block_evaluations=dict(
            dit=dict(train_forward=dit_depth, train_with_grad=dit_depth, sample=dit_depth),
            fpdm=dict(train_forward=pre + post + k1 + k2, train_with_grad=pre + post + k2,
                      sample=pre + post + iters)))


def default_pairs(names: list[str], quick: bool = False, batch: int | None = None) -> list[dict]:
    """The named pairs of PAIRS (with --quick's tiny presets and batch), every batch = `batch` if given."""
    out = []
    for name in names:
        p = dict(PAIRS[name])
        if quick:
            p["dit"], p["fpdm"] = QUICK_PRESETS[p["dit"]], QUICK_PRESETS[p["fpdm"]]
            p["batch"] = QUICK["batch"]
            p["description"] += f" (--quick: {p['dit']} / {p['fpdm']})"
        if batch is not None:
            p["batch"] = batch
        out.append(make_pair(name, p["dit"], p["fpdm"], p["dit_depth"], p["k"], p["batch"],
                             description=p["description"]))
    return out


def meta_params(preset: str, **overrides) -> int:
    """count_params of the preset built on the meta device (no memory allocated)."""
    from pdlib.nets import count_params, net_preset
    with torch.device("meta"):
        return count_params(net_preset(preset, **overrides))


def release_scale() -> dict:
    """The parameter counts of DiT-XL/2 and FPDM-XL/2 with DIT_PAPER_CONFIG, and their ratio."""
    from pdlib.nets import DIT_PAPER_CONFIG, DIT_PAPER_PARAMS
    dit, fpdm = meta_params(XL["dit"], **DIT_PAPER_CONFIG), meta_params(XL["fpdm"], **DIT_PAPER_CONFIG)
    ratio = fpdm / dit
    return dict(config=dict(DIT_PAPER_CONFIG), dit=dict(preset=XL["dit"], params=dit),
                fpdm=dict(preset=XL["fpdm"], params=fpdm), ratio=ratio, reduction=1 - ratio,
                dit_paper_params=DIT_PAPER_PARAMS["XL"], expected="FPDM 86.5M / DiT 674.8M ≈ 0.128",
                target=f"<= {TARGETS['params']}", met=bool(ratio <= TARGETS["params"]))


# ----------------------------------------------------------------------------------------------
# The worker: one measurement (one net, train or sample), in a fresh process unless in-process.

def _tensor_mb(tensors) -> float:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor)) / 2 ** 20


def _inputs(n: int, C: int, R: int, out_channels: int, num_classes: int | None, device, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, C, R, R, generator=g)
    target = torch.randn(n, out_channels, R, R, generator=g)
    t = torch.rand(n, generator=g) * 999                       # VP-style noise labels in [0, 999)
    y = torch.randint(num_classes, (n,), generator=g) if num_classes else None
    return tuple(v if v is None else v.to(device) for v in (x, target, t, y))


def worker(spec: dict) -> dict:
    """Build the net, warm up, measure one call's peak memory, then time `repeats` calls."""
    from pdlib.nets import count_params, net_preset
    device = torch.device(spec["device"])
    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    net = net_preset(spec["preset"], **spec["net"]).to(device)
    if spec["family"] == "fpdm":
        net.train_iterations = tuple(spec["train_iterations"])
    n, R = spec["batch"], net.resolution
    shape = (net.in_channels, R, net.out_channels, net.num_classes, device)
    small, full = _inputs(1, *shape, seed=1), _inputs(n, *shape, seed=2)
    opt = None
    if spec["kind"] == "train":
        net.train()
        opt = torch.optim.AdamW(net.parameters(), lr=LR, fused=True)

        def call(batch):
            x, target, t, y = batch
            with autocast_ctx(device, spec["precision"]):
                out = net(x, t, y)
            loss = F.mse_loss(out.float(), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return loss.detach()
    else:
        net.eval()

        def call(batch):
            x, _, t, y = batch
            with torch.no_grad(), autocast_ctx(device, spec["precision"]):
                return net(x, t, y)

    def measured() -> float:
        sync(device)
        t0 = time.perf_counter()
        out = call(full)
        sync(device)
        del out
        return time.perf_counter() - t0

    if spec["warmup"] == "small":
        call(small)
    elif spec["warmup"] == "full":
        call(full)
    gc.collect()

    def persistent() -> float:                                 # what stays between steps
        grads = [p.grad for p in net.parameters()]
        states = [v for s in (opt.state.values() if opt else ()) for v in s.values()]
        return _tensor_mb(list(net.parameters()) + grads + states)

    persistent_mb = persistent()
    info = dict(warmup=spec["warmup"], fresh_process=spec.get("fresh", True))
    # In-process (not a fresh worker): VmHWM is reset before the call, to forget earlier peaks.
    first_s, peak_mb, measurement = measure_peak(measured, device, spec["malloc"],
                                                 reset_hwm=not spec.get("fresh", True))
    info.update(measurement)
    measured()                                                 # untimed: the one warm-up of the timing
    times = [measured() for _ in range(spec["repeats"])]
    t = statistics.median(times)
    return dict(peak_mem_mb=peak_mb, persistent_mb=persistent_mb, total_mb=peak_mb + persistent_mb,
                images_per_s=n / t, s_per_call=t, call_s=times, first_call_s=first_s,
                params=count_params(net), measurement=info)


def run_worker(spec: dict) -> dict:
    """One measurement in a fresh interpreter (this script, --worker); its JSON is the last line."""
    return _run_worker(Path(__file__), spec)


# ----------------------------------------------------------------------------------------------
# The benchmark.

def _target(value: float, bound: float, **numbers) -> dict:
    return dict(value=value, **numbers, target=f"<= {bound}", bound=bound, met=bool(value <= bound))


def run_pair(pair: dict, *, device: torch.device, repeats: int, threads: int, warmup: str = "small",
             malloc: str = "fixed", precision: str = "fp32", fresh: bool = True) -> dict:
    """The four measurements of a pair (DiT and FPDM, train and sample), their ratios and verdicts."""
    n = pair["batch"]
    row = {k: v for k, v in pair.items() if k not in ("dit", "fpdm")}
    for role in ("dit", "fpdm"):
        net = pair[role]
        entry = dict(preset=net["preset"], net=net["net"], params=meta_params(net["preset"], **net["net"]))
        if role == "fpdm":
            entry["train_iterations"] = net["train_iterations"]
        row[role] = entry
    for kind in ("train", "sample"):
        for role in ("dit", "fpdm"):
            spec = dict(pair[role], kind=kind, batch=n, repeats=repeats, device=str(device), threads=threads,
                        warmup=warmup, malloc=malloc, precision=precision, fresh=fresh)
            t0 = time.perf_counter()
            r = run_worker(spec) if fresh else worker(spec)
            row[role][kind] = r
            extra = f" (k1, k2) = {tuple(pair['train_iterations'])}" if role == "fpdm" and kind == "train" else ""
            print(f"  {pair['name']:12s} {role:4s} {kind:6s} batch {n:4d}: peak {r['peak_mem_mb']:9.1f} MB "
                  f"(+ state {r['persistent_mb']:7.1f} MB)  {r['images_per_s']:9.1f} img/s  "
                  f"[{time.perf_counter() - t0:.0f} s]{extra}", flush=True)
    d, f = row["dit"], row["fpdm"]
    row["ratios"] = dict(          # FPDM ÷ DiT
        params=f["params"] / d["params"],
        train_memory=f["train"]["peak_mem_mb"] / d["train"]["peak_mem_mb"],
        train_memory_with_state=f["train"]["total_mb"] / d["train"]["total_mb"],
        sample_memory=f["sample"]["peak_mem_mb"] / d["sample"]["peak_mem_mb"],
        train_images_per_s=f["train"]["images_per_s"] / d["train"]["images_per_s"],
        sample_images_per_s=f["sample"]["images_per_s"] / d["sample"]["images_per_s"])
    q = row["ratios"]
    row["targets"] = dict(
        params=_target(q["params"], TARGETS["params"], fpdm=f["params"], dit=d["params"]),
        train_memory=_target(q["train_memory"], TARGETS["train_memory"],
                             fpdm_mb=f["train"]["peak_mem_mb"], dit_mb=d["train"]["peak_mem_mb"]),
        train_memory_with_state=_target(q["train_memory_with_state"], TARGETS["train_memory_with_state"],
                                        fpdm_mb=f["train"]["total_mb"], dit_mb=d["train"]["total_mb"]))
    return row


def run_benchmark(pairs: list[dict], *, device: torch.device, repeats: int, threads: int, out,
                  warmup: str = "small", malloc: str = "fixed", precision: str = "fp32", fresh: bool = True,
                  quick: bool = False) -> tuple[dict, Path]:
    """Measure every pair, count the release's parameters, write the JSON; returns (document, path)."""
    t_start = time.perf_counter()
    kind = "cuda_max_allocated" if device.type == "cuda" else "cpu_peak_rss_minus_baseline"
    print(f"fixed_point: {len(pairs)} pair(s) {[p['name'] for p in pairs]}, {repeats} timed repeats, "
          f"threads {threads}, {precision}, memory: {kind}{'' if fresh else ' (in-process)'}", flush=True)
    rows = [run_pair(p, device=device, repeats=repeats, threads=threads, warmup=warmup, malloc=malloc,
                     precision=precision, fresh=fresh) for p in pairs]
    xl = release_scale()
    print(f"  release scale: {xl['fpdm']['preset']} {xl['fpdm']['params'] / 1e6:.1f}M / {xl['dit']['preset']} "
          f"{xl['dit']['params'] / 1e6:.1f}M = {xl['ratio']:.3f}", flush=True)
    peaks = [r[role][kind_]["measurement"].get("peak_raised_by_call", True)
             for r in rows for role in ("dit", "fpdm") for kind_ in ("train", "sample")]
    doc = dict(
        benchmark="fixed_point", quick=quick, memory_kind=kind,
        settings=dict(device=str(device), repeats=repeats, threads=threads, precision=precision, warmup=warmup,
                      warmup_input="one image" if warmup == "small" else warmup,
                      malloc=malloc if device.type == "cpu" else None, fresh_workers=fresh, net=dict(NET),
                      optimizer=f"AdamW(lr={LR}, fused=True)", pairs=[p["name"] for p in pairs]),
        train_call="net(x, t, y) in train mode (the FPDM at train_iterations = (k1, k2)), MSE to a random "
                   "target, zero_grad(set_to_none), backward, AdamW step; peak above the state kept "
                   "between steps (parameters, gradients, AdamW moments: persistent_mb)",
        sample_call="net(x, t, y) under no_grad in eval mode (the FPDM: Picard solve with eval_iters "
                    "iterations); persistent_mb = the parameters",
        ratios_are="FPDM ÷ DiT",
        pairs=rows, release_scale=xl,
        targets_met={r["name"]: {k: v["met"] for k, v in r["targets"].items()} for r in rows},
        targets={**{f"{r['name']} {k}": v for r in rows for k, v in r["targets"].items()},
                 "release-scale params": dict(value=xl["ratio"], target=xl["target"], met=xl["met"])},
        all_peaks_raised_by_call=all(peaks), wall_s=time.perf_counter() - t_start)
    return doc, write_json(out, doc, device)


def print_summary(doc: dict) -> None:
    print(f"\n{'pair':12s} {'net':4s} {'params':>10s} | {'train MB':>9s} {'+state':>8s} {'img/s':>8s} "
          f"| {'sample MB':>9s} {'img/s':>8s}")
    for r in doc["pairs"]:
        for role in ("dit", "fpdm"):
            e = r[role]
            print(f"{r['name']:12s} {role:4s} {e['params']:10d} | {e['train']['peak_mem_mb']:9.1f} "
                  f"{e['train']['persistent_mb']:8.1f} {e['train']['images_per_s']:8.1f} | "
                  f"{e['sample']['peak_mem_mb']:9.1f} {e['sample']['images_per_s']:8.1f}")
        q = r["ratios"]
        print(f"{r['name']:12s} ratio FPDM/DiT: " + ", ".join(f"{k} {v:.3f}" for k, v in q.items()))
        for k, v in r["targets"].items():
            print(f"target {r['name']} {k}: {v['value']:.3f} {v['target']} {'met' if v['met'] else 'NOT met'}")
    xl = doc["release_scale"]
    print(f"release scale {xl['fpdm']['preset']} / {xl['dit']['preset']}: {xl['fpdm']['params']:,} / "
          f"{xl['dit']['params']:,} = {xl['ratio']:.4f} {xl['target']} {'met' if xl['met'] else 'NOT met'}")
    if not doc["all_peaks_raised_by_call"]:
        print("warning: some calls did not raise the memory high-water mark (see measurement."
              "peak_raised_by_call): their peak is an upper bound")


def build_parser() -> argparse.ArgumentParser:
    parser = parse_common(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.set_defaults(threads=1, device="cpu")
    parser.add_argument("--out", default="results/benchmarks/fixed_point.json")
    parser.add_argument("--pairs", default=",".join(PAIRS), help=f"comma list of {','.join(PAIRS)}")
    parser.add_argument("--batch", type=int, default=None,
                        help=f"images per call for every pair (default {PAIRS['chapter']['batch']}; "
                             f"--quick {QUICK['batch']}); on CUDA larger batches fit")
    parser.add_argument("--repeats", type=int, default=None,
                        help=f"timed calls per measurement after one untimed (default {FULL['repeats']}; "
                             f"--quick {QUICK['repeats']})")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--warmup", default="small", choices=["small", "full", "none"],
                        help="the workers' warm-up call: one image (default), the measured batch, or none")
    parser.add_argument("--malloc", default="fixed", choices=["fixed", "default"],
                        help="CPU: glibc's mmap threshold fixed at 128 KiB during the measured call "
                             "(default) or glibc's dynamic default")
    parser.add_argument("--in-process", action="store_true",
                        help="measure in this process, not in fresh workers (a faster, less exact smoke run)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.worker is not None:
        print(json.dumps(worker(json.loads(args.worker))), flush=True)
        return
    names = [s for s in args.pairs.split(",") if s]
    if not names or set(names) - set(PAIRS) or len(set(names)) != len(names):
        parser.error(f"--pairs {args.pairs!r}: allowed: a comma list of distinct names from {','.join(PAIRS)}")
    for key in ("batch", "repeats", "threads"):
        if getattr(args, key) is not None and getattr(args, key) < 1:
            parser.error(f"--{key} {getattr(args, key)}: allowed: an integer >= 1")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available here; allowed: cpu")
    if args.device.split(":")[0] not in ("cpu", "cuda"):
        parser.error(f"--device {args.device}: allowed: cpu, cuda or cuda:N")
    if args.precision == "fp16" and not args.device.startswith("cuda"):
        parser.error("--precision fp16: allowed on cuda only (use bf16 on the CPU)")
    device = start(args)
    repeats = args.repeats or (QUICK if args.quick else FULL)["repeats"]
    pairs = default_pairs(names, quick=args.quick, batch=args.batch)
    doc, path = run_benchmark(pairs, device=device, repeats=repeats, threads=args.threads, out=args.out,
                              warmup=args.warmup, malloc=args.malloc, precision=args.precision,
                              fresh=not args.in_process, quick=args.quick)
    print_summary(doc)
    print(f"wrote {path} in {doc['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
