"""What patch-by-patch generation saves (Arakawa et al. 2023): peak memory and time against the grid.

    python benchmarks/tiled_memory.py [--quick] [--out results/benchmarks/tiled_memory.json]
        [--resolution 128] [--batch 4] [--channels 3] [--repeats 3] [--grids 1,2,4,8] [--device cpu]

The method is `pdlib.methods.tiled` on the `small` U-Net preset at P = 1, at EQUAL output: the same
n images of R×R for every grid N (synthetic tensors, no data set). N = 1 is the untiled network
(gcc=False, position=False); N > 1 is the paper's method (gcc=True, position=True). Per N:

- sampling: one evaluation of the whole-image denoiser (`TiledDenoiser`, under no_grad, the net in
  eval mode) with sequential tiles (chunk = 1: one tile of each image per network run) and with the
  original release's batched layout (chunk = N²: all tiles stacked into one run);
- training: one step of the TileLoss, forward + backward, with tiles_per_image = 1 (the net sees one
  tile per image; the gradients are already allocated by the warm-up step, so what is measured is
  the activations and the backward's transients, not the parameter-sized gradients).

Each measurement runs in a FRESH process (this script with a hidden --worker flag), which first
warms up on a much smaller input (one image of 4N×4N pixels: the smallest the grid and the net
accept) so that library code and kernels are loaded, then measures one call:

- CUDA: torch.cuda.max_memory_allocated after reset_peak_memory_stats, minus the memory allocated
  just before the call ("cuda_max_allocated");
- CPU: the peak resident memory after the call minus the resident memory (/proc/self/statm) just
  before it, after gc and malloc_trim ("cpu_peak_rss_minus_baseline"), with glibc's mmap threshold
  fixed at 128 KiB for that call (mallopt, `common.MEASURE_MMAP`: the live buffers' peak, repeatable;
  --malloc default keeps glibc's dynamic threshold, whose heap reuse moves the peaks by tens of MB
  from run to run). The peak is the process's own high-water mark VmHWM (/proc/self/status);
  getrusage's ru_maxrss is recorded too but not used where VmHWM exists, because on Linux a child
  started by fork/vfork + exec inherits its parent's lifetime ru_maxrss (a worker of a 1 GB parent
  reports >= 1 GB), which would hide the call's peak. Each worker checks that the call raised the
  high-water mark (`peak_raised_by_call`): neither loading, building nor the warm-up had reached it.

Time per image is the median of `repeats` further calls ÷ n, in the same worker (one thread by
default; on the CPU after one untimed call at glibc's usual threshold, `common.TIMING_MMAP`). The
measurement (both paths) is `common.measure_peak`, shared with benchmarks/fixed_point.py. Ratios
are to N = 1. The targets (from the issue): with sequential tiles, the sampling peak at 2×2 <= 0.55×
and at 4×4 <= 0.3× the untiled network's; the batched layout's ratio and the training-step ratios
are recorded without a target (the batched layout should be ≈ 1 or more).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from pathlib import Path

import torch

from common import fixes_malloc, measure_peak, parse_common, run_worker as _run_worker, start, sync, write_json

PRESET = "small"
TARGETS = {2: 0.55, 4: 0.3}                     # grid N -> sequential sampling peak ÷ untiled, at most
FULL = dict(resolution=128, batch=4, channels=3, repeats=3, grids="1,2,4,8")
QUICK = dict(resolution=64, batch=2, channels=1, repeats=1, grids="1,2,4")
SIGMA = 1.0                                     # the noise level of the measured denoiser evaluation


# ----------------------------------------------------------------------------------------------
# The worker: one measurement in a fresh process.

def build(spec: dict, device: torch.device):
    """The tiled method of one configuration (N = 1: the untiled net)."""
    from pdlib.config import TrainConfig
    from pdlib.methods import build_method
    N = spec["grid"]
    cfg = TrainConfig.flat(method="tiled", preset=PRESET, patch_size=1, dataset="fashion_mnist",
                           resolution=spec["resolution"], img_channels=spec["channels"], grid=N,
                           gcc=N > 1, position=N > 1, chunk=spec["chunk"], tiles_per_image=1)
    torch.manual_seed(0)
    return build_method(cfg).to(device)


def worker(spec: dict) -> dict:
    """Warm up on one 4N×4N image, measure one call's peak memory, then time `repeats` calls."""
    device = torch.device(spec["device"])
    torch.set_num_threads(spec["threads"])
    method = build(spec, device)
    N, n, C, R = spec["grid"], spec["batch"], spec["channels"], spec["resolution"]
    gen = torch.Generator().manual_seed(1)
    small = (torch.rand(1, C, 4 * N, 4 * N, generator=gen) * 2 - 1).to(device)
    images = (torch.rand(n, C, R, R, generator=gen) * 2 - 1).to(device)
    if spec["kind"] == "sample":
        D = method.denoiser.eval()

        def call(x):
            with torch.no_grad():
                return D(x, SIGMA)
    else:
        method.denoiser.train()
        g = torch.Generator(device=device).manual_seed(2)

        def call(x):
            batch = method.prepare_batch(x, None, g)
            loss = method.loss(batch, g).sum() / batch.n_images
            loss.backward()                             # into the gradients the warm-up allocated
            return loss

    def measured() -> float:
        sync(device)
        t0 = time.perf_counter()
        out = call(images)
        sync(device)
        del out
        return time.perf_counter() - t0

    if spec["warmup"] == "small":
        call(small)
    elif spec["warmup"] == "full":                      # diagnostics: what a full-size warm-up hides
        call(images)
    gc.collect()
    fixed = fixes_malloc(device, spec["malloc"])
    # The thresholds go back to the timing ones only when there are timed calls (then after one untimed call).
    first_s, peak_mb, measurement = measure_peak(measured, device, spec["malloc"], restore=bool(spec["repeats"]))
    info = dict(warmup=spec["warmup"], **measurement)
    if fixed and spec["repeats"]:
        measured()                                      # untimed: fills the heap at the new threshold
    times = [measured() for _ in range(spec["repeats"])]
    t = statistics.median(times) if times else first_s
    return dict(peak_mem_mb=peak_mb, s_per_image=t / n, call_s=times, first_call_s=first_s,
                params=sum(p.numel() for p in method.parameters()), measurement=info)


def run_worker(spec: dict) -> dict:
    """One measurement in a fresh interpreter (this script, --worker); its JSON is the last line."""
    return _run_worker(Path(__file__), spec)


# ----------------------------------------------------------------------------------------------
# The benchmark.


def main() -> None:
    parser = parse_common(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.set_defaults(threads=1)
    parser.add_argument("--out", default="results/benchmarks/tiled_memory.json")
    for key, kind, what in (("resolution", int, "R of the R×R images"), ("batch", int, "n images per call"),
                            ("channels", int, "image channels"), ("repeats", int, "timed calls per worker"),
                            ("grids", str, "comma list of N, 1 first")):
        parser.add_argument(f"--{key}", type=kind, default=None,
                            help=f"{what} (default {FULL[key]}; --quick {QUICK[key]})")
    parser.add_argument("--warmup", default="small", choices=["small", "full", "none"],
                        help="the workers' warm-up call: one 4N×4N image (default), the measured input, or none")
    parser.add_argument("--malloc", default="fixed", choices=["fixed", "default"],
                        help="CPU: glibc's mmap threshold fixed at 128 KiB during the measured call "
                             "(default; the live buffers' peak, repeatable) or glibc's dynamic default")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        print(json.dumps(worker(json.loads(args.worker))), flush=True)
        return
    device = start(args)
    t_start = time.perf_counter()
    s = {k: getattr(args, k) if getattr(args, k) is not None else (QUICK if args.quick else FULL)[k]
         for k in FULL}
    grids = [int(g) for g in str(s["grids"]).split(",")]
    if grids[0] != 1 or len(set(grids)) != len(grids):
        parser.error(f"--grids {s['grids']}: allowed: distinct N starting with 1 (the untiled reference)")
    R, n, C = s["resolution"], s["batch"], s["channels"]
    kind = "cuda_max_allocated" if device.type == "cuda" else "cpu_peak_rss_minus_baseline"
    print(f"tiled / {PRESET} P=1: {n} x {C}x{R}x{R}, grids {grids}, {s['repeats']} timed repeats, "
          f"threads {args.threads}, memory: {kind}", flush=True)

    def measure(what: str, N: int, chunk: int) -> dict:
        spec = dict(kind=what, grid=N, chunk=chunk, resolution=R, batch=n, channels=C, repeats=s["repeats"],
                    device=str(device), threads=args.threads, warmup=args.warmup, malloc=args.malloc)
        r = run_worker(spec)
        layout = "untiled" if N == 1 else ("sequential" if chunk == 1 else "batched")
        row = dict(grid=N, tile=R // N, layout=layout if what == "sample" else ("untiled" if N == 1 else "tiled"),
                   chunk=chunk, gcc=N > 1, position=N > 1, **r)
        if what == "train":
            row["tiles_per_image"] = 1
        print(f"  {what:6s} N={N} {row['layout']:10s} chunk {chunk:2d}: {r['peak_mem_mb']:8.1f} MB  "
              f"{r['s_per_image']:.4f} s/image", flush=True)
        return row

    sampling, training = [], []
    for N in grids:
        sampling.append(measure("sample", N, 1))
        if N > 1:
            sampling.append(measure("sample", N, N * N))
        training.append(measure("train", N, 1))
    for rows in (sampling, training):
        ref = rows[0]
        for r in rows:
            r["mem_ratio_vs_untiled"] = r["peak_mem_mb"] / ref["peak_mem_mb"]
            r["time_ratio_vs_untiled"] = r["s_per_image"] / ref["s_per_image"]

    targets = {}
    by = {(r["grid"], r["layout"]): r for r in sampling}
    for N in grids[1:]:
        seq, bat = by[(N, "sequential")], by[(N, "batched")]
        entry = dict(value=seq["mem_ratio_vs_untiled"], tiled_mb=seq["peak_mem_mb"],
                     untiled_mb=sampling[0]["peak_mem_mb"])
        if N in TARGETS:
            entry.update(target=f"<= {TARGETS[N]}", met=bool(seq["mem_ratio_vs_untiled"] <= TARGETS[N]))
        targets[f"N={N} sequential sample memory"] = entry
        targets[f"N={N} batched sample memory"] = dict(
            value=bat["mem_ratio_vs_untiled"], tiled_mb=bat["peak_mem_mb"], untiled_mb=sampling[0]["peak_mem_mb"],
            target="~1 (the release's layout: all N² tiles in one run)")
    for r in training[1:]:
        targets[f"N={r['grid']} train memory"] = dict(
            value=r["mem_ratio_vs_untiled"], tiled_mb=r["peak_mem_mb"], untiled_mb=training[0]["peak_mem_mb"])

    valid = [r["measurement"].get("peak_raised_by_call", True) for r in sampling + training]
    path = write_json(args.out, dict(
        benchmark="tiled_memory", quick=args.quick, memory_kind=kind,
        settings=dict(preset=PRESET, patch_size=1, resolution=R, batch=n, channels=C, grids=grids,
                      repeats=s["repeats"], threads=args.threads, warmup=args.warmup, sigma=SIGMA,
                      malloc=args.malloc if device.type == "cpu" else None,
                      warmup_input="one image of 4N×4N" if args.warmup == "small" else args.warmup),
        sample_call="TiledDenoiser(x, sigma) of the whole n-image batch under no_grad (one sampler step's "
                    "network evaluation); N=1 untiled (gcc/position off), N>1 gcc and position on",
        train_call="TiledMethod.prepare_batch + loss (TileLoss, VP eps L1, tiles_per_image=1) summed / n + "
                   "backward into gradients the warm-up allocated",
        sampling=sampling, training=training, targets=targets,
        all_peaks_raised_by_call=all(valid), wall_s=time.perf_counter() - t_start), device)

    print(f"\n{'N':>2} {'tile':>5} {'layout':10} {'chunk':>5} | {'sample MB':>9} {'ratio':>6} {'s/img':>8} "
          f"| {'train MB':>9} {'ratio':>6} {'s/img':>8}")
    train_by = {r["grid"]: r for r in training}
    for r in sampling:
        t = train_by[r["grid"]] if r["layout"] in ("untiled", "sequential") else None
        tr = (f"{t['peak_mem_mb']:9.1f} {t['mem_ratio_vs_untiled']:6.3f} {t['s_per_image']:8.4f}" if t
              else f"{'':9} {'':6} {'':8}")
        print(f"{r['grid']:2d} {r['tile']:5d} {r['layout']:10} {r['chunk']:5d} | {r['peak_mem_mb']:9.1f} "
              f"{r['mem_ratio_vs_untiled']:6.3f} {r['s_per_image']:8.4f} | {tr}")
    for k, v in targets.items():
        verdict = "" if "met" not in v else (" met" if v["met"] else " NOT met")
        print(f"target {k}: {v['value']:.3f}{' ' + v['target'] if 'target' in v else ''}{verdict}")
    if not all(valid):
        print("warning: some calls did not raise the memory high-water mark (see measurement."
              "peak_raised_by_call): their peak is an upper bound")
    print(f"wrote {path} in {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
