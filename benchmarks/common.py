"""Shared helpers of the speed benchmarks: machine info, matmul rate, FLOP counts, timing, peak memory, JSON.

Conventions: every number is measured in the same process and run as the ratios computed from it;
timings are medians over repeats after warm-up; FLOPs are those `torch.utils.flop_counter` counts
(matmuls, convolutions, attention, with the CPU flash-attention kernels added; not normalisations or
element-wise ops).
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import gc
import json
import os
import platform
import statistics
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

def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine_info(device: torch.device) -> dict:
    """Where the numbers come from: CPU, threads, torch build, GPU."""
    info = dict(
        python=platform.python_version(), torch=torch.__version__, platform=platform.platform(),
        cpu=_cpu_model(), cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads(),
        cpu_capability=torch.backends.cpu.get_cpu_capability(), device=str(device),
        load_average_1_5_15=list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    )
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
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
    if args.threads:
        torch.set_num_threads(args.threads)
    warn_if_loaded()
    return torch.device(args.device)


def write_json(path: str | Path, payload: dict, device: torch.device) -> Path:
    """Write payload with machine info and a UTC timestamp; creates parent folders."""
    from pdlib.checkpoint import atomic_write_text
    doc = dict(created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               machine=machine_info(device), **payload)
    return atomic_write_text(json.dumps(doc, indent=1, default=float) + "\n", path)
