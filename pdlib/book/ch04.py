"""Chapter 4 (Patch Diffusion): the committed full runs as tables, and the verdicts drawn from them.

``scripts/run_ch04_full.py`` writes ``results/ch04_full/``: per training run ``NAME.config.json``
and ``NAME.metrics.jsonl``, per evaluation ``NAME.json`` and ``NAME.png`` (the FID-against-time
runs also ``NAME-k{step}.json`` for their earlier checkpoints). The tables here follow
``pdlib.book.results``: a :class:`~pdlib.book.results.Table` with ``values`` for the prose, and
verdict functions whose rules (thresholds included) the claims table shows, each behind the same
quality gate (``results.recognisable``).
"""
from __future__ import annotations

from pdlib.book import evaluation_files, fmt, metric, read_json, read_log
from pdlib.book.results import (FID_MAX, GATE, Table, Verdict, _dir, _need,
                                _not_testable, _testable, value)

__all__ = ["FOLDER", "SCRIPT", "REAL_P", "CLOSE_FID_TOL", "SPEEDUP_CLAIM", "FAIL_FACTOR",
           "BENCH_MAX", "full_run_names", "evaluations_table", "benchmark_table", "subtable", "run_info", "real_p_table", "fid_time_table", "time_to_fid", "pair_table",
           "close_verdict", "fails_verdict", "speedup_verdict", "worse_verdict"]

FOLDER, SCRIPT = "ch04_full", "scripts/run_ch04_full.py"
REAL_P = (1.0, 0.75, 0.5, 0.25, 0.0)
CLOSE_FID_TOL = 0.10     # "comparable FID": at most 10% above the reference's
SPEEDUP_CLAIM = 2.0      # the paper's "≥ 2× faster": time to the reference's FID, ratio
FAIL_FACTOR = 2.0        # "p = 0 fails": its FID at least twice p = 1's (the paper: 8.7×)
BENCH_MAX = 1.05         # the benchmark's target: a real_p = 0.5 step ≤ 1.05× its FLOP prediction


def _rp(p: float) -> str:
    return f"rp{p:g}"


def run_info(name: str, folder=FOLDER) -> dict:
    """A training run's facts from its log and config: steps, kimg (images seen, thousands),
    minutes of training, seconds per step, images per step (mean, in batches), patch sizes,
    batch, and ``config`` (its fields by name, the sections flattened)."""
    d = _dir(folder)
    log = read_log(d / f"{name}.metrics.jsonl")
    raw = read_json(d / f"{name}.config.json") or {}
    # the sectioned config (version 2) flattened: field names are unique across its sections
    cfg = {k: v for sec in raw.values() if isinstance(sec, dict) for k, v in sec.items()}
    last = log[-1]
    return dict(steps=last["step"], kimg=last["kimg"], minutes=last["time"] / 60,
                s_per_step=last["time"] / last["step"],
                images_per_step=last["kimg"] * 1000 / last["step"] / cfg.get("batch_size", 1),
                batch=cfg.get("batch_size"), preset=cfg.get("preset"),
                patch_sizes=cfg.get("patch_sizes"), log=log, config=cfg)


def full_run_names(folder=FOLDER) -> list[str]:
    """The training runs of the full runs (those with a metrics log)."""
    return sorted(f.name[:-len(".metrics.jsonl")] for f in _dir(folder).glob("*.metrics.jsonl"))


def evaluations_table(folder=FOLDER) -> Table:
    """Every evaluation of the full runs: the checkpoint's step, the run's images seen by then
    and its training minutes, sampler, FID, KID, precision and recall. ``values``: ``n``."""
    d = _dir(folder)
    files = evaluation_files(d)
    if not files:
        _need(d / "rp1-s0.json", SCRIPT)
    rows = []
    for f in files:
        ev = read_json(f)
        run = f.stem.rsplit("-k", 1)[0]
        log = read_log(d / f"{run}.metrics.jsonl")
        step = int(f.stem.rsplit("-k", 1)[1]) if "-k" in f.stem else log[-1]["step"]
        rec = next(r for r in log if r["step"] == step)
        m = _metrics(ev)
        rows.append([f.stem, f"{step:,}", f"{rec['kimg'] * 1000:,.0f}", f"{rec['time'] / 60:.1f}",
                     f"{ev['sampler']}-{ev['steps']}", f"{m['fid']:.1f}", f"{m['kid']:.4f}",
                     f"{m['precision']:.3f} / {m['recall']:.3f}"])
    fid_key = metric(read_json(files[0]), "FID")[0]
    header = ["evaluation", "step", "images seen", "minutes", "sampler", fid_key, "KID",
              "precision / recall"]
    return Table(header, rows, dict(n=len(rows)))


def benchmark_table(bench: dict, tol: float = BENCH_MAX) -> Table:
    """``benchmarks/patch_diffusion.py``'s U-Net rows: per patch size, the cost of a step with one
    crop per image, and the FLOPs of a step with k crops per image against a full-size step.
    ``values``: ``predicted`` and ``measured`` (real_p = 0.5 step ÷ full-size step, by FLOPs and
    by time), ``ratio`` (measured ÷ predicted), ``target`` (tol), ``verdict``, ``met_word``,
    ``batch``, ``resolution``."""
    net = next(n for n in bench["nets"] if n["net"] == "unet")
    rows = [[r["patch_size"], f"{r['gflop_per_step']:.1f}", f"{r['step_s']:.3f}",
             f"{r['time_vs_full']:.3f}", f"{r['images_per_s']:.1f}", f"{r['peak_mem_mb']:.0f}",
             r["multiplier"], f"{r['flops_at_multiplier_vs_full']:.3f}"] for r in net["rows"]]
    header = ["patch side s", "GFLOP / step", "step (s)", "time ÷ full", "images / s",
              "peak MB", "k", "FLOPs at k crops ÷ full"]
    ratio = net["measured_over_predicted"]
    rule = f"held if measured ÷ FLOP-predicted ≤ {fmt(tol)}"
    v = Verdict("held" if ratio <= tol else "did not hold", f"{ratio:.3f}", rule)
    return Table(header, rows, dict(predicted=net["predicted_ratio"], measured=net["measured_ratio"],
                                    ratio=ratio, target=tol, verdict=v,
                                    met_word="met" if v.word == "held" else "not met",
                                    batch=net["batch"], resolution=net["resolution"]))


def subtable(table: Table, labels) -> Table:
    """The rows of a ``pair_table`` that belong to these comparison labels."""
    keep, rows, current = set(labels), [], None
    for row in table.rows:
        current = row[0] or current
        if current in keep:
            rows.append(row)
    return Table(table.header, rows, table.values)


def _metrics(ev: dict) -> dict:
    return {n: value(ev, k) for n, k in (("fid", "FID"), ("kid", "KID"),
                                         ("precision", "precision"), ("recall", "recall"))}


def _eval(d, name: str) -> dict:
    return _need(d / f"{name}.json", SCRIPT)


def real_p_table(folder=FOLDER, ps=REAL_P, seed: int = 0) -> Table:
    """The ablation on real_p: one row per p (seed `seed`) with images seen, minutes and the
    sample metrics. ``values``: ``fid``, ``kid``, ``precision``, ``recall``, ``kimg``,
    ``minutes``, ``images_per_step`` (dicts by p), ``png``, ``fid_key``, ``steps``, ``batch``,
    ``n_samples``, ``n_ref``, ``sampler``, ``sampler_steps``."""
    d = _dir(folder)
    runs = {p: r for p in ps if (r := read_json(d / f"{_rp(p)}-s{seed}.json")) is not None}
    if not runs:
        _need(d / f"{_rp(ps[0])}-s{seed}.json", SCRIPT)
    info = {p: run_info(f"{_rp(p)}-s{seed}", folder) for p in runs}
    first = next(iter(runs.values()))
    v = {n: {p: _metrics(r)[n] for p, r in runs.items()} for n in ("fid", "kid", "precision", "recall")}
    v.update({n: {p: info[p][n] for p in runs} for n in ("kimg", "minutes", "images_per_step")})
    v.update(png={p: d / f"{_rp(p)}-s{seed}.png" for p in runs}, fid_key=metric(first, "FID")[0],
             steps=info[next(iter(runs))]["steps"], batch=info[next(iter(runs))]["batch"],
             n_samples=first["n_samples"], n_ref=first["n_ref"], sampler=first["sampler"],
             sampler_steps=first["steps"])
    header = ["real_p", "images seen", "images per step", "minutes", v["fid_key"], "KID",
              "precision", "recall"]
    rows = [[f"{p:g}", f"{v['kimg'][p] * 1000:,.0f}", f"{v['images_per_step'][p]:.1f} × B",
             f"{v['minutes'][p]:.1f}", f"{v['fid'][p]:.1f}", f"{v['kid'][p]:.4f}",
             f"{v['precision'][p]:.3f}", f"{v['recall'][p]:.3f}"] for p in runs]
    return Table(header, rows, v)


def time_to_fid(curve: list[tuple[float, float]], target: float) -> float | None:
    """The first training time at which a curve [(minutes, FID), …] reaches FID ≤ target, by linear
    interpolation between its checkpoints; None if it never does."""
    prev = None
    for t, f in curve:
        if f <= target:
            if prev is None or prev[1] == f:
                return float(t)
            (t0, f0) = prev
            return float(t0 + (f0 - target) / (f0 - f) * (t - t0))
        prev = (t, f)
    return None


def fid_time_table(folder=FOLDER, ps=(1.0, 0.5), seeds=(0, 1)) -> Table:
    """FID against training time: each (p, seed) run's checkpoints (``-k{step}`` files and the
    final one) with the training minutes at that step (its metrics log). The target FID of a seed
    is the higher of its runs' final FIDs, the best quality that both reach (p = ps[0]'s when
    p = ps[1] ends better, the paper's framing); the table gives, per seed, the minutes each p
    needs to reach it and their ratio, the speed-up of ps[1] over ps[0] (< 1: slower). ``values``: ``curves`` {(p, seed): [(minutes, FID), …]},
    ``recall`` {(p, seed): final recall}, ``fid`` {(p, seed): final FID}, ``target``, ``time``
    {(p, seed): minutes or None}, ``speedup`` {seed: ratio or None}, ``fid_key``."""
    d = _dir(folder)
    curves, recall, fid, fid_key = {}, {}, {}, None
    for p in ps:
        for s in seeds:
            name = f"{_rp(p)}-s{s}"
            if read_json(d / f"{name}.json") is None:
                continue
            log = {r["step"]: r["time"] / 60 for r in read_log(d / f"{name}.metrics.jsonl")}
            points = []
            for f in sorted(evaluation_files(d, f"{name}-k*.json"),
                            key=lambda f: int(f.stem.rsplit("-k", 1)[1])):
                step = int(f.stem.rsplit("-k", 1)[1])
                points.append((log[step], value(read_json(f), "FID")))
            final = _eval(d, name)
            points.append((max(log.values()), value(final, "FID")))
            curves[p, s], fid[p, s], recall[p, s] = points, value(final, "FID"), value(final, "recall")
            fid_key = metric(final, "FID")[0]
    if not curves:
        _need(d / f"{_rp(ps[0])}-s{seeds[0]}.json", SCRIPT)
    target = {s: max(fid[p, s] for p in ps) for s in seeds if all((p, s) in fid for p in ps)}
    time = {(p, s): time_to_fid(c, target[s]) for (p, s), c in curves.items() if s in target}
    speedup = {}
    for s in target:
        ref = time.get((ps[0], s))
        for p in ps[1:]:
            t = time.get((p, s))
            speedup[s] = None if t is None or ref is None or t <= 0 else ref / t
    header = ["seed", f"target {fid_key} (the worse final)"] + [
        f"minutes to reach it, real_p = {p:g}" for p in ps] + ["speed-up"]
    rows = [[s, f"{target[s]:.1f}"] + [("not reached" if time.get((p, s)) is None
                                        else f"{time[p, s]:.2f}") for p in ps]
            + ["—" if speedup.get(s) is None else f"{speedup[s]:.2f}×"] for s in target]
    return Table(header, rows, dict(curves=curves, recall=recall, fid=fid, target=target,
                                    time=time, speedup=speedup, fid_key=fid_key))


def pair_table(pairs: dict[str, tuple[str, str]], folder=FOLDER) -> Table:
    """Comparisons of two runs each, {label: (reference run, other run)}: both runs' sample
    metrics, images seen and minutes. ``values``: {label: {"ref": metrics, "other": metrics}}
    with each metrics dict holding fid, kid, precision, recall, kimg, minutes, name; and
    ``fid_key``."""
    d = _dir(folder)
    rows, v, fid_key = [], {}, None
    for label, names in pairs.items():
        if any(read_json(d / f"{n}.json") is None for n in names):
            continue
        m = {}
        for role, n in zip(("ref", "other"), names):
            ev = _eval(d, n)
            fid_key = metric(ev, "FID")[0]
            m[role] = {**_metrics(ev), **{k: run_info(n, folder)[k] for k in ("kimg", "minutes")},
                       "name": n}
        v[label] = m
        for role in ("ref", "other"):
            r = m[role]
            rows.append([label if role == "ref" else "", r["name"], f"{r['kimg'] * 1000:,.0f}",
                         f"{r['minutes']:.1f}", f"{r['fid']:.1f}", f"{r['kid']:.4f}",
                         f"{r['precision']:.3f}", f"{r['recall']:.3f}"])
    if not v:
        _need(d / f"{next(iter(pairs.values()))[0]}.json", SCRIPT)
    header = ["comparison", "run", "images seen", "minutes", fid_key, "KID", "precision", "recall"]
    return Table(header, rows, dict(pairs=v, fid_key=fid_key))


# --- verdicts -----------------------------------------------------------------------------------
def close_verdict(fid_ref: float, fid: float, recall: dict[str, float], ref: str, other: str,
                  tol: float = CLOSE_FID_TOL) -> Verdict:
    """`other` comes close to `ref` ("comparable or better FID"): held if FID(other) ≤ (1 + tol)
    × FID(ref), did not hold otherwise; NOT_TESTABLE unless one of them passes the quality gate."""
    rule = f"{GATE}; held if {other}'s FID ≤ {fmt(1 + tol)} × {ref}'s"
    fids = {ref: fid_ref, other: fid}
    if not _testable(fids, recall):
        return _not_testable(fids, recall, str, rule)
    text = f"{other} {fmt(fid)} against {ref} {fmt(fid_ref)}"
    return Verdict("held" if fid <= (1 + tol) * fid_ref else "did not hold", text, rule)


def worse_verdict(fid_ref: float, fid: float, recall: dict[str, float], ref: str, other: str,
                  tol: float = CLOSE_FID_TOL) -> Verdict:
    """Taking something away hurts ("`other` is worse than `ref`"): held if FID(other) >
    (1 + tol) × FID(ref), did not hold otherwise; behind the quality gate."""
    rule = f"{GATE}; held if {other}'s FID > {fmt(1 + tol)} × {ref}'s"
    fids = {ref: fid_ref, other: fid}
    if not _testable(fids, recall):
        return _not_testable(fids, recall, str, rule)
    text = f"{other} {fmt(fid)} against {ref} {fmt(fid_ref)}"
    return Verdict("held" if fid > (1 + tol) * fid_ref else "did not hold", text, rule)


def fails_verdict(fid_p1: float, fid_p0: float, recall: dict[str, float],
                  factor: float = FAIL_FACTOR) -> Verdict:
    """"p = 0 fails": held if FID(p = 0) ≥ factor × FID(p = 1) or above FID_MAX while p = 1
    passes the gate; NOT_TESTABLE if p = 1 does not pass it (nothing to fail against)."""
    rule = (f"real_p = 1 passes the quality gate; held if real_p = 0's FID ≥ {fmt(factor)} × "
            f"real_p = 1's or > {FID_MAX:.0f}")
    fids = {"real_p 1": fid_p1, "real_p 0": fid_p0}
    if not _testable({"real_p 1": fid_p1}, recall):
        return _not_testable(fids, recall, str, rule)
    text = f"real_p 0 {fmt(fid_p0)} against real_p 1 {fmt(fid_p1)} ({fid_p0 / fid_p1:.1f}×)"
    held = fid_p0 >= factor * fid_p1 or fid_p0 > FID_MAX
    return Verdict("held" if held else "did not hold", text, rule)


def speedup_verdict(speedup: dict[int, float | None], fid: dict, recall: dict,
                    claim: float = SPEEDUP_CLAIM) -> Verdict:
    """"≥ 2× faster to the same FID", per seed: held if every seed's speed-up ≥ claim; partly if
    every seed's is > 1 (faster, by less); did not hold if some seed is not faster or has no
    speed-up; NOT_TESTABLE unless some final model passes the quality gate."""
    rule = (f"{GATE}; the target is the worse of the two final FIDs of a seed; held if "
            f"real_p = 0.5 reaches it ≥ {fmt(claim)}× sooner for every seed, partly if sooner "
            "for every seed")
    label = lambda k: f"real_p {k[0]:g} seed {k[1]}"      # noqa: E731
    if not _testable(fid, recall):
        return _not_testable(fid, recall, label, rule)
    if not speedup:
        return Verdict("inconclusive", "no seed with both runs", rule)
    text = "; ".join(f"seed {s}: " + ("not reached" if r is None else f"{r:.2f}×")
                     for s, r in speedup.items())
    if any(r is None or r <= 1 for r in speedup.values()):
        return Verdict("did not hold", text, rule)
    return Verdict("held" if all(r >= claim for r in speedup.values()) else "partly", text, rule)

