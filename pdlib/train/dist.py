"""Devices, precision and processes: the torchrun process group, autocast dtypes, barriers."""
from __future__ import annotations

import os
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


def resolve_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if name == "cuda":
        return torch.device(f"cuda:{local_rank}")
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
