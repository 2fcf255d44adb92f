"""Shared helpers of the speed benchmarks: machine info, matmul rate, FLOP counts, timing, peak memory, JSON.

Conventions: every number is measured in the same process and run as the ratios computed from it;
timings are medians over repeats after warm-up; FLOPs are those `torch.utils.flop_counter` counts
(matmuls, convolutions, attention, with the CPU flash-attention kernels added; not normalisations or
element-wise ops).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:                                    # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from pdlib.provenance import git_state, machine, utc_iso  # noqa: E402  (after the path above)

STARTED = utc_iso()          # when this benchmark's process imported its helpers (start() resets it)

# The reference family of the issue: ~6.5M parameters, patched 16×16 grid at 64×64 with P = 4.
# Same widths and depths as the diffusers peer (block_out_channels 64, 128, 128; 2 layers per block;
# attention on the 8×8 level and in the middle).
BENCH_UNET = dict(model_channels=64, channel_mult=(1, 2, 2), num_res_blocks=2,
                  attention_resolutions=(8,), head_channels=64)
# The quick family: the same shape, narrow.
QUICK_UNET = dict(model_channels=16, channel_mult=(1, 2, 2), num_res_blocks=1,
                  attention_resolutions=(8,), head_channels=32)

# The DiT of the benchmarks: DiT-S width (384, 6 heads of 64) at half its depth (6 blocks), P = 2 on
# 4-channel 32×32 inputs (DiT's SD-VAE latent shape; 256 tokens), 10 classes, learn_sigma off;
# ~16.5M parameters, ~18 GFLOP per image and training step. The peer (diffusers
# DiTTransformer2DModel) is built with the same hidden size, depth, heads, patch size, channels,
# sample size and classes.
BENCH_DIT = dict(in_channels=4, resolution=32, patch_size=2, hidden_size=384, depth=6, num_heads=6,
                 num_classes=10)
BENCH_DIT_BATCH = 16
# The quick DiT: the same shape, narrow and shallow.
QUICK_DIT = dict(in_channels=4, resolution=32, patch_size=4, hidden_size=64, depth=2, num_heads=2,
                 num_classes=10)
QUICK_DIT_BATCH = 8


# ----------------------------------------------------------------------------------------------
# Machine.

def machine_info(device: torch.device) -> dict:
    """Where the numbers come from: pdlib.provenance.machine (CPU, threads, torch build; 'gpu' on a
    CUDA device), the device and the load average at the time of writing."""
    info = machine(device)
    if info.get("gpu") is None:
        info.pop("gpu", None)
    info.update(device=str(device),
                load_average_1_5_15=list(os.getloadavg()) if hasattr(os, "getloadavg") else None)
    return info


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------------------------
# Timing and the matmul roofline.

def time_fn(fn: Callable[[], object], device: torch.device, warmup: int = 2, repeats: int = 5,
            min_time: float = 0.0) -> dict:
    """Median wall time of fn() over `repeats` calls (at least `min_time` seconds in all) after `warmup` calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeats or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return dict(median_s=statistics.median(times), min_s=min(times), repeats=len(times))


def matmul_gflops(device: torch.device, dtype: torch.dtype = torch.float32, n: int = 1024,
                  repeats: int = 10) -> float:
    """Achieved GFLOP/s of an n×n×n matmul (2n³ FLOPs), median of repeats: this machine's roofline."""
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device, dtype)
    b = torch.randn(n, n, generator=g).to(device, dtype)
    reps = max(1, int(4e9 // (2 * n ** 3)))                      # ~4 GFLOP per timed call
    t = time_fn(lambda: [a @ b for _ in range(reps)], device, warmup=2, repeats=repeats)
    return 2 * n ** 3 * reps / t["median_s"] / 1e9


def conv_gflops(device: torch.device, dtype: torch.dtype = torch.float32, batch: int = 32, channels: int = 128,
                size: int = 16, repeats: int = 10) -> float:
    """Achieved GFLOP/s of a 3×3 convolution (forward, padding 1) at the U-Net's shapes: a second roofline.

    On CPUs where the BLAS sgemm behind `matmul_gflops` is slower than oneDNN's convolution kernels
    (MKL on AMD), a step can exceed the matmul rate; this one is what the convolutions can reach.
    """
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(batch, channels, size, size, generator=g).to(device, dtype)
    w = torch.randn(channels, channels, 3, 3, generator=g).to(device, dtype)
    flops = 2 * batch * size * size * channels * channels * 9
    reps = max(1, int(2e9 // flops))
    with torch.no_grad():
        t = time_fn(lambda: [F.conv2d(x, w, padding=1) for _ in range(reps)], device, warmup=2, repeats=repeats)
    return flops * reps / t["median_s"] / 1e9


# ----------------------------------------------------------------------------------------------
# FLOPs and memory.

def _cpu_flash_fwd(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_flash_bwd(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


# FlopCounterMode has no formula for the CPU flash-attention kernels (it counts the CUDA ones and the
# bmm of the math path), so attention that takes the CPU flash path would count as 0 FLOPs; these
# give it the same formula as the CUDA kernels (4·B·H·L·S·d forward, 2.5× that backward).
FLOP_MAPPING = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_fwd,
                torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_flash_bwd}


def flop_counter() -> FlopCounterMode:
    """A FlopCounterMode that also counts the CPU flash-attention kernels (`FLOP_MAPPING`)."""
    return FlopCounterMode(display=False, custom_mapping=FLOP_MAPPING)


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs that FlopCounterMode records while fn() runs (forward and backward if fn does both)."""
    counter = flop_counter()
    with counter:
        fn()
    return counter.get_total_flops()


def _status_kib(key: str) -> int | None:
    with contextlib.suppress(OSError):
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


class PeakMemory:
    """Peak memory above the level at entry: CUDA max_memory_allocated, or on Linux CPUs the peak RSS.

    On CPU the kernel's high-water mark is reset on entry (`/proc/self/clear_refs` ← 5, Linux ≥ 4.0),
    after returning freed heap pages to the OS (`malloc_trim`), so configurations measured one after
    the other in one process do not see each other's peaks. `mb` is None where this is unavailable.
    """

    def __init__(self, device: torch.device):
        self.device, self.mb = device, None

    def __enter__(self) -> "PeakMemory":
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            return self
        self._base = None
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        with contextlib.suppress(OSError):
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self._base = _status_kib("VmRSS")
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self.mb = (torch.cuda.max_memory_allocated(self.device) - self._base) / 2 ** 20
        elif self._base is not None:
            hwm = _status_kib("VmHWM")
            self.mb = None if hwm is None else (hwm - self._base) / 1024


# ----------------------------------------------------------------------------------------------
# Peak memory of one call in a worker process (benchmarks/tiled_memory.py, benchmarks/fixed_point.py).

# glibc raises its mmap threshold (up to 32 MiB) after large buffers are freed and then serves them
# from the heap, whose reuse and fragmentation move a CPU peak by tens of MB from run to run; with
# the threshold fixed at its initial 128 KiB during the measured call (mallopt), every large buffer
# is mapped and unmapped, and the peak is that of the live buffers, repeatable to ~0.1 MB. The
# timed calls run with the threshold at glibc's cap (32 MiB; trim at 64 MiB), like the dynamic
# threshold's steady state: mapping every buffer afresh would double a call's time (page faults).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MEASURE_MMAP, TIMING_MMAP, TIMING_TRIM = 128 * 1024, 32 * 2 ** 20, 64 * 2 ** 20


def mallopt(param: int, value: int) -> bool:
    """glibc's mallopt; False where it is not there (another libc) or refused."""
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(param, value))
    except (OSError, AttributeError):
        return False


def statm_rss_kib() -> float:
    """The resident memory now (/proc/self/statm), KiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024


def hwm_kib() -> int | None:
    """The process's resident high-water mark VmHWM (/proc/self/status), KiB; None where it is not there."""
    return _status_kib("VmHWM")


def maxrss_kib() -> int:
    """getrusage's ru_maxrss (KiB on Linux). A child started by fork/vfork + exec inherits its
    parent's lifetime value, so VmHWM is the peak to use where it exists."""
    import resource                                            # Unix only
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def fixes_malloc(device: torch.device, malloc: str = "fixed") -> bool:
    """Whether `measure_peak` fixes glibc's thresholds for the call: malloc "fixed" on the CPU."""
    return malloc == "fixed" and device.type == "cpu"


def measure_peak(measured: Callable[[], float], device: torch.device, malloc: str = "fixed",
                 reset_hwm: bool = False, restore: bool = True) -> tuple[float, float, dict]:
    """One call of `measured` (which returns its seconds) and its peak memory above the level just before it.

    Returns (the call's seconds, the peak in MiB above the baseline, the measurement's info). The
    caller runs gc first. With malloc "fixed" on the CPU, glibc's mmap and trim thresholds are
    fixed at `MEASURE_MMAP` for the call (info "mmap_threshold_fixed": whether glibc accepted) and,
    if `restore`, set to the timing thresholds (`TIMING_MMAP`, `TIMING_TRIM`) afterwards.

    - CUDA: torch.cuda.max_memory_allocated after reset_peak_memory_stats, minus the memory
      allocated just before the call (info "allocated_before_mb");
    - CPU: the high-water mark VmHWM (getrusage's ru_maxrss where VmHWM is not there) after the call
      minus the resident memory (/proc/self/statm) just before it, after malloc_trim. `reset_hwm`
      (for measurements in a process that measured before) first resets VmHWM through
      /proc/self/clear_refs (info "hwm_reset" where that worked). Info: "peak_source",
      "baseline_rss_mb", "headroom_before_call_mb" (the high-water mark above the baseline before
      the call), "peak_raised_by_call" (the measurement is the call's own only if the call went
      above that), and ru_maxrss before and after, minus the baseline, and whether it was inherited
      from a parent (above VmHWM by more than 1 MiB before the call).
    """
    info: dict = {}
    fixed = fixes_malloc(device, malloc)
    if fixed:
        info["mmap_threshold_fixed"] = mallopt(M_MMAP_THRESHOLD, MEASURE_MMAP) and \
            mallopt(M_TRIM_THRESHOLD, MEASURE_MMAP)
    if device.type == "cuda":
        sync(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        first_s = measured()
        peak_mb = (torch.cuda.max_memory_allocated(device) - base) / 2 ** 20
        info.update(allocated_before_mb=base / 2 ** 20)
    else:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        if reset_hwm:                                          # forget this process's earlier peaks
            with contextlib.suppress(OSError):
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
                info["hwm_reset"] = True
        base = statm_rss_kib()
        hwm0, maxrss0 = hwm_kib(), maxrss_kib()
        first_s = measured()
        hwm1, maxrss1 = hwm_kib(), maxrss_kib()
        before = hwm0 if hwm0 is not None else maxrss0
        after = hwm1 if hwm1 is not None else maxrss1
        peak_mb = (after - base) / 1024
        info.update(
            peak_source="VmHWM" if hwm1 is not None else "ru_maxrss",
            baseline_rss_mb=base / 1024,
            # The high-water mark above the baseline before the call (left by loading, building and
            # the warm-up): the measurement is the call's own only if the call went above it.
            headroom_before_call_mb=(before - base) / 1024,
            peak_raised_by_call=after > before,
            ru_maxrss_before_mb=maxrss0 / 1024, ru_maxrss_after_mb=maxrss1 / 1024,
            ru_maxrss_minus_baseline_mb=(maxrss1 - base) / 1024,
            ru_maxrss_inherited=hwm0 is not None and maxrss0 > hwm0 + 1024)
    if fixed and restore:
        mallopt(M_MMAP_THRESHOLD, TIMING_MMAP)
        mallopt(M_TRIM_THRESHOLD, TIMING_TRIM)
    return first_s, peak_mb, info


def run_worker(script: Path, spec: dict) -> dict:
    """One measurement in a fresh interpreter (`script --worker JSON`, run from ROOT); its JSON is the
    last line of its output. RuntimeError with the end of its stderr if it fails."""
    cmd = [sys.executable, str(Path(script).resolve()), "--worker", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {spec} failed (rc {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------
# The measured step.

def autocast_ctx(device: torch.device, precision: str):
    """'fp32' -> no autocast; 'bf16' / 'fp16' -> torch.autocast on the device."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(device.type, dtype=dtype)


def make_batch(shape: tuple[int, ...], device: torch.device, num_labels: bool = True, seed: int = 0):
    """Random-but-fixed inputs, targets and noise labels of one step."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.randn(shape, generator=g).to(device)
    target = torch.randn(shape, generator=g).to(device)
    t = (torch.rand(shape[0], generator=g) * 999).to(device)
    return x, target, t


def train_step_fn(forward: Callable, params, x, target, t, device, precision: str):
    """One full training step: forward, MSE loss, backward, AdamW step. Returns a zero-argument closure."""
    opt = torch.optim.AdamW(params, lr=1e-4, fused=True)

    def step():
        with autocast_ctx(device, precision):
            out = forward(x, t)
        loss = F.mse_loss(out.float(), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss
    return step


def forward_fn(forward: Callable, x, t, device, precision: str):
    """One sampling network evaluation (forward only, no autograd)."""
    def run():
        with torch.inference_mode(), autocast_ctx(device, precision):
            return forward(x, t)
    return run


def flops_per_image(forward: Callable, shape: tuple[int, ...], device: torch.device,
                    backward: bool = True) -> float:
    """FLOPs per image of forward (+ backward), counted on a batch of 2."""
    x, target, t = make_batch((2,) + tuple(shape[1:]), device)

    def run():
        out = forward(x, t)
        if backward:
            F.mse_loss(out.float(), target).backward()
    with torch.enable_grad() if backward else torch.inference_mode():
        return count_flops(run) / 2


# ----------------------------------------------------------------------------------------------
# Output.

def parse_common(parser):
    parser.add_argument("--quick", action="store_true", help="small configs, < 1 minute (a smoke check)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    return parser


def warn_if_loaded() -> None:
    """Timings are only meaningful on an idle machine: say so when the load exceeds the core count."""
    if hasattr(os, "getloadavg") and os.getloadavg()[0] > (os.cpu_count() or 1):
        print(f"warning: load average {os.getloadavg()[0]:.1f} > {os.cpu_count()} cores; timings will be "
              f"noisy (the JSON records the load)", flush=True)


def start(args) -> torch.device:
    """Apply the common options (threads), warn on a loaded machine, and return the device."""
    global STARTED
    STARTED = utc_iso()
    if args.threads:
        torch.set_num_threads(args.threads)
    warn_if_loaded()
    return torch.device(args.device)


def write_json(path: str | Path, payload: dict, device: torch.device) -> Path:
    """Write payload with its provenance, creating parent folders: `created` (= `ended`, the UTC
    time of writing), `started` (when `start` ran, or the helpers were imported), `machine`
    (machine_info) and `git` (pdlib.provenance.git_state: revision, dirty, changed files)."""
    from pdlib.checkpoint import atomic_write_text
    ended = utc_iso()
    doc = dict(created=ended, started=STARTED, ended=ended, machine=machine_info(device),
               git=git_state(ROOT), **payload)
    return atomic_write_text(json.dumps(doc, indent=1, default=float) + "\n", path)
