"""Devices, precision and processes: the torchrun process group, autocast dtypes, barriers."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

import torch

__all__ = ["Dist", "resolve_device", "resolve_amp", "init_dist", "barrier"]


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False      # we created the process group (and destroy it at the end)

    @property
    def main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str, local_rank: int, name_of: str = "run.device") -> torch.device:
    """run.device → a torch.device; ValueError naming run.device (or `name_of`) if it is not a
    device of this machine."""
    if not isinstance(name, str) or re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", name) is None:
        raise ValueError(f"{name_of}={name!r} is invalid; allowed: 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            why = ("this torch has no CUDA support" if torch.version.cuda is None else
                   "no GPU is visible (CUDA_VISIBLE_DEVICES, driver)")
            raise ValueError(f"{name_of}={name!r} but CUDA is not available: {why} (torch "
                             f"{torch.__version__}); allowed here: 'auto' or 'cpu'")
        index = local_rank if name == "cuda" else int(name.split(":")[1])
        n = torch.cuda.device_count()
        if index >= n:
            raise ValueError(f"{name_of}={name!r} (GPU {index}) but this machine has {n} GPU"
                             f"{'s' * (n != 1)}; allowed: 'cuda', 'cuda:0' … 'cuda:{n - 1}', "
                             "'auto' or 'cpu'")
        return torch.device(f"cuda:{index}")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"{name_of}={name!r} but MPS (Apple GPU) is not available here; allowed: "
                         "'auto' or 'cpu'")
    return torch.device(name)


def resolve_amp(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype: 'auto' → bf16 on CUDA if supported else fp16 on CUDA; none on CPU."""
    if mode == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if mode == "fp16" and device.type != "cuda":
        raise ValueError(f"run.amp='fp16' on device {device}: fp16 training needs CUDA (GradScaler); "
                         "allowed on CPU: 'bf16' or 'none'")
    return {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[mode]


def init_dist(device_name: str) -> tuple[Dist, torch.device]:
    """Join the torchrun process group (env RANK/WORLD_SIZE/LOCAL_RANK) if there is one."""
    import torch.distributed as dist
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and not (dist.is_available() and dist.is_initialized()):
        return Dist(), resolve_device(device_name, 0)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local)
    owns = False
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        owns = True
    return Dist(dist.get_rank(), dist.get_world_size(), local, owns), device


def barrier(d: Dist) -> None:
    if d.world > 1:
        import torch.distributed as dist
        dist.barrier()
