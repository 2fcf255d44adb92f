"""Weights that last: a run's EMA weights exported as safetensors with their config, and the
committed models of the book loaded by name, without unpickling anything.

    python -m pdlib.pretrained export runs/baseline/latest.pt results/weights/ch01-edm-small.safetensors
    python -m pdlib.pretrained list
    method = pdlib.pretrained("ch01-edm-small")            # a Method in eval mode (EMA weights)
    method = pdlib.pretrained.load_method("runs/x/latest.pt")   # a checkpoint or an export

An export is one `.safetensors` file: the EMA state dict (fp16 by default, fp32 on request) and
string metadata: `format`, the full config (`config`, JSON of pdlib.config.TrainConfig, any
version through migrate), the training `step`, where it came from (`source`, `git_revision`), and
optionally a `reference` sample recipe (seed, n, sampler, steps, guidance) whose grid is stored
beside it as `<name>.png`, so a test can regenerate it and compare. safetensors holds raw tensors
only: loading one runs no code. Training checkpoints (`.pt`) load with
torch.load(weights_only=True) (pdlib.checkpoint).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

from pdlib.config import TrainConfig

__all__ = ["WEIGHTS_DIR", "FORMAT", "export", "load_method", "pretrained", "available",
           "read_metadata", "reference_samples"]

FORMAT = "pdlib-weights/1"
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "results" / "weights"   # committed exports
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def _git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def export(checkpoint, out_path, dtype: str = "fp16", ema: bool = True, reference: dict | None = None,
           source: str | None = None) -> Path:
    """Write a training checkpoint's EMA (or raw) weights and its config as one safetensors file;
    with `reference` (sample kwargs: seed, n, sampler, steps, guidance), also the grid of those
    samples as <out>.png for `reference_samples` tests."""
    from safetensors.torch import save_file

    from pdlib.checkpoint import atomic_write_text, load_checkpoint
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r} is invalid; allowed: {sorted(DTYPES)}")
    state = load_checkpoint(checkpoint, map_location="cpu")
    cfg = TrainConfig.from_dict(json.loads(state["config"]))
    weights = state["ema" if ema else "model"]
    tensors = {k: (v.to(DTYPES[dtype]) if v.is_floating_point() else v).contiguous()
               for k, v in weights.items()}
    meta = {"format": FORMAT, "config": json.dumps(cfg.to_dict()), "step": str(int(state["step"])),
            "weights": "ema" if ema else "raw", "dtype": dtype,
            "source": source or str(checkpoint), "git_revision": _git_revision() or "unknown",
            "torch_version": str(torch.__version__)}
    if reference is not None:
        meta["reference"] = json.dumps(reference)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(out_path)
    if reference is not None:
        from pdlib.viz import save_grid
        method = load_method(out_path)
        images = reference_samples(method, reference)
        save_grid(images, out_path.with_suffix(".png"), nrow=reference.get("nrow"))
        atomic_write_text(json.dumps(reference, indent=2) + "\n", out_path.with_suffix(".reference.json"))
    return out_path


def read_metadata(path) -> dict:
    """The string metadata of an export (format, config, step, source, ...), without the tensors."""
    from safetensors import safe_open
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights {str(path)!r} do not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:                               # safetensors raises its own error types
        raise ValueError(f"weights {str(path)!r} are not a readable safetensors file ({e})") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"weights {str(path)!r} have format={meta.get('format')!r}; allowed: {FORMAT!r}")
    return meta


def load_method(path, ema: bool = True, device="cpu"):
    """Rebuild a Method, in eval mode, from a training checkpoint (.pt: its EMA weights by default)
    or an export (.safetensors). Nothing is unpickled."""
    from pdlib.methods import build_method
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        meta = read_metadata(path)
        cfg = TrainConfig.from_dict(json.loads(meta["config"]))
        weights = load_file(str(path))
    else:
        from pdlib.checkpoint import load_checkpoint
        from pdlib.train.state import saved_config
        state = load_checkpoint(path, map_location="cpu")
        cfg = saved_config(state, path)
        weights = state["ema" if ema else "model"]
    method = build_method(cfg)
    ref = method.state_dict()
    weights = {k: (v.to(ref[k].dtype) if k in ref and v.is_floating_point() else v)
               for k, v in weights.items()}
    method.load_state_dict(weights)
    method.to(device)
    method.denoiser.eval()
    return method


def available() -> list[str]:
    """Names of the committed exports (files results/weights/<name>.safetensors)."""
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.safetensors"))


def pretrained(name: str, device="cpu"):
    """The committed model `name` (see `available()`), as a Method in eval mode."""
    path = WEIGHTS_DIR / f"{name}.safetensors"
    if not path.is_file():
        raise ValueError(f"name={name!r} is not a committed model; allowed: {available()}")
    return load_method(path, device=device)


@torch.no_grad()
def reference_samples(method, reference: dict) -> torch.Tensor:
    """The samples of a reference recipe {seed, n, sampler, steps, guidance} (images in [-1, 1])."""
    g = torch.Generator().manual_seed(int(reference.get("seed", 0)))
    kw = {k: reference[k] for k in ("sampler", "guidance") if k in reference}
    return method.sample(int(reference.get("n", 16)), generator=g, steps=reference.get("steps"), **kw)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m pdlib.pretrained", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export", help="a checkpoint's EMA weights + config → one safetensors file")
    e.add_argument("checkpoint")
    e.add_argument("out")
    e.add_argument("--dtype", default="fp16", choices=sorted(DTYPES))
    e.add_argument("--raw", action="store_true", help="the raw weights instead of the EMA")
    e.add_argument("--reference", default=None,
                   help='JSON sample recipe for the stored grid, e.g. \'{"seed": 0, "n": 16, "steps": 18}\'')
    e.add_argument("--source", default=None, help="what to record as the weights' origin")
    sub.add_parser("list", help="the committed models")
    args = p.parse_args(argv)
    try:
        if args.cmd == "export":
            ref = json.loads(args.reference) if args.reference else None
            out = export(args.checkpoint, args.out, dtype=args.dtype, ema=not args.raw,
                         reference=ref, source=args.source)
            print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
        else:
            for name in available():
                meta = read_metadata(WEIGHTS_DIR / f"{name}.safetensors")
                cfg = TrainConfig.from_dict(json.loads(meta["config"]))
                print(f"{name}: {cfg.summary()}, step {meta['step']}, {meta['dtype']}")
    except (ValueError, FileNotFoundError, json.JSONDecodeError) as err:
        print(f"pdlib.pretrained: error: {err}", file=sys.stderr)
        return 2
    return 0


class _CallableModule(type(sys)):
    """`pdlib.pretrained(name)` is `pdlib.pretrained.pretrained(name)`: the module is callable."""

    def __call__(self, name: str, device="cpu"):
        return pretrained(name, device=device)


sys.modules[__name__].__class__ = _CallableModule


if __name__ == "__main__":
    sys.exit(main())
