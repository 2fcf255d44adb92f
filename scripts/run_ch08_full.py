"""Chapter 8's full runs: FID against N on real data, which metric moves with which failure, the
seam-aware FID, and FID∞ of chapters 1 and 3's headline models.

    .venv/bin/python scripts/run_ch08_full.py                 # everything (about 70 min, 2 threads)
    .venv/bin/python scripts/run_ch08_full.py --only fid_vs_n corruptions
    .venv/bin/python scripts/run_ch08_full.py --n-real 500 --n-set 200 --n-model 300 --out /tmp/q

Inception features of every image set are cached in `--cache` (runs/ch08_full/features/NAME.npz;
git-ignored), so a rerun recomputes only the analysis. Each job writes one JSON into `--out`
(results/ch08_full/) with its provenance. Sets (Fashion-MNIST at 32×32):

- `train`, `test`: `--n-real` images of each split (seed 0): FID against N, the reference of all;
- `blur`, `noise`, `seamed`: the first `--n-set` test images, blurred (Gaussian, σ = 1 px),
  noised (σ = 0.1 on [−1, 1]), or stitched from the 2×2 tiles of four different test images;
  `modes`: `--n-set` test images of classes 0–4 only (from `test`'s features: no new forward);
- `crops-*`: seam_crops (2×2 grid) of `--n-crops` images of train, test and seamed;
- `ch01`, `ch03`: `--n-model` samples of the committed weights ch01-edm-small and
  ch03-patched-cc with their chapters' recipes (results/baseline/eval.json,
  results/ch03_full/cc-s0-w1.5.json).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pdlib import metrics as M  # noqa: E402
from pdlib.corruptions import add_noise, gaussian_blur, keep_classes, stitch  # noqa: E402
from pdlib.provenance import provenance  # noqa: E402

JOBS = ("fid_vs_n", "corruptions", "seams", "models")
GRID = 2
BLUR_SIGMA = 1.0
NOISE_STD = 0.1
MODE_CLASSES = (0, 1, 2, 3, 4)
NS_REAL = (100, 150, 200, 300, 400, 600, 800, 1000, 1500, 2000)
REPS = 5


class Features:
    """Inception features of named image sets, cached as npz (pool, spatial, labels)."""

    def __init__(self, cache: Path, batch_size: int = 50):
        self.cache, self.batch_size, self._net = cache, batch_size, None
        cache.mkdir(parents=True, exist_ok=True)

    def net(self):
        if self._net is None:
            self._net = M.InceptionFeatures()
        return self._net

    def get(self, name: str, make, kinds=("pool", "spatial"), n: int | None = None) -> dict:
        path = self.cache / f"{name}.npz"
        if path.exists():
            with np.load(path, allow_pickle=False) as z:
                feats = {k: z[k] for k in z.files}
            if n is not None and len(feats["pool"]) != n:
                raise SystemExit(f"{_rel(path)} holds {len(feats['pool'])} images' features, this "
                                 f"run asks for {n}: pass the size it was made with or delete it")
            return feats
        images, labels = make()
        print(f"[{time.strftime('%H:%M:%S')}] features of {name}: {len(images)} images", flush=True)
        feats = self.net().extract(images, self.batch_size, kinds)
        feats["labels"] = np.asarray(labels if labels is not None else np.full(len(images), -1))
        feats["images"] = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **feats)
        os.replace(tmp, path)
        return feats


def real(split: str, n: int):
    from pdlib.data import load_dataset
    ds = load_dataset("fashion_mnist", resolution=32, n=n, seed=0, split=split)
    return torch.as_tensor(ds.images), torch.as_tensor(ds.labels)


def metrics_against(feats: dict, ref: dict, name: str, images=None) -> dict:
    """FID, sFID, KID, precision/recall of one set against the reference features."""
    pool, n = feats["pool"], len(feats["pool"])
    out = dict(set=name, n=n, n_ref=len(ref["pool"]))
    out["FID"] = M.fid_from_features(pool, ref["pool"])
    out["sFID"] = M.sfid(feats["spatial"], ref["spatial"])
    m = max(2, min(1000, n // 2))
    out["KID"], out["KID_std"] = M.kid(pool, ref["pool"], 100, m, torch.Generator().manual_seed(0))
    out["precision"], out["recall"] = M.precision_recall(ref["pool"], pool, k=3)
    if images is not None:
        x = torch.as_tensor(images).float() / 127.5 - 1
        out["border_energy_ratio"] = M.border_energy_ratio(x, GRID)
    return out


def _rel(path: Path) -> str:
    """A path as the results show it: relative to the checkout when inside it."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def write(out: Path, name: str, obj: dict, args, started: float) -> None:
    config = {k: _rel(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    obj["provenance"] = provenance(config | {"job": name}, 0, started, time.time(),
                                   threads=torch.get_num_threads())
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=float) + "\n")
    os.replace(tmp, path)
    print(f"[{time.strftime('%H:%M:%S')}] wrote {path}", flush=True)


def curve_dict(r: M.FIDInfinity) -> dict:
    return dict(ns=r.ns.tolist(), fids=r.fids.tolist(), fid_inf=r.fid_inf, slope=r.slope,
                fit_error=r.fit_error)


def job_fid_vs_n(F: Features, args) -> dict:
    tr = F.get("train", lambda: real("train", args.n_real), n=args.n_real)
    te = F.get("test", lambda: real("test", args.n_real), n=args.n_real)
    n_max = min(len(tr["pool"]), len(te["pool"]))
    ns = [n for n in NS_REAL if n <= n_max]
    if len(ns) < 3:
        ns = sorted({max(2, n_max // 4), max(3, n_max // 2), n_max})
    both = M.fid_against_n(tr["pool"], te["pool"], ns, reps=REPS, seed=0)
    # A half of the training features against the other half: the same law, no split shift.
    half = len(tr["pool"]) // 2
    ns_half = [n for n in ns if n <= half]
    if len(ns_half) < 3:
        ns_half = sorted({max(2, half // 4), max(3, half // 2), half})
    halves = M.fid_against_n(tr["pool"][:half], tr["pool"][half:], ns_half, reps=REPS, seed=1)
    return dict(train_vs_test=curve_dict(both), train_vs_train=curve_dict(halves),
                kid_train_vs_test=M.kid(tr["pool"], te["pool"], 100, n_max // 2,
                                        torch.Generator().manual_seed(0)),
                n_train=len(tr["pool"]), n_test=len(te["pool"]), reps=REPS)


def job_corruptions(F: Features, args) -> dict:
    tr = F.get("train", lambda: real("train", args.n_real), n=args.n_real)
    te = F.get("test", lambda: real("test", args.n_real), n=args.n_real)
    n = min(args.n_set, len(te["pool"]))
    base = torch.as_tensor(te["images"][:n]).float() / 127.5 - 1
    sets = {"clean": {k: v[:n] for k, v in te.items()}}
    sets["blur"] = F.get("blur", lambda: (gaussian_blur(base, BLUR_SIGMA), te["labels"][:n]))
    sets["noise"] = F.get("noise", lambda: (
        add_noise(base, NOISE_STD, torch.Generator().manual_seed(0)), te["labels"][:n]))
    keep = keep_classes(te["labels"], MODE_CLASSES)[:n]
    sets["modes"] = {k: v[keep] for k, v in te.items()}
    sets["seamed"] = F.get("seamed", lambda: (stitch(base, GRID), te["labels"][:n]))
    rows = [metrics_against(f, tr, name, f["images"]) for name, f in sets.items()]
    return dict(rows=rows, blur_sigma=BLUR_SIGMA, noise_std=NOISE_STD,
                mode_classes=list(MODE_CLASSES), grid=GRID,
                clean_border_energy_ratio_train=M.border_energy_ratio(
                    torch.as_tensor(tr["images"]).float() / 127.5 - 1, GRID))


def job_seams(F: Features, args) -> dict:
    tr = F.get("train", lambda: real("train", args.n_real), n=args.n_real)
    te = F.get("test", lambda: real("test", args.n_real), n=args.n_real)
    n = min(args.n_crops, len(te["pool"]))

    def crops(images, seed):
        x = torch.as_tensor(images[:n]).float() / 127.5 - 1
        return M.seam_crops(x, GRID, torch.Generator().manual_seed(seed))

    feats = {}
    for name, src, seed in (("train", tr["images"], 1), ("test", te["images"], 2)):
        s, i = crops(src, seed)
        feats[name] = (F.get(f"crops-straddle-{name}", lambda s=s: (s, None), ("pool",))["pool"],
                       F.get(f"crops-inner-{name}", lambda i=i: (i, None), ("pool",))["pool"])
    seamed = stitch(torch.as_tensor(te["images"][:min(args.n_set, len(te["pool"]))]).float() / 127.5 - 1,
                    GRID)
    s, i = crops(((seamed + 1) * 127.5).round().to(torch.uint8).numpy(), 2)
    feats["seamed"] = (F.get("crops-straddle-seamed", lambda: (s, None), ("pool",))["pool"],
                       F.get("crops-inner-seamed", lambda: (i, None), ("pool",))["pool"])
    rows = []
    for name in ("test", "seamed"):
        r = M.seam_fid_from_features(*feats[name], *feats["train"],
                                     generator=torch.Generator().manual_seed(0))
        rows.append(dict(set=name, **r))
    return dict(rows=rows, grid=GRID, crop=32 // GRID, n_crops=n)


def job_models(F: Features, args) -> dict:
    from pdlib.evaluation import generate
    from pdlib.pretrained import pretrained
    tr = F.get("train", lambda: real("train", args.n_real), n=args.n_real)
    recipes = {
        "ch01": ("ch01-edm-small", ROOT / "results/baseline/eval.json"),
        "ch03": ("ch03-patched-cc", ROOT / "results/ch03_full/cc-s0-w1.5.json"),
    }
    rows = []
    for key, (weights, recipe_path) in recipes.items():
        rec = json.loads(recipe_path.read_text())
        opts = dict(sampler=rec["sampler"], steps=rec["steps"], guidance=rec.get("guidance", 1.0),
                    dynamic_threshold=rec.get("dynamic_threshold"), seed=0)

        def make(weights=weights, opts=opts):
            t = time.time()
            x, nfe = generate(pretrained(weights), args.n_model, batch_size=100, **opts)
            print(f"  sampled {len(x)} in {time.time() - t:.0f} s ({nfe:g} NFE/image)", flush=True)
            return x, None

        f = F.get(key, make, n=args.n_model)
        pool = f["pool"]
        fi = M.fid_infinity(pool, tr["pool"], seed=0)
        n1k = min(1000, len(pool))
        row = dict(model=key, weights=weights, recipe=opts, recipe_from=str(recipe_path.relative_to(ROOT)),
                   committed_fid=next(v for k, v in rec.items() if k.startswith("FID@")),
                   committed_fid_key=next(k for k in rec if k.startswith("FID@")),
                   n=len(pool), n_ref=len(tr["pool"]),
                   fid_1k=M.fid_from_features(pool[:n1k], tr["pool"]), n_1k=n1k,
                   fid_all=M.fid_from_features(pool, tr["pool"]),
                   kid=M.kid(pool, tr["pool"], 100, len(pool) // 2, torch.Generator().manual_seed(0)),
                   fid_inf=curve_dict(fi))
        rows.append(row)
    # The floor: real test images through the same protocol (same N, same subset sizes, same
    # reference). Their FID∞ would be ~0 if the 1/N law held at these N; what it is instead is
    # the bias the models' FID∞ still carries.
    te = F.get(f"test-{args.n_model}", lambda: real("test", args.n_model), n=args.n_model)
    fi = M.fid_infinity(te["pool"], tr["pool"], seed=0)
    n1k = min(1000, len(te["pool"]))
    rows.append(dict(model="real", weights=None, n=len(te["pool"]), n_ref=len(tr["pool"]),
                     fid_1k=M.fid_from_features(te["pool"][:n1k], tr["pool"]), n_1k=n1k,
                     fid_all=M.fid_from_features(te["pool"], tr["pool"]),
                     kid=M.kid(te["pool"], tr["pool"], 100, len(te["pool"]) // 2,
                               torch.Generator().manual_seed(0)),
                     fid_inf=curve_dict(fi)))
    return dict(rows=rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", nargs="+", choices=JOBS, default=list(JOBS))
    p.add_argument("--n-real", type=int, default=2000, help="images of each real split")
    p.add_argument("--n-set", type=int, default=1000, help="images of each corrupted set")
    p.add_argument("--n-crops", type=int, default=500, help="images whose crops the seam FID uses")
    p.add_argument("--n-model", type=int, default=2000, help="samples of each committed model")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "ch08_full")
    p.add_argument("--cache", type=Path, default=ROOT / "runs" / "ch08_full" / "features")
    args = p.parse_args(argv)
    for name in ("n_real", "n_set", "n_crops", "n_model"):
        if getattr(args, name) < 8:
            p.error(f"--{name.replace('_', '-')}={getattr(args, name)}: must be at least 8")
    F = Features(args.cache)
    for job in args.only:
        started = time.time()
        write(args.out, job, globals()[f"job_{job}"](F, args), args, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
