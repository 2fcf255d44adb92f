"""Chapter 5 (patch-by-patch generation): the committed full runs and the memory benchmark as
tables, and the verdicts drawn from them.

``scripts/run_ch05_full.py`` writes ``results/ch05_full/``: per training run ``NAME.config.json``
and ``NAME.metrics.jsonl``, per evaluation ``NAME.json`` (FID, KID, precision/recall and the seam
scores ``seam@2``, ``seam@4``) and ``NAME.png``; ``benchmarks/tiled_memory.py`` writes
``results/benchmarks/tiled_memory.json``. The tables follow ``pdlib.book.results``: a
:class:`~pdlib.book.results.Table` with ``values`` for the prose, verdict functions whose rules
(thresholds included) the claims table shows, the quality ones behind the quality gate.
"""
from __future__ import annotations

import re

from pdlib.book import evaluation_files, fmt, metric, read_json
from pdlib.book.ch04 import CLOSE_FID_TOL, close_verdict, run_info, worse_verdict
from pdlib.book.results import GATE, Table, Verdict, _dir, _need, _not_testable, _testable, value

__all__ = ["FOLDER", "SCRIPT", "SEAM_TOL", "CLOSE_FID_TOL", "NO_SAVING_MIN", "runs_table",
           "steps_table", "memory_table", "memory_verdict", "no_saving_verdict", "seam_verdict",
           "lower_seam_verdict", "pair_verdict", "close_verdict", "worse_verdict", "run_label"]

FOLDER, SCRIPT = "ch05_full", "scripts/run_ch05_full.py"
# CLOSE_FID_TOL (chapter 4's, 0.10): "comparable quality" is an FID at most 10% above the reference's
SEAM_TOL = 1.10          # "no visible seams": seam score at most 1.1 (1 = as smooth as real images)
NO_SAVING_MIN = 0.9      # the release's batched layout "saves no memory": its ratio ≥ 0.9
_CHECKPOINT = re.compile(r"-k\d+$")      # NAME-k{step}: an earlier checkpoint's evaluation


def run_label(cfg: dict) -> str:
    """'untiled', or 'N×N' with what the tiles are told ('GCC + position', 'GCC', …), and the
    training's tiles per image when it is not all of them."""
    N = int(cfg.get("grid", 1))
    if N == 1 and not cfg.get("gcc") and not cfg.get("position"):
        label = "untiled"
    else:
        told = [w for w, k in (("GCC", "gcc"), ("position", "position")) if cfg.get(k)]
        label = f"{N}×{N}, " + (" + ".join(told) if told else "neither")
    if N > 1 and cfg.get("tiles_per_image", N * N) != N * N:
        label += f", {cfg['tiles_per_image']} tile per image"
    if cfg.get("precond") == "vp":
        label += ", the release's loss"
    return label


def _seam(ev: dict, N: int) -> float | None:
    v = ev.get(f"seam@{N}")
    return None if v is None else float(v)


def runs_table(folder=FOLDER) -> Table:
    """One row per evaluated run: what it is, seed, steps, minutes of training, sampler, FID,
    precision/recall (KID in ``values``), and the seam scores on the 2×2 and 4×4 borders (``NAME-long``: NAME trained
    on to more steps). ``values``: ``runs`` {name: dict(label, grid, seed, steps, minutes, fid,
    kid, precision, recall, seam2, seam4, png, config)}, ``fid_key``, ``n_samples``, ``n_ref``,
    ``steps`` and ``batch`` (of n1-s0, the untiled run), ``sampler`` {name: 'heun-10'}."""
    d = _dir(folder)
    files = sorted((f for f in evaluation_files(d) if not _CHECKPOINT.search(f.stem)),
                   key=lambda f: (f.stem.removesuffix("-long"), f.stem.endswith("-long")))
    if not files:
        _need(d / "n1-s0.json", SCRIPT)
    runs, rows, sampler = {}, [], {}
    for f in files:
        ev = read_json(f)
        info = run_info(f.stem, folder)
        cfg = info["config"]
        r = dict(label=run_label(cfg), grid=int(cfg.get("grid", 1)), seed=cfg.get("seed"),
                 minutes=info["minutes"], steps=info["steps"], fid=value(ev, "FID"),
                 kid=value(ev, "KID"), precision=value(ev, "precision"),
                 recall=value(ev, "recall"), seam2=_seam(ev, 2), seam4=_seam(ev, 4),
                 png=d / f"{f.stem}.png", config=cfg)
        runs[f.stem] = r
        sampler[f.stem] = f"{ev['sampler']}-{ev['steps']}"
        rows.append([r["label"], r["seed"], f"{r['steps']:,}", f"{r['minutes']:.1f}", sampler[f.stem],
                     f"{r['fid']:.1f}", f"{r['precision']:.3f} / {r['recall']:.3f}",
                     "—" if r["seam2"] is None else f"{r['seam2']:.2f}",
                     "—" if r["seam4"] is None else f"{r['seam4']:.2f}"])
    first = read_json(files[0])
    fid_key = metric(first, "FID")[0]
    header = ["model", "seed", "steps", "minutes", "sampler", fid_key, "precision / recall",
              "seam 2×2", "seam 4×4"]
    any_run = runs.get("n1-s0") or next(iter(runs.values()))
    return Table(header, rows, dict(runs=runs, fid_key=fid_key, n_samples=first["n_samples"],
                                    n_ref=first["n_ref"], steps=any_run["steps"],
                                    batch=any_run["config"].get("batch_size"), sampler=sampler))


def steps_table(names=("n1-s0", "n2-s0"), folder=FOLDER) -> Table:
    """FID and seam score against training steps: each run's checkpoints (``NAME-k{step}.json``),
    its final evaluation, and that of ``NAME-long`` (the run trained on). ``values``: ``fid``, ``seam``, ``recall`` ({name: {step: value}}),
    ``label`` ({name: run_label}), ``fid_key``."""
    d = _dir(folder)
    fid, seam, recall, label, fid_key = {}, {}, {}, {}, None
    for name in names:
        final = read_json(d / f"{name}.json")
        if final is None:
            continue
        info = run_info(name, folder)
        label[name] = run_label(info["config"])
        N = max(int(info["config"].get("grid", 1)), 2)
        points = {int(f.stem.rsplit("-k", 1)[1]): read_json(f)
                  for f in evaluation_files(d, f"{name}-k*.json") if _CHECKPOINT.search(f.stem)}
        points[info["steps"]] = final
        if (long := read_json(d / f"{name}-long.json")) is not None:
            points[run_info(f"{name}-long", folder)["steps"]] = long
        fid[name] = {s: value(ev, "FID") for s, ev in sorted(points.items())}
        recall[name] = {s: value(ev, "recall") for s, ev in sorted(points.items())}
        seam[name] = {s: _seam(ev, N) for s, ev in sorted(points.items())}
        fid_key = metric(final, "FID")[0]
    if not fid:
        _need(d / f"{names[0]}.json", SCRIPT)
    steps = sorted({s for v in fid.values() for s in v})
    header = ["step"] + [f"{fid_key}, {label[n]}" for n in fid] + [f"seam, {label[n]}" for n in fid]
    rows = [[f"{s:,}"] + [("—" if s not in fid[n] else f"{fid[n][s]:.1f}") for n in fid]
            + [("—" if seam[n].get(s) is None else f"{seam[n][s]:.2f}") for n in fid] for s in steps]
    return Table(header, rows, dict(fid=fid, seam=seam, recall=recall, label=label,
                                    fid_key=fid_key))


# --- the memory benchmark -----------------------------------------------------------------------
def memory_table(bench: dict) -> Table:
    """benchmarks/tiled_memory.py's measurements: per grid, the peak memory (MB) and seconds per
    image of sampling tile by tile (chunk 1) and with the release's batched layout (chunk N²), and
    of a training step on one tile per image, each with its ratio to the untiled network.
    ``values``: ``seq``, ``batched``, ``train`` ({N: ratio}), ``mb`` ({(layout, N): MB}),
    ``seconds`` ({(layout, N): s per image}), ``targets`` ({N: target}), ``kind`` (what memory
    was measured), ``resolution``, ``batch``, ``channels``, ``preset``, ``device``, ``threads``."""
    seq, bat, trn, mb, sec = {}, {}, {}, {}, {}
    layouts = {"untiled": ("seq", "batched"), "sequential": ("seq",), "batched": ("batched",)}
    ratios = {"seq": seq, "batched": bat}
    for r in bench["sampling"]:
        N = int(r["grid"])
        for layout in layouts[r["layout"]]:          # N = 1 is the reference of both layouts
            ratios[layout][N] = float(r["mem_ratio_vs_untiled"])
            mb[layout, N], sec[layout, N] = float(r["peak_mem_mb"]), float(r["s_per_image"])
    for r in bench["training"]:
        N = int(r["grid"])
        trn[N], mb["train", N] = float(r["mem_ratio_vs_untiled"]), float(r["peak_mem_mb"])
    rows = [[f"{N}×{N}", f"{mb['seq', N]:.0f}", f"{seq[N]:.2f}",
             "—" if N == 1 else f"{mb['batched', N]:.0f}", "—" if N == 1 else f"{bat[N]:.2f}",
             f"{mb['train', N]:.0f}", f"{trn[N]:.2f}", f"{sec['seq', N]:.3f}",
             "—" if N == 1 else f"{sec['batched', N]:.3f}"] for N in sorted(seq)]
    header = ["grid", "sampling, tile by tile (MB)", "÷ untiled", "sampling, all tiles batched (MB)",
              "÷ untiled", "training step (MB)", "÷ untiled", "s / image, tile by tile",
              "s / image, batched"]
    targets = {}
    for key, t in bench["targets"].items():
        if "met" in t and key.endswith("sequential sample memory"):
            targets[int(key.split()[0][2:])] = float(str(t["target"]).split()[-1])
    st = bench.get("settings", {})
    machine = bench.get("machine", {})
    device = str(machine.get("device", "cpu"))
    if device == "cpu":
        device = f"CPU ({machine.get('cpu', 'unknown')}, {st.get('threads')} thread(s))"
    return Table(header, rows, dict(seq=seq, batched=bat, train=trn, mb=mb, seconds=sec,
                                    targets=targets, kind=bench.get("memory_kind"),
                                    resolution=st.get("resolution"), batch=st.get("batch"),
                                    channels=st.get("channels"), preset=st.get("preset"),
                                    threads=st.get("threads"), device=device))


def memory_verdict(ratio: float, target: float, N: int) -> Verdict:
    """"N×N tiles cut the peak memory": held if the tile-by-tile sampling peak ÷ the untiled
    network's ≤ target (the benchmark's target, from the issue: 0.55 at 2×2, 0.3 at 4×4)."""
    rule = f"held if the {N}×{N} tile-by-tile peak ÷ the untiled peak ≤ {fmt(target)}"
    return Verdict("held" if ratio <= target else "did not hold", f"{ratio:.2f}×", rule)


def no_saving_verdict(ratios: dict[int, float], floor: float = NO_SAVING_MIN) -> Verdict:
    """"The release's batched layout saves no memory": held if every grid's batched peak ÷ the
    untiled peak ≥ floor."""
    rule = f"held if every grid's batched peak ÷ the untiled peak ≥ {fmt(floor)}"
    text = ", ".join(f"{N}×{N} {r:.2f}×" for N, r in sorted(ratios.items()) if N > 1)
    held = all(r >= floor for N, r in ratios.items() if N > 1)
    return Verdict("held" if held else "did not hold", text, rule)


def seam_verdict(seam: float | None, fid: dict[str, float], recall: dict[str, float], name: str,
                 tol: float = SEAM_TOL) -> Verdict:
    """"No visible seams": held if `name`'s seam score on its own tile borders ≤ tol (1 = as
    smooth as the same lines of real images); behind the quality gate (a blur of noise has no
    seams either)."""
    rule = f"{GATE}; held if {name}'s seam score on its tile borders ≤ {fmt(tol)}"
    if seam is None:
        return Verdict("inconclusive", "no seam score measured", rule)
    if not _testable(fid, recall):
        return _not_testable(fid, recall, str, rule)
    return Verdict("held" if seam <= tol else "did not hold", f"seam score {seam:.2f}", rule)


def lower_seam_verdict(seam_ref: float, seam_other: float, fid: dict[str, float],
                       recall: dict[str, float], ref: str, other: str) -> Verdict:
    """"`ref` has fewer seams than `other`": held if its seam score is lower; behind the quality
    gate on the two compared models."""
    rule = f"{GATE}; held if {ref}'s seam score < {other}'s"
    if not _testable(fid, recall):
        return _not_testable(fid, recall, str, rule)
    text = f"{ref} {seam_ref:.2f} against {other} {seam_other:.2f}"
    return Verdict("held" if seam_ref < seam_other else "did not hold", text, rule)


def pair_verdict(runs: dict, ref: str, other: str, verdict=close_verdict) -> Verdict | None:
    """`verdict` (close_verdict, worse_verdict) on two runs of ``runs_table().values["runs"]``,
    named by their labels; None when one of them is missing."""
    if ref not in runs or other not in runs:
        return None
    a, b = runs[ref], runs[other]
    recall = {a["label"]: a["recall"], b["label"]: b["recall"]}
    return verdict(a["fid"], b["fid"], recall, a["label"], b["label"])
