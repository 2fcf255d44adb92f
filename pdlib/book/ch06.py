"""Chapter 6 (Fixed Point Diffusion Models): the committed full runs and the benchmark as tables,
and the verdicts drawn from them.

``scripts/run_ch06_full.py`` writes ``results/ch06_full/``: per training run (``dit``, ``fpdm``)
``NAME.config.json`` and ``NAME.metrics.jsonl``, per evaluation ``NAME.json`` (FID, KID,
precision/recall, the sampler's steps and FPDM's ``sample_options``) and ``NAME.png``;
``benchmarks/fixed_point.py`` writes ``results/benchmarks/fixed_point.json``. The tables follow
``pdlib.book.results``: a Table with ``values`` for the prose, verdict functions whose rules
(thresholds included) the claims table shows, the quality ones behind the quality gate.
"""
from __future__ import annotations

from pdlib.book import evaluation_files, fmt, read_json, read_log
from pdlib.book.ch04 import CLOSE_FID_TOL, close_verdict
from pdlib.book.results import GATE, Table, Verdict, _dir, _need, _not_testable, _testable, value

__all__ = ["FOLDER", "SCRIPT", "DIT_BLOCKS", "block_evaluations", "training_table", "evals_table",
           "benchmark_table", "ratio_verdict", "better_verdict", "close_verdict", "CLOSE_FID_TOL",
           "eval_label"]

FOLDER, SCRIPT = "ch06_full", "scripts/run_ch06_full.py"
DIT_BLOCKS = 6             # dit-small's depth: a DiT step is 6 block evaluations


def block_evaluations(ev: dict, explicit: int = 2) -> int:
    """Sampling compute of one image in block evaluations: steps × 6 for the DiT, steps × 2 (the
    explicit blocks) + the iterations of all steps for FPDM (its budget)."""
    steps = int(ev["steps"])
    if ev["method"] != "fpdm":
        return steps * DIT_BLOCKS
    o = ev.get("sample_options") or {}
    return steps * explicit + int(o.get("budget") or steps * int(o.get("iters", 4)))


def eval_label(ev: dict) -> str:
    """'DiT, 10 steps' or 'FPDM, 10 steps × 2, reuse, increasing'."""
    if ev["method"] != "fpdm":
        return f"DiT, {ev['steps']} steps"
    o = ev.get("sample_options") or {}
    parts = [f"FPDM, {ev['steps']} steps × {o.get('iters', 4)}"]
    if o.get("reuse"):
        parts.append("reuse")
    if o.get("reallocation", "fixed") != "fixed":
        parts.append(o["reallocation"])
    return ", ".join(parts)


def training_table(folder=FOLDER, runs=("dit", "fpdm"), script=SCRIPT) -> Table:
    """One row per training run: network, parameters, steps reached, minutes, seconds per step,
    final logged loss. ``values``: {name: dict(steps, minutes, s_per_step, loss, params)}."""
    d = _dir(folder)
    rows, v = [], {}
    for name in runs:
        cfg = _need(d / f"{name}.config.json", script)
        log = [r for r in read_log(d / f"{name}.metrics.jsonl") if "loss" in r]
        last = log[-1]
        steps, minutes = int(last["step"]), float(last["time"]) / 60
        v[name] = dict(steps=steps, minutes=minutes, s_per_step=60 * minutes / steps,
                       loss=float(last["loss"]), preset=cfg["net"]["preset"])
        rows.append([cfg["net"]["preset"], f"{steps:,}", f"{minutes:.1f}",
                     f"{60 * minutes / steps:.2f}", f"{last['loss']:.4f}"])
    return Table(["network", "steps", "minutes", "s / step", "final loss"], rows, v)


def evals_table(folder=FOLDER) -> Table:
    """One row per evaluation, by sampling compute: label, block evaluations per image, FID,
    KID, precision, recall, sampling ms per image. ``values``: ``evals`` {name: dict(label,
    blocks, fid, kid, precision, recall, ms, method, steps, options, png)}, ``fid_key``."""
    d = _dir(folder)
    evs = {}
    for f in evaluation_files(d):
        ev = read_json(f)
        if ev is None or "method" not in ev:
            continue
        fid_key = next(k for k in ev if k.startswith("FID@"))
        evs[f.stem] = dict(label=eval_label(ev), blocks=block_evaluations(ev), fid=value(ev, "FID"),
                           kid=value(ev, "KID"), precision=value(ev, "precision"),
                           recall=value(ev, "recall"), method=ev["method"], steps=int(ev["steps"]),
                           options=ev.get("sample_options") or {},
                           ms=1000 * float(ev["sampling_seconds"]) / _n_samples(ev, fid_key),
                           png=str(d / f"{f.stem}.png"), fid_key=fid_key)
    if not evs:
        raise FileNotFoundError(f"no evaluations in results/{folder}: run {SCRIPT} to write them")
    order = sorted(evs, key=lambda k: (evs[k]["blocks"], evs[k]["method"] == "fpdm", k))
    rows = [[evs[k]["label"], evs[k]["blocks"], evs[k]["fid"], evs[k]["precision"],
             evs[k]["recall"], f"{evs[k]['ms']:.1f}"] for k in order]
    fid_key = evs[order[0]]["fid_key"]
    return Table(["sampling", "blocks / image", fid_key, "precision", "recall", "ms / image"],
                 rows, dict(evals={k: evs[k] for k in order}, fid_key=fid_key), digits=3)


def _n_samples(ev: dict, fid_key: str) -> int:
    """The sample count of an evaluation (its FID key's suffix, e.g. FID@500 or FID@1k)."""
    n = fid_key.split("@")[1]
    return int(float(n[:-1]) * 1000) if n.endswith("k") else int(n)


def benchmark_table(bench: dict) -> Table:
    """benchmarks/fixed_point.json: per pair, the DiT's and the FPDM's parameters, training
    memory (the peak of one step plus the state kept between steps: weights, gradients, AdamW's
    moments; MiB), training and sampling images/s, and FPDM ÷ DiT. ``values``: ``pairs`` {name:
    dict(params, memory, memory_peak, train_images_per_s, sample_images_per_s (ratios), batch,
    k, dit_depth)}, ``xl`` dict(dit_params, fpdm_params, ratio)."""
    rows, pairs = [], {}
    for p in bench["pairs"]:
        d, f, r = p["dit"], p["fpdm"], p["ratios"]
        pairs[p["name"]] = dict(params=r["params"], memory=r["train_memory_with_state"],
                                memory_peak=r["train_memory"],
                                train_images_per_s=r["train_images_per_s"],
                                sample_images_per_s=r["sample_images_per_s"], batch=p["batch"],
                                k=tuple(p["train_iterations"]),
                                dit_depth=d["net"].get("depth"))
        k1, k2 = p["train_iterations"]
        for who, m in ((f"DiT, {d['net'].get('depth', '?')} blocks", d),
                       (f"FPDM, k1 = {k1}, k2 = {k2}", f)):
            rows.append([p["name"], who, f"{m['params'] / 1e6:.2f}M",
                         f"{m['train']['total_mb']:.0f}", f"{m['train']['images_per_s']:.1f}",
                         f"{m['sample']['images_per_s']:.0f}"])
        rows.append([p["name"], "FPDM ÷ DiT", fmt(r["params"], 3), fmt(r["train_memory_with_state"], 3),
                     fmt(r["train_images_per_s"], 3), fmt(r["sample_images_per_s"], 3)])
    xl = bench["release_scale"]
    rows.append(["DiT-XL/2 width", "FPDM-XL/2 ÷ DiT-XL/2",
                 f"{xl['fpdm']['params'] / 1e6:.1f}M ÷ {xl['dit']['params'] / 1e6:.1f}M "
                 f"= {fmt(xl['ratio'], 3)}", "—", "—", "—"])
    return Table(["pair", "network", "parameters", "training memory (MB)", "train img/s",
                  "sample img/s"], rows,
                 dict(pairs=pairs, xl=dict(dit_params=xl["dit"]["params"],
                                           fpdm_params=xl["fpdm"]["params"], ratio=xl["ratio"])))


# --- verdicts -----------------------------------------------------------------------------------
def ratio_verdict(ratio: float, target: float, what: str) -> Verdict:
    """A cost target: held if FPDM ÷ DiT ≤ target, did not hold otherwise (no quality gate)."""
    rule = f"held if FPDM's {what} ≤ {fmt(target, 2)} × the matched DiT's"
    return Verdict("held" if ratio <= target else "did not hold", f"{fmt(ratio, 3)}×", rule)


def better_verdict(fid_ref: float, fid: float, recall: dict[str, float], ref: str, other: str,
                   tol: float = CLOSE_FID_TOL) -> Verdict:
    """`other` is better than `ref`: held if FID(other) < (1 − tol) × FID(ref); partly if within
    ±tol (comparable); did not hold otherwise; behind the quality gate."""
    rule = (f"{GATE}; held if {other}'s FID < {fmt(1 - tol)} × {ref}'s, partly if within "
            f"±{tol:.0%}")
    fids = {ref: fid_ref, other: fid}
    if not _testable(fids, recall):
        return _not_testable(fids, recall, str, rule)
    text = f"{other} {fmt(fid)} against {ref} {fmt(fid_ref)}"
    if fid < (1 - tol) * fid_ref:
        return Verdict("held", text, rule)
    return Verdict("partly" if fid <= (1 + tol) * fid_ref else "did not hold", text, rule)
