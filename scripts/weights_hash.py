#!/usr/bin/env python
"""Hashes of the final weights of four short training runs: run before and after a refactor of
pdlib to show it trains bit-identically (same machine, same thread count).

    OMP_NUM_THREADS=2 .venv/bin/python scripts/weights_hash.py [out.json]

Recorded for the architecture change (issue 9), 2 threads, before and after:
    edm e9fe3a02d33f841e, patched_cc bf14afa0cc2b6b64, vp_ls fdd441554b25784e, split 2a11434bbbf2e975
"""
import hashlib
import json
import sys

from pdlib.train import TrainConfig, train

RUNS = {
    "edm": dict(method="edm", preset="tiny", dataset="digits", resolution=8, batch_size=16, steps=6,
                warmup_steps=2, out_dir=None, sample_every=0, amp="none"),
    "patched_cc": dict(method="patched", preset="tiny", dataset="fashion_mnist", resolution=16, n_data=256,
                       class_cond=True, batch_size=16, grad_accum=2, steps=5, out_dir=None, amp="none"),
    "vp_ls": dict(method="vp", preset="tiny", dataset="digits", resolution=8, learn_sigma=True, prediction="v",
                  weighting="p2", schedule="cosine", batch_size=16, steps=5, out_dir=None, amp="none"),
    "split": dict(method="patched-snr:inf>0.25", preset="tiny", dataset="digits", resolution=8, batch_size=16,
                  steps=4, out_dir=None, amp="none"),      # the old name, read through pdlib.config.migrate
}


def weights_hash(result) -> str:
    """sha256 (16 hex digits) over the EMA state dict (names and bytes), then the raw weights."""
    h = hashlib.sha256()
    for name, t in sorted(result.ema.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    for _, t in sorted(result.method.state_dict().items()):
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def main() -> None:
    out = {}
    for name, kw in RUNS.items():
        r = train(TrainConfig.flat(**kw), progress=False)
        out[name] = {"hash": weights_hash(r), "last_loss": r.history[-1]["loss"]}
        print(name, out[name], flush=True)
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
