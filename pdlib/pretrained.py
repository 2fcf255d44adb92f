"""Weights that last: a run's EMA weights exported as safetensors with their config, and the
committed models of the book loaded by name, without unpickling anything.

    python -m pdlib.pretrained export runs/baseline/latest.pt results/weights/ch01-edm-small.safetensors
    python -m pdlib.pretrained list
    method = pdlib.pretrained("ch01-edm-small")            # a Method in eval mode (EMA weights)
    method = pdlib.pretrained.load_method("runs/x/latest.pt")   # a checkpoint or an export

An export is one `.safetensors` file: the EMA state dict (fp16 by default, fp32 on request) and
string metadata: `format`, the full config (`config`, JSON of pdlib.config.TrainConfig, any
version through migrate), the training `step`, where it came from (`source`, `git_revision`), and
optionally a `reference` sample recipe (seed, n, sampler, steps, guidance, options) whose grid is stored
beside it as `<name>.png`, so a test can regenerate it and compare. safetensors holds raw tensors
only: loading one runs no code. Training checkpoints (`.pt`) load with
torch.load(weights_only=True) (pdlib.checkpoint).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from pdlib.config import TrainConfig
from pdlib.provenance import git_state

__all__ = ["WEIGHTS_DIR", "FORMAT", "export", "load_method", "pretrained", "available",
           "read_metadata", "reference_samples"]

FORMAT = "pdlib-weights/1"
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "results" / "weights"   # committed exports
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def _git_revision() -> str | None:
    return git_state()["revision"]


def export(checkpoint, out_path, dtype: str = "fp16", ema: bool = True, reference: dict | None = None,
           source: str | None = None) -> Path:
    """Write a training checkpoint's EMA (or raw) weights and its config as one safetensors file;
    with `reference` (sample kwargs: seed, n, sampler, steps, guidance), also the grid of those
    samples as <out>.png for `reference_samples` tests."""
    from safetensors.torch import save_file

    from pdlib._checks import check_writable
    from pdlib.checkpoint import (atomic_write, atomic_write_text, load_checkpoint, nonfinite_entries,
                                  require_keys)
    from pdlib.train.state import saved_config
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r} is invalid; allowed: {sorted(DTYPES)}")
    if reference is not None and not isinstance(reference, dict):
        raise ValueError(f"reference={reference!r} is invalid; allowed: None or a dict of sample "
                         "arguments (seed, n, sampler, steps, guidance)")
    out_path = Path(out_path)
    if out_path.suffix != ".safetensors" or out_path.is_dir():
        raise ValueError(f"out={str(out_path)!r} is invalid; allowed: a file path ending in .safetensors")
    check_writable(out_path.parent, "out", value=str(out_path))
    state = load_checkpoint(checkpoint, map_location="cpu")
    key = "ema" if ema else "model"
    require_keys(state, checkpoint, ("config", "step", key))
    cfg = saved_config(state, checkpoint)
    weights = state[key]
    bad = nonfinite_entries({key: weights}, keys=(key,))
    if bad:
        raise ValueError(f"checkpoint {str(checkpoint)!r}: its {key} weights hold NaN/inf ({len(bad)} "
                         f"tensors, e.g. {bad[0]}); allowed: a checkpoint of a run that did not diverge")
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise ValueError(f"checkpoint {str(checkpoint)!r}: its {key!r} entry is not a dict of tensors")
    tensors = {k: (v.to(DTYPES[dtype]) if v.is_floating_point() else v).contiguous()
               for k, v in weights.items()}
    meta = {"format": FORMAT, "config": json.dumps(cfg.to_dict()), "step": str(int(state["step"])),
            "weights": "ema" if ema else "raw", "dtype": dtype,
            "source": source or str(checkpoint), "git_revision": _git_revision() or "unknown",
            "torch_version": str(torch.__version__)}
    if reference is not None:
        meta["reference"] = json.dumps(reference)
    atomic_write(out_path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
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
    if "config" not in meta:
        raise ValueError(f"weights {str(path)!r} lack the 'config' metadata of a pdlib export")
    return meta


def _export_config(meta: dict, path) -> TrainConfig:
    try:
        return TrainConfig.from_dict(json.loads(meta["config"]))
    except json.JSONDecodeError as e:
        raise ValueError(f"weights {str(path)!r}: the 'config' metadata is not JSON ({e})") from None
    except (ValueError, TypeError) as e:
        raise ValueError(f"weights {str(path)!r}: the 'config' metadata is invalid "
                         f"({' '.join(str(e).split())})") from None


def load_method(path, ema: bool = True, device="cpu"):
    """Rebuild a Method, in eval mode, from a training checkpoint (.pt: its EMA weights by default)
    or an export (.safetensors). Nothing is unpickled."""
    from pdlib.methods import build_method
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        meta = read_metadata(path)
        cfg = _export_config(meta, path)
        weights = load_file(str(path))
    else:
        from pdlib.checkpoint import load_checkpoint, require_keys
        from pdlib.train.state import saved_config
        state = load_checkpoint(path, map_location="cpu")
        require_keys(state, path, ("config", "ema" if ema else "model"))
        cfg = saved_config(state, path)
        weights = state["ema" if ema else "model"]
        if not isinstance(weights, dict):
            raise ValueError(f"checkpoint {str(path)!r}: its {'ema' if ema else 'model'!r} entry "
                             "is not a dict of tensors")
    method = build_method(cfg)
    ref = method.state_dict()
    try:
        weights = {k: (v.to(ref[k].dtype) if k in ref and v.is_floating_point() else v)
                   for k, v in weights.items()}
        method.load_state_dict(weights)
    except (RuntimeError, AttributeError, TypeError) as e:
        raise ValueError(f"weights {str(path)!r} do not fit the network of their own config "
                         f"({' '.join(str(e).split())[:300]}); the file is damaged") from None
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
    """The samples of a reference recipe {seed, n, sampler, steps, guidance, options} (images in
    [-1, 1]); `options`: more keyword arguments of the method's sample(), e.g. a relay's
    {"stage1": "ch07-stage1", "stage1_steps": 9}."""
    g = torch.Generator().manual_seed(int(reference.get("seed", 0)))
    kw = {k: reference[k] for k in ("sampler", "guidance") if k in reference}
    options = reference.get("options", {})
    if not isinstance(options, dict):
        raise ValueError(f"reference options={options!r} is invalid; allowed: a dict of "
                         "sample() keyword arguments")
    kw.update(options)
    return method.sample(int(reference.get("n", 16)), generator=g, steps=reference.get("steps"), **kw)


def main(argv=None) -> int:
    """`python -m pdlib.pretrained export|list`; a bad input is one line and exit 2 (--debug:
    the traceback)."""
    from pdlib.errors import cli_main
    return cli_main("pdlib.pretrained", _main, argv)


def _main(argv) -> int:
    from pdlib.errors import ArgumentParser
    p = ArgumentParser(prog="python -m pdlib.pretrained", description=__doc__.split("\n\n")[0],
                       epilog="--debug shows the traceback of an error; exit status 2: bad input")
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
    if args.cmd == "export":
        try:
            ref = json.loads(args.reference) if args.reference else None
        except json.JSONDecodeError as e:
            raise ValueError(f"--reference={args.reference!r} is not JSON ({e}); allowed: a JSON "
                             'object, e.g. \'{"seed": 0, "n": 16, "steps": 18}\'') from None
        if ref is not None and not isinstance(ref, dict):
            raise ValueError(f"--reference={args.reference!r} is invalid; allowed: a JSON object")
        out = export(args.checkpoint, args.out, dtype=args.dtype, ema=not args.raw,
                     reference=ref, source=args.source)
        print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    else:
        for name in available():
            path = WEIGHTS_DIR / f"{name}.safetensors"
            meta = read_metadata(path)
            cfg = _export_config(meta, path)
            print(f"{name}: {cfg.summary()}, step {meta['step']}, {meta['dtype']}")
    return 0


class _CallableModule(type(sys)):
    """`pdlib.pretrained(name)` is `pdlib.pretrained.pretrained(name)`: the module is callable."""

    def __call__(self, name: str, device="cpu"):
        return pretrained(name, device=device)


sys.modules[__name__].__class__ = _CallableModule


if __name__ == "__main__":
    sys.exit(main())
