"""Chapter 7 (Relay Diffusion): the committed full runs and the benchmark as tables, and the
verdicts drawn from them.

``scripts/run_ch07_full.py`` writes ``results/ch07_full/``: per training run (``stage1``,
``stage2``, ``edm32``) ``NAME.config.json`` and ``NAME.metrics.jsonl``, per evaluation
``NAME.json`` (FID, KID, precision/recall, the steps, the relay's ``sample_options``) and
``NAME.png``; ``benchmarks/relay.py`` writes ``results/benchmarks/relay.json``. A relay
evaluation's ``nfe_per_image`` counts stage 2 only; its stage-1 calls are 2A − 1 for A Heun steps
of the model in ``sample_options["stage1"]``, at that model's resolution.
"""
from __future__ import annotations

import json
from pathlib import Path

from pdlib.book import REPO_ROOT, evaluation_files, fmt, read_json
from pdlib.book.ch04 import CLOSE_FID_TOL, close_verdict, worse_verdict
from pdlib.book.ch06 import _n_samples, better_verdict, training_table as _training_table
from pdlib.book.results import Table, _dir, value

__all__ = ["FOLDER", "SCRIPT", "stage1_resolution", "eval_nfe", "eval_label", "training_table",
           "evals_table", "benchmark_table", "time_verdict", "better_verdict", "close_verdict", "worse_verdict",
           "CLOSE_FID_TOL"]

FOLDER, SCRIPT = "ch07_full", "scripts/run_ch07_full.py"
RUNS = ("stage1", "stage2", "edm32")


def stage1_resolution(path: str) -> int:
    """The resolution of a relay's stage-1 model: an export's config metadata, or a full run's
    committed config (runs/ch07_full/NAME/latest.pt → results/ch07_full/NAME.config.json)."""
    p = Path(path)
    if p.suffix == ".safetensors":
        from pdlib.pretrained import read_metadata
        cfg = json.loads(read_metadata(p if p.is_absolute() else REPO_ROOT / p)["config"])
    else:
        cfg = read_json(_dir(FOLDER) / f"{p.parent.name}.config.json")
        if cfg is None:
            raise FileNotFoundError(f"no committed config for the stage-1 run {path!r}")
    return int(cfg["data"]["resolution"])


def eval_nfe(ev: dict) -> tuple[int, int]:
    """(network calls per image below the final resolution, at it): EDM's counted calls, or a
    relay's stage-1 calls (2A − 1 Heun calls at the stage-1 model's resolution) and its counted
    stage-2 calls."""
    high = int(round(float(ev["nfe_per_image"])))
    if ev["method"] != "relay":
        return 0, high
    o = ev["sample_options"]
    low = 2 * int(o["stage1_steps"]) - 1
    if stage1_resolution(o["stage1"]) == int(ev["resolution"]):
        return 0, high + low
    return low, high


def eval_label(name: str, ev: dict) -> str:
    """'EDM, 18 steps', 'relay 9 + 9', 'relay 9 + 9, s_noise 0' or 'ch04-edm 18 + relay 9'."""
    if ev["method"] != "relay":
        base = "chapter 4's EDM" if "ch04" in str(ev["checkpoint"]) else "EDM"
        return f"{base}, {ev['steps']} steps"
    o = ev["sample_options"]
    if stage1_resolution(o["stage1"]) == int(ev["resolution"]):
        return f"chapter 4's EDM, {o['stage1_steps']} steps, + relay {ev['steps']}"
    parts = [f"relay {o['stage1_steps']} + {ev['steps']}"]
    for key, label in (("s_noise", "s_noise"), ("s_block", "s_block"),
                       ("truncation_sigma", "truncation σ")):
        if key in o:
            parts.append(f"{label} {fmt(o[key])}")
    return ", ".join(parts)


def training_table(folder=FOLDER, runs=RUNS) -> Table:
    """One row per training run (chapter 6's table): network, steps, minutes, s / step, loss."""
    t = _training_table(folder, runs, SCRIPT)
    names = {"stage1": "stage 1: EDM 8×8", "stage2": "stage 2: relay 32×32",
             "edm32": "single-stage EDM 32×32"}
    rows = [[names.get(n, n)] + r[1:] for n, r in zip(runs, t.rows)]
    return Table(["run"] + t.header[1:], rows, t.values)


def evals_table(folder=FOLDER) -> Table:
    """One row per evaluation, by total NFE: label, NFE below 32×32, NFE at 32×32, FID,
    precision, recall, ms per image. ``values``: ``evals`` {name: dict(label, nfe_low,
    nfe_high, nfe, fid, kid, precision, recall, ms, options, png)}, ``fid_key``."""
    d = _dir(folder)
    evs = {}
    for f in evaluation_files(d):
        ev = read_json(f)
        if ev is None or "method" not in ev:
            continue
        fid_key = next(k for k in ev if k.startswith("FID@"))
        low, high = eval_nfe(ev)
        evs[f.stem] = dict(label=eval_label(f.stem, ev), nfe_low=low, nfe_high=high,
                           nfe=low + high, fid=value(ev, "FID"), kid=value(ev, "KID"),
                           precision=value(ev, "precision"), recall=value(ev, "recall"),
                           ms=1000 * float(ev["sampling_seconds"]) / _n_samples(ev, fid_key),
                           options=ev.get("sample_options") or {}, png=str(d / f"{f.stem}.png"),
                           fid_key=fid_key)
    if not evs:
        raise FileNotFoundError(f"no evaluations in results/{folder}: run {SCRIPT} to write them")
    order = sorted(evs, key=lambda k: (evs[k]["nfe"], k))
    rows = [[evs[k]["label"], evs[k]["nfe_low"], evs[k]["nfe_high"], evs[k]["fid"],
             evs[k]["precision"], evs[k]["recall"], f"{evs[k]['ms']:.0f}"] for k in order]
    fid_key = evs[order[0]]["fid_key"]
    return Table(["sampling", "NFE at 8×8", "NFE at 32×32", fid_key, "precision", "recall",
                  "ms / image"], rows, dict(evals={k: evs[k] for k in order}, fid_key=fid_key),
                 digits=3)


def benchmark_table(bench: dict) -> Table:
    """benchmarks/relay.json: per configuration the NFE at each resolution and the ms per image;
    per pair the time ratio relay ÷ EDM. ``values``: ``configs`` {name: dict(nfe_low, nfe_high,
    ms)}, ``ratios`` {"relay ÷ edm": ratio}."""
    rows, configs = [], {}
    for name, c in bench["configs"].items():
        configs[name] = dict(nfe_low=c["nfe_stage1"], nfe_high=c["nfe_high"],
                             ms=1000 * c["seconds_per_image"])
        rows.append([name, f"{c['nfe_stage1']:.0f}", f"{c['nfe_high']:.0f}",
                     f"{1000 * c['seconds_per_image']:.1f}"])
    ratios = {f"{p['relay']} ÷ {p['edm']}": p["time_ratio"] for p in bench["pairs"]}
    for k, r in ratios.items():
        rows.append([f"time {k}", "", "", fmt(r, 3)])
    return Table(["configuration", "NFE at 8×8", "NFE at 32×32", "ms / image"], rows,
                 dict(configs=configs, ratios=ratios))


def time_verdict(ratio: float, target: float = 1.0) -> "Verdict":
    """A cost claim: held if the relay's time per image ≤ target × EDM's at equal total calls."""
    from pdlib.book.results import Verdict
    rule = f"held if the relay's time per image ≤ {fmt(target, 2)} × single-stage EDM's"
    return Verdict("held" if ratio <= target else "did not hold", f"{fmt(ratio, 3)}×", rule)
