"""The committed results of the full runs as tables, and the verdicts the book draws from them.

Chapter 3 ("Patching the U-Net") and the results page read the files the full runs committed to
``results/`` (``scripts/run_patching_equal_time.sh`` → ``results/patching_equal_time/``,
``scripts/run_ch03_full.py`` → ``results/ch03_full/``, ``make bench`` → ``results/benchmarks/``).
Each ``*_table`` function reads one comparison and returns a :class:`Table`: its ``header`` and
``rows`` (rendered by ``pdlib.book.md_table``: numbers rounded, one cell per column) and
``values``, the numbers the prose quotes (glued into the Markdown with myst-nb) and the plots draw.

A verdict is computed, never typed: each ``*_verdict`` function takes measurements and returns a
:class:`Verdict` (a word, the reason, and the rule with its thresholds, shown in the claims
table). The book's rule: "held" needs evidence that could have shown a failure. Models too
undertrained to draw recognisable samples give a *ranking*, not a verdict on quality, so every
quality verdict first asks whether at least one compared model is recognisable
(``recognisable``: recall ≥ ``RECALL_MIN`` and FID ≤ ``FID_MAX``); if none is, the verdict is
"not testable at this scale", with the ranking that was observed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pdlib.book import REPO_ROOT, evaluation_files, fmt, md_table, metric, read_json, read_log

__all__ = [
    "RECALL_MIN", "FID_MAX", "COST_RATIO", "EQUAL_TIME_FID_TOL", "RESPACE_FID_TOL", "RMS_MAX",
    "FIDELITY_Z", "WEIGHTINGS", "LEARNED_VARIANCE_RUNS", "NOT_TESTABLE",
    "Table", "Verdict", "Claim", "value", "seed_noise", "sample_tiles", "dark_fraction",
    "equal_time_table", "weighting_table", "split_table", "guidance_table", "respacing_table",
    "learned_variance_table", "full_runs_table", "patching_benchmark_table",
    "patching_claim_table", "benchmark_targets_table", "loss_curve_table",
    "baseline_config_table", "baseline_metrics_table", "provenance_table", "provenance_summary_table",
    "results_folders", "NOT_RECORDED",
    "recognisable", "ranking", "cost_verdict", "equal_time_verdict", "ranking_only_verdict",
    "weighting_verdict", "split_verdict", "guidance_verdict", "fidelity_verdict", "rms_verdict",
    "respacing_verdict", "learned_variance_verdict", "claims_table", "glue_values",
]

# --- thresholds of the verdicts (the prose and the claims table show them) --------------------
RECALL_MIN = 0.1            # below: the samples cover almost none of the data's variety
FID_MAX = 150.0             # above: the samples are not recognisable as the data set's images
COST_RATIO = (0.8, 1.25)    # "costs about the same": a cost ratio inside this interval
EQUAL_TIME_FID_TOL = 0.10   # P > 1 keeps quality: its FID at most 10% above P = 1's
RESPACE_FID_TOL = 0.10      # few steps suffice: FID at most 10% above the most steps' FID
RMS_MAX = 0.1               # few steps suffice (short run): RMS to the most steps, pixels in [-1, 1]
FIDELITY_Z = 2.0            # a change in class fidelity counts beyond this many standard errors
NOT_TESTABLE = "not testable at this scale"
NOT_RECORDED = "not recorded"   # provenance_table: a file written before results carried it

WEIGHTINGS = ("sqrt_snr", "p2", "snr", "snr+1", "truncated_snr")
LEARNED_VARIANCE_RUNS = (   # (row label, file stem in results/ch03_full/)
    ("learned Σ, DDPM-50", "ls-s0-ddpm50"),
    ("learned Σ, v clipped to [0, 1], DDPM-50", "ls-s0-ddpm50-clipped"),
    ("learn_sigma model, fixed β̃, DDPM-50", "ls-s0-ddpm50-posterior"),
    ("fixed-variance model, β̃, DDPM-50", "w-sqrt_snr-s0-ddpm50"),
    ("fixed-variance model, DDIM-50", "w-sqrt_snr-s0"),
)


@dataclass
class Table:
    """A results table: ``markdown`` renders it; ``values`` holds the numbers behind it."""
    header: list[str]
    rows: list[list]
    values: dict = field(default_factory=dict)
    digits: int = 4

    @property
    def markdown(self) -> str:
        return md_table(self.header, self.rows, self.digits)

    def _repr_markdown_(self) -> str:
        return self.markdown

    def __repr__(self) -> str:
        return self.markdown


@dataclass(frozen=True)
class Verdict:
    """A verdict word ("held", "partly", "did not hold", "inconclusive", NOT_TESTABLE), why, and
    the rule (with its thresholds) that produced it."""
    word: str
    reason: str = ""
    rule: str = ""

    def __str__(self) -> str:
        return f"{self.word}: {self.reason}" if self.reason else self.word


@dataclass(frozen=True)
class Claim:
    """One row of a claims table: the claim, what was measured, and the verdict."""
    claim: str
    measurement: str
    verdict: Verdict


# --- reading ----------------------------------------------------------------------------------
def _dir(folder) -> Path:
    path = Path(folder)
    return path if path.is_absolute() else REPO_ROOT / "results" / path


def _need(path: Path, script: str) -> dict:
    result = read_json(path)
    if result is None:
        raise FileNotFoundError(f"{path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path}"
                                f" is missing: run {script} to write it")
    return result


def value(result: dict, name: str) -> float:
    """A number of an evaluation JSON: 'x0-MSE' (its mean over t) or a metric named without its
    sample count ('FID', 'KID', 'precision', 'recall')."""
    return float(result["x0_mse_mean"]) if name == "x0-MSE" else metric(result, name)[1]


def _short(key: str) -> str:
    return key.split("@")[0]


def _minutes(log: list[dict]) -> float:
    return log[-1]["time"] / 60 if log else float("nan")


def seed_noise(folder="ch03_full", weightings=WEIGHTINGS,
               names=("FID", "precision", "recall")) -> dict[str, float]:
    """The seed-to-seed spread: mean |seed 0 − seed 1| of each metric over the weightings trained
    with both seeds (nan where no weighting has both). The yardstick of "within seed noise"."""
    d = _dir(folder)
    pairs = [(a, b) for w in weightings
             if (a := read_json(d / f"w-{w}-s0.json")) and (b := read_json(d / f"w-{w}-s1.json"))]
    return {n: float(np.mean([abs(value(a, n) - value(b, n)) for a, b in pairs])) if pairs
            else float("nan") for n in names}


def sample_tiles(png, size: int = 32, pad: int = 1) -> np.ndarray:
    """The samples of a committed grid image (tiles of size², 1 px borders) in [-1, 1]."""
    from PIL import Image

    a = np.asarray(Image.open(png).convert("L")).astype(np.float64) / 127.5 - 1
    n = (a.shape[0] - pad) // (size + pad)
    return np.stack([a[pad + r * (size + pad):][:size, pad + c * (size + pad):][:, :size]
                     for r in range(n) for c in range(n)])


def dark_fraction(x) -> float:
    """Fraction of pixels below −0.9 (Fashion-MNIST's black background is −1)."""
    return float((np.asarray(x) < -0.9).mean())


# --- chapter 3's full runs ----------------------------------------------------------------------
def equal_time_table(folder="patching_equal_time", patch_sizes=(1, 2, 4, 8)) -> Table:
    """Quality against P at equal wall-clock (``scripts/run_patching_equal_time.sh``): one row
    per P with its optimizer steps, minutes and sample metrics. ``values``: ``fid``, ``kid``,
    ``precision``, ``recall``, ``steps``, ``minutes`` (dicts by P), ``png`` (paths), ``fid_key``,
    ``batch``, ``n_samples``, ``n_ref``, ``sampler``, ``sampler_steps``, ``budget_minutes``."""
    d = _dir(folder)
    runs = {P: r for P in patch_sizes if (r := read_json(d / f"P{P}.json")) is not None}
    if not runs:
        _need(d / f"P{patch_sizes[0]}.json", "scripts/run_patching_equal_time.sh")
    logs = {P: read_log(d / f"P{P}.metrics.jsonl") for P in runs}
    cfgs = {P: read_json(d / f"P{P}.config.json") or {} for P in runs}
    first = next(iter(runs.values()))
    keys = {n: metric(first, n)[0] for n in ("FID", "KID", "precision", "recall")}
    v = dict(fid_key=keys["FID"], png={P: d / f"P{P}.png" for P in runs},
             steps={P: logs[P][-1]["step"] for P in runs},
             minutes={P: _minutes(logs[P]) for P in runs},
             batch=cfgs[next(iter(runs))].get("batch_size"), n_samples=first["n_samples"],
             n_ref=first["n_ref"], sampler=first["sampler"], sampler_steps=first["steps"])
    for n, key in (("fid", "FID"), ("kid", "KID"), ("precision", "precision"), ("recall", "recall")):
        v[n] = {P: value(r, key) for P, r in runs.items()}
    v["budget_minutes"] = float(np.mean(list(v["minutes"].values())))
    header = ["P", "optimizer steps", "minutes", keys["FID"], keys["KID"], "precision", "recall"]
    rows = [[P, f"{v['steps'][P]:,}", f"{v['minutes'][P]:.1f}", v["fid"][P], v["kid"][P],
             f"{v['precision'][P]:.3f}", f"{v['recall'][P]:.3f}"] for P in runs]
    return Table(header, rows, v)


def weighting_table(folder="ch03_full", weightings=WEIGHTINGS) -> Table:
    """The five weightings of the full run (``w-{weighting}-s{seed}.json``): FID per seed and
    its mean, x0-MSE, precision and recall (means over the seeds). ``values``: ``fid``,
    ``x0_mse``, ``precision``, ``recall`` (dicts by weighting, seed means), ``ranked`` (by FID),
    ``noise`` (``seed_noise``), ``snr`` and ``curves`` (x0-MSE by SNR, seed means), ``png``,
    ``fid_key``, ``steps``, ``batch``, ``minutes`` (of every run), ``n_samples``, ``n_ref``,
    ``x0_mse_n``, ``n_t``, ``sampler``, ``sampler_steps``."""
    d = _dir(folder)
    runs = {(w, s): r for w in weightings for s in (0, 1)
            if (r := read_json(d / f"w-{w}-s{s}.json")) is not None}
    if not runs:
        _need(d / f"w-{weightings[0]}-s0.json", "scripts/run_ch03_full.py")
    seeds = sorted({s for _, s in runs})
    ws = [w for w in weightings if any((w, s) in runs for s in seeds)]
    first = next(iter(runs.values()))
    fid_key = metric(first, "FID")[0]

    def mean(w, name):
        return float(np.mean([value(runs[w, s], name) for s in seeds if (w, s) in runs]))

    v = {n: {w: mean(w, key) for w in ws} for n, key in
         (("fid", "FID"), ("x0_mse", "x0-MSE"), ("precision", "precision"), ("recall", "recall"))}
    v.update(fid_key=fid_key, ranked=sorted(ws, key=v["fid"].get),
             noise=seed_noise(d, weightings), snr=list(first["x0_mse_snr"]),
             curves={w: np.mean([runs[w, s]["x0_mse"] for s in seeds if (w, s) in runs],
                                axis=0).tolist() for w in ws},
             png={w: d / f"w-{w}-s{min(s for s in seeds if (w, s) in runs)}.png" for w in ws},
             n_samples=first["n_samples"], n_ref=first["n_ref"], x0_mse_n=first["x0_mse_n"],
             n_t=len(first["x0_mse_t"]), sampler=first["sampler"], sampler_steps=first["steps"])
    cfg = read_json(d / f"w-{ws[0]}-s{seeds[0]}.config.json") or {}
    v.update(steps=cfg.get("steps"), batch=cfg.get("batch_size"), patch_size=cfg.get("patch_size"),
             minutes=[_minutes(read_log(d / f"w-{w}-s{s}.metrics.jsonl")) for w, s in runs
                      if (d / f"w-{w}-s{s}.metrics.jsonl").is_file()])
    header = ["weighting", *[f"{fid_key}, seed {s}" for s in seeds], f"{fid_key}, mean",
              "x0-MSE, mean", "precision", "recall"]
    rows = [[w, *[f"{value(runs[w, s], 'FID'):.1f}" if (w, s) in runs else "—" for s in seeds],
             f"{v['fid'][w]:.1f}", f"{v['x0_mse'][w]:.4f}", f"{v['precision'][w]:.3f}",
             f"{v['recall'][w]:.3f}"] for w in ws]
    return Table(header, rows, v)


def split_table(folder="ch03_full", t_boundary: int | None = None) -> Table:
    """SNR splitting against one model (``split-s{seed}.json`` against ``w-sqrt_snr-s{seed}.json``):
    FID of both, and the x0-MSE on each side of the boundary (model 0 serves SNR above it, i.e.
    t < ``t_boundary``; without it the side is read from the SNR). ``values``: ``fid`` and
    ``recall`` ({seed: (split, one model)}), ``mse_ratio_hi`` / ``mse_ratio_lo`` ({seed: split ÷
    one model} above / below the boundary), ``curves`` ({seed: (snr, ratio)}), ``boundary``,
    ``steps_per_model``, ``png`` (split, one), ``fid_key``."""
    d = _dir(folder)
    pairs = {s: (sp, one) for s in (0, 1)
             if (sp := read_json(d / f"split-s{s}.json")) is not None
             and (one := read_json(d / f"w-sqrt_snr-s{s}.json")) is not None}
    if not pairs:
        _need(d / "split-s0.json", "scripts/run_ch03_full.py")
    sp0 = next(iter(pairs.values()))[0]
    boundary = float(sp0["snr_boundaries"][0])
    fid_key = metric(sp0, "FID")[0]
    v = dict(fid={}, recall={}, mse_ratio_hi={}, mse_ratio_lo={}, curves={}, boundary=boundary,
             fid_key=fid_key, t_boundary=t_boundary)
    rows = []
    for s, (sp, one) in pairs.items():
        a, b = np.array(sp["x0_mse"]), np.array(one["x0_mse"])
        hi = (np.array(sp["x0_mse_t"]) < t_boundary if t_boundary is not None
              else np.array(sp["x0_mse_snr"]) > boundary)
        v["fid"][s] = (value(sp, "FID"), value(one, "FID"))
        v["recall"][s] = (value(sp, "recall"), value(one, "recall"))
        v["mse_ratio_hi"][s] = float(a[hi].mean() / b[hi].mean())
        v["mse_ratio_lo"][s] = float(a[~hi].mean() / b[~hi].mean())
        v["curves"][s] = (list(sp["x0_mse_snr"]), (a / b).tolist())
        rows.append([s, f"{v['fid'][s][0]:.1f}", f"{v['fid'][s][1]:.1f}",
                     f"{v['recall'][s][0]:.3f} vs {v['recall'][s][1]:.3f}",
                     f"{a[hi].mean():.4f} vs {b[hi].mean():.4f}",
                     f"{a[~hi].mean():.4f} vs {b[~hi].mean():.4f}"])
    cfg = read_json(d / "split-s0-model0.config.json") or {}
    v.update(steps_per_model=cfg.get("steps"),
             png=dict(split=d / "split-s0.png", one=d / "w-sqrt_snr-s0.png"))
    side = (f"t < {t_boundary}", f"t ≥ {t_boundary}") if t_boundary is not None else \
        (f"SNR > {fmt(boundary)}", f"SNR ≤ {fmt(boundary)}")
    header = ["seed", f"{fid_key}, split", f"{fid_key}, one model", "recall, split vs one",
              f"x0-MSE {side[0]} (model 0), split vs one", f"x0-MSE {side[1]} (model 1)"]
    return Table(header, rows, v)


def guidance_table(folder="ch03_full", guidance=(0.0, 1.0, 1.5, 2.0, 3.0),
                   unthresholded=(1.5, 3.0)) -> Table:
    """FID, KID, precision, recall and the dark-pixel fraction against the guidance scale w, with
    dynamic thresholding (``cc-s0-w{w}``) and without (``cc-s0-w{w}-nothreshold``); w = 1 is
    unguided, so it counts for both. ``values``: ``fid``, ``kid``, ``precision``, ``recall``,
    ``dark`` (dicts by (w, thresholded)), ``png``, ``keys`` (the rows' (w, thresholded)),
    ``fid_key``, ``n_samples``."""
    d = _dir(folder)
    runs = {(w, True): r for w in guidance if (r := read_json(d / f"cc-s0-w{w:g}.json"))}
    runs |= {(w, False): r for w in unthresholded
             if (r := read_json(d / f"cc-s0-w{w:g}-nothreshold.json"))}
    if not runs:
        _need(d / "cc-s0-w1.json", "scripts/run_ch03_full.py")
    png = {k: d / (f"cc-s0-w{k[0]:g}.png" if k[1] else f"cc-s0-w{k[0]:g}-nothreshold.png")
           for k in runs}
    keys = sorted(runs, key=lambda k: (not k[1], k[0]))
    if (1.0, True) in runs:                              # unguided: no thresholding either way
        runs[1.0, False], png[1.0, False] = runs[1.0, True], png[1.0, True]
    first = next(iter(runs.values()))
    names = ["FID", "KID", "precision", "recall"]
    v = {n.lower(): {k: value(r, n) for k, r in runs.items()} for n in names}
    v.update(dark={k: dark_fraction(sample_tiles(p)) for k, p in png.items()}, png=png,
             keys=keys, fid_key=metric(first, "FID")[0], n_samples=first["n_samples"])
    header = ["w", "dynamic threshold", *[metric(first, n)[0] for n in names],
              "dark pixels (64 samples)"]
    rows = [[f"{w:g}", "—" if w == 1 else ("yes" if th else "no"), v["fid"][w, th],
             v["kid"][w, th], f"{v['precision'][w, th]:.3f}", f"{v['recall'][w, th]:.3f}",
             f"{v['dark'][w, th]:.2f}"] for w, th in keys]
    return Table(header, rows, v)


def respacing_table(folder="ch03_full", steps=(25, 50, 100, 250), guidance=1.5) -> Table:
    """FID against the number of respaced DDIM steps (``cc-s0-w1.5-steps{k}``). ``values``:
    ``fid``, ``precision``, ``recall``, ``dark``, ``nfe``, ``seconds`` (dicts by steps),
    ``fid_key``, ``n_samples``."""
    d = _dir(folder)
    runs = {k: r for k in steps if (r := read_json(d / f"cc-s0-w{guidance:g}-steps{k}.json"))}
    if not runs:
        _need(d / f"cc-s0-w{guidance:g}-steps{steps[0]}.json", "scripts/run_ch03_full.py")
    first = next(iter(runs.values()))
    v = {n.lower(): {k: value(r, n) for k, r in runs.items()} for n in ("FID", "precision", "recall")}
    v.update(dark={k: dark_fraction(sample_tiles(d / f"cc-s0-w{guidance:g}-steps{k}.png"))
                   for k in runs},
             nfe={k: float(r["nfe_per_image"]) for k, r in runs.items()},
             seconds={k: float(r["sampling_seconds"]) for k, r in runs.items()},
             fid_key=metric(first, "FID")[0], n_samples=first["n_samples"])
    header = ["steps", "NFE / image", v["fid_key"], "precision", "recall",
              "dark pixels (64 samples)", "sampling s (1 thread)"]
    rows = [[k, f"{v['nfe'][k]:.0f}", f"{v['fid'][k]:.2f}", f"{v['precision'][k]:.3f}",
             f"{v['recall'][k]:.3f}", f"{v['dark'][k]:.2f}", f"{v['seconds'][k]:.0f}"]
            for k in runs]
    return Table(header, rows, v)


def learned_variance_table(folder="ch03_full", runs=LEARNED_VARIANCE_RUNS) -> Table:
    """The learned-variance model against the fixed-variance one (DDPM-50, and DDIM-50 for
    reference). ``values``: ``fid``, ``precision``, ``recall``, ``x0_mse`` (dicts by row label),
    ``png``, ``v`` (where the learned v lies by t: ``v_t``, ``v_mean``, ``v_p01``, ``v_p99``,
    ``log_beta_ratio``; None if not recorded), ``fid_key``."""
    d = _dir(folder)
    found = {name: r for name, stem in runs if (r := read_json(d / f"{stem}.json")) is not None}
    if not found:
        _need(d / f"{runs[0][1]}.json", "scripts/run_ch03_full.py")
    first = next(iter(found.values()))
    v = {n.lower().replace("-", "_"): {k: value(r, n) for k, r in found.items()}
         for n in ("FID", "precision", "recall", "x0-MSE")}
    vw = next((r for r in found.values() if "v_mean" in r), None)
    v.update(png={name: d / f"{stem}.png" for name, stem in runs if name in found},
             fid_key=metric(first, "FID")[0],
             v=None if vw is None else {k: list(vw[k]) for k in
                                        ("v_t", "v_mean", "v_p01", "v_p99", "log_beta_ratio")})
    header = ["model, sampler", v["fid_key"], "precision", "recall", "x0-MSE"]
    rows = [[n, f"{v['fid'][n]:.2f}", f"{v['precision'][n]:.3f}", f"{v['recall'][n]:.3f}",
             f"{v['x0_mse'][n]:.4f}"] for n in found]
    return Table(header, rows, v)


def full_runs_table(folder="ch03_full") -> Table:
    """Every evaluation file of ``results/ch03_full/``: sampler, steps, guidance, metrics."""
    d = _dir(folder)
    files = evaluation_files(d)
    if not files:
        _need(d / "w-sqrt_snr-s0.json", "scripts/run_ch03_full.py")
    rows = []
    for f in files:
        ev = read_json(f)
        sampler = f"{ev['sampler'].upper()}-{ev['steps']}" + (
            f", Σ {ev['variance']}" if ev.get("variance") else "")
        rows.append([f.stem, sampler, f"{ev['guidance']:g}",
                     f"{value(ev, 'FID'):.2f} ({metric(ev, 'FID')[0].split('@')[1]})",
                     f"{value(ev, 'KID'):.4f}",
                     f"{value(ev, 'precision'):.3f} / {value(ev, 'recall'):.3f}",
                     f"{ev['x0_mse_mean']:.4f}"])
    header = ["run", "sampler", "w", "FID (samples)", "KID", "precision / recall", "x0-MSE"]
    return Table(header, rows, dict(n_runs=len(rows)))


# --- provenance ---------------------------------------------------------------------------------
def _provenance_of(path: Path, doc: dict) -> tuple[str, dict]:
    """(what the file is, its provenance record: {} if it has none). Evaluations carry it under
    'provenance' (pdlib.evaluation), a training run's NAME.provenance.json is one
    (scripts/full_runs.py), a benchmark JSON holds git/machine/started/ended at its top level."""
    if path.name.endswith(".provenance.json"):
        return "training", doc
    top = {k: doc[k] for k in ("git", "machine", "started", "ended", "created") if k in doc}
    if "benchmark" in doc:
        return "benchmark", top
    if "provenance" in doc or "method" in doc:
        return "evaluation", doc.get("provenance") or {}
    return "—", top


def _when(prov: dict) -> str:
    import datetime

    stamp = prov.get("ended") or prov.get("created")
    if not isinstance(stamp, str):
        return NOT_RECORDED
    try:
        t = datetime.datetime.fromisoformat(stamp)
    except ValueError:
        return stamp
    if t.tzinfo is not None:
        t = t.astimezone(datetime.timezone.utc)
    return t.strftime("%Y-%m-%d %H:%M") + (" UTC" if t.tzinfo is not None else "")


def _machine_cell(m) -> str:
    if not isinstance(m, dict) or not m:
        return NOT_RECORDED
    threads, cores = m.get("torch_threads"), m.get("cpu_count")
    text = str(m.get("cpu") or "unknown CPU")
    if threads is not None:
        text += f", {threads} thread{'s' if threads != 1 else ''}" + (f" of {cores}" if cores else "")
    if m.get("gpu"):
        text += f", {m['gpu']}"
    return text


def provenance_table(folder="baseline") -> Table:
    """Where each results JSON of a results folder (or a list of folders) came from: the git
    revision (short; "(dirty)" marks tracked files changed from it), the date it ended (UTC) and
    the machine (CPU model, torch threads of the cores, GPU). Training configs are skipped; a
    training run's ``NAME.provenance.json`` is its own row; files written before results carried
    their provenance say NOT_RECORDED. ``values``: ``recorded`` ({row name: whether a git state
    is recorded}), ``revision`` ({row name: full sha or None}), ``dirty`` ({row name: True, False
    or None}), ``what`` ({row name: 'evaluation', 'training', 'benchmark' or '—'}), ``folder``
    ({row name: its results folder}) and ``date`` ({row name: the date cell})."""
    folders = [folder] if isinstance(folder, (str, Path)) else list(folder)
    rows, v = [], dict(recorded={}, revision={}, dirty={}, what={}, folder={}, date={})
    for fo in folders:
        d = _dir(fo)
        if not d.is_dir():
            raise FileNotFoundError(f"folder={str(fo)!r}: no such results folder ({d})")
        for f in sorted(d.glob("*.json")):
            if f.name == "config.json" or f.name.endswith(".config.json"):
                continue
            doc = read_json(f)
            if not isinstance(doc, dict):
                continue
            what, prov = _provenance_of(f, doc)
            stem = f.name[:-len(".provenance.json")] if what == "training" else f.stem
            name = (f"{Path(fo).name}/{stem}" if len(folders) > 1 else stem) + (
                " (training)" if what == "training" else "")
            git = prov.get("git") if isinstance(prov.get("git"), dict) else None
            if git is None:
                revision, dirty = NOT_RECORDED, NOT_RECORDED
            else:
                sha = git.get("revision")
                revision = f"`{sha[:7]}`" if isinstance(sha, str) and sha else "unknown (no git checkout)"
                n = git.get("changed_files")
                dirty = ("unknown" if git.get("dirty") is None else "no" if not git["dirty"]
                         else f"yes ({n} file{'s' if n != 1 else ''})" if n is not None else "yes")
            v["recorded"][name] = git is not None
            v["revision"][name] = None if git is None else git.get("revision")
            v["dirty"][name] = None if git is None else git.get("dirty")
            v["what"][name], v["folder"][name] = what, Path(fo).name
            v["date"][name] = when = _when(prov)
            rows.append([name, what, revision, dirty, when, _machine_cell(prov.get("machine"))])
    header = ["file", "what", "git revision", "dirty", "date", "machine (CPU, threads)"]
    return Table(header, rows, v)


def results_folders() -> list[str]:
    """The folders of results/ (sorted), each a results folder of provenance_table."""
    return sorted(p.name for p in (REPO_ROOT / "results").iterdir() if p.is_dir())


def _added_in() -> dict[str, str]:
    """{path under results/: short sha of the commit that added it} from git history ({} without
    a git checkout): for files written before results carried their provenance, the latest
    revision their code can be from."""
    import subprocess

    try:
        out = subprocess.run(["git", "log", "--diff-filter=A", "--name-only", "--format=@%h",
                              "--", "results"], cwd=REPO_ROOT, capture_output=True, text=True,
                             timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    added, sha = {}, None
    for line in out.splitlines():
        if line.startswith("@"):
            sha = line[1:]
        elif line.strip() and sha:
            added.setdefault(line.strip()[len("results/"):], sha)   # newest first: the file's add
    return added


def provenance_summary_table(folders=None) -> Table:
    """One row per results folder (all of results/ by default): how many of its JSON files
    record their git state, the git revisions they name (short; "+dirty" when any was written
    from a changed tree), the range of dates they ended (of every file that records one), and,
    for files without a git state, the commits that added them. ``values``: ``files`` and
    ``recorded`` ({folder: count}), ``revisions`` ({folder: sorted short shas})."""
    folders = results_folders() if folders is None else list(folders)
    v = provenance_table(folders).values
    added = _added_in()
    rows, out = [], dict(files={}, recorded={}, revisions={}, added_in={})
    for fo in folders:
        fo = Path(fo).name
        names = [n for n, f in v["folder"].items() if f == fo]
        rec = [n for n in names if v["recorded"][n]]
        shas = sorted({v["revision"][n][:7] for n in rec if v["revision"][n]})
        dirty = any(v["dirty"][n] for n in rec)
        dates = sorted(v["date"][n] for n in names if v["date"][n] != NOT_RECORDED)
        stems = {n.split("/")[-1].removesuffix(" (training)") for n in names if n not in rec}
        old = list(dict.fromkeys(    # newest first, as git log lists them
            sha for path, sha in added.items() if path.startswith(f"{fo}/")
            and Path(path).name.removesuffix(".json").removesuffix(".provenance") in stems))
        out["files"][fo], out["recorded"][fo], out["revisions"][fo] = len(names), len(rec), shas
        out["added_in"][fo] = old
        rows.append([f"`{fo}/`", len(names), f"{len(rec)} of {len(names)}",
                     ", ".join(f"`{s}`" for s in shas) + (" (+dirty)" if dirty else "") or "—",
                     (dates[0] if dates[0] == dates[-1] else f"{dates[0]} – {dates[-1]}")
                     if dates else "—",
                     (", ".join(f"`{s}`" for s in old[:3]) + (f" and {len(old) - 3} more"
                                                          if len(old) > 3 else "")) or "—"])
    header = ["folder", "JSON files", "provenance recorded", "git revisions", "ended",
              "not recorded: committed in"]
    return Table(header, rows, out)


# --- benchmarks ---------------------------------------------------------------------------------
def patching_benchmark_table(bench: dict) -> Table:
    """``benchmarks/patching.py``'s rows: one U-Net family at one resolution against P, with the
    FLOP ratio over P = 1 and the share of it that the measured speed-up reaches."""
    rows = [[r["patch_size"], r["grid"], r["batch"], r["train_gflop_per_image"],
             r["train_flop_ratio_vs_p1"], r["train_speedup_vs_p1"],
             f"{100 * r['train_frac_of_flop_ratio']:.0f}%", r["sample_speedup_vs_p1"],
             f"{100 * r['sample_frac_of_flop_ratio']:.0f}%"] for r in bench["rows"]]
    header = ["P", "grid", "batch", "GFLOP / image (train step)", "FLOP ratio vs P = 1",
              "train speed-up", "train: share of the FLOP ratio", "sampling speed-up",
              "sampling: share of the FLOP ratio"]
    res = bench["rows"][0]["resolution"]
    return Table(header, rows, dict(resolution=res, params={r["patch_size"]: r["params"]
                                                            for r in bench["rows"]}), digits=3)


def patching_claim_table(bench: dict) -> Table:
    """The paper's cost claim as ``benchmarks/patching.py`` measures it: P = 4 at full resolution
    against P = 1 at a quarter of it, same family and batch. ``values``: ``ratios``."""
    c = bench["claim"]
    hi, lo, ratios = c["p4"], c["p1_quarter_resolution"], c["ratios_p4_over_p1_quarter"]
    a, b = f"{hi['resolution']}×{hi['resolution']}, P = 4", f"{lo['resolution']}×{lo['resolution']}, P = 1"
    rows = [["GFLOP / image (train step)", hi["train_gflop_per_image"], lo["train_gflop_per_image"],
             ratios["train_flops"]],
            ["training step time (s / image)", 1 / hi["train_images_per_s"],
             1 / lo["train_images_per_s"], ratios["train_time"]],
            ["sampling time (s / image)", 1 / hi["sample_images_per_s"],
             1 / lo["sample_images_per_s"], ratios["sample_time"]]]
    if ratios.get("train_peak_mem") is not None:
        rows.append(["peak memory of a training step (MB)", hi["train_peak_mem_mb"],
                     lo["train_peak_mem_mb"], ratios["train_peak_mem"]])
    return Table(["quantity", a, b, "ratio"], rows,
                 dict(ratios=dict(ratios), batch=hi["batch"]), digits=3)


def _bench_labels(bench: dict) -> dict[str, str]:
    ref = bench.get("reference", {})
    cfg = f"{ref.get('resolution', '?')}×{ref.get('resolution', '?')}, P = {ref.get('patch_size', '?')}"
    dc = (bench.get("dit") or {}).get("config") or {}
    dit = (f"DiT {dc['resolution']}×{dc['resolution']}×{dc['in_channels']}, P = {dc['patch_size']}"
           if {"resolution", "in_channels", "patch_size"} <= set(dc) else "DiT")
    rounds = next((r["rounds"] for rs in (bench.get("interleaved") or {}).values() for r in rs), None)
    alt = f"steps timed alternately, median of {rounds} rounds" if rounds else "steps timed alternately"
    labels = {
        "bf16_speedup_over_fp32": f"U-Net {cfg}: images/s under bf16 autocast ÷ images/s in fp32",
        "ours_per_flop_vs_peer_fp32": f"U-Net {cfg}, fp32: compute rate (GFLOP/s), ours ÷ diffusers'",
        "ours_images_per_s_vs_peer_fp32": f"U-Net {cfg}, fp32: images/s, ours ÷ diffusers'",
        "frac_of_fp32_matmul_reference":
            f"U-Net {cfg}, fp32: share of this CPU's fp32 matmul rate reached",
        "frac_of_fp32_conv3x3_reference":
            f"U-Net {cfg}, fp32: share of this CPU's 3×3-convolution rate reached",
    }
    for prec in ("fp32", "bf16", "fp16"):
        labels[f"dit_ours_per_flop_vs_peer_{prec}"] = f"{dit}, {prec}: compute rate, ours ÷ diffusers'"
        labels[f"dit_ours_images_per_s_vs_peer_{prec}"] = f"{dit}, {prec}: images/s, ours ÷ diffusers'"
        for net in ("unet", "dit"):
            name = f"U-Net {cfg}" if net == "unet" else dit
            labels[f"{net}_ours_per_flop_vs_peer_{prec}_interleaved"] = \
                f"{name}, {prec}: compute rate, ours ÷ diffusers' ({alt})"
    labels["unet_real_p_0.5_measured_over_flops_predicted"] = (
        "Patch Diffusion, U-Net: a real_p = 0.5 step's time ÷ what its FLOPs predict")
    for P in (2, 4, 8, 16):
        for kind, what in (("train", "training step"), ("sample", "sampling (forward pass)")):
            labels[f"P={P} {kind}"] = f"P = {P}, {what}: speed-up over P = 1 ÷ FLOP ratio"
    for N in (2, 4, 8, 16):
        labels[f"N={N} sequential sample memory"] = (
            f"Patch-by-patch, {N}×{N}: sampling peak memory, tile by tile ÷ untiled")
        labels[f"N={N} batched sample memory"] = (
            f"Patch-by-patch, {N}×{N}: sampling peak memory, all tiles batched (the release) ÷ untiled")
        labels[f"N={N} train memory"] = (
            f"Patch-by-patch, {N}×{N}: training-step peak memory, one tile per image ÷ untiled")
    for pair, what in (("chapter", "FPDM ÷ the chapter's 6-block DiT"),
                       ("paper-shaped", "FPDM at k2 = 12 ÷ a 28-block DiT of its width")):
        labels[f"{pair} params"] = f"{what}: parameters"
        labels[f"{pair} train_memory"] = f"{what}: a training step's peak above the kept state"
        labels[f"{pair} train_memory_with_state"] = f"{what}: training memory (peak + state)"
    labels["release-scale params"] = "FPDM-XL/2 ÷ DiT-XL/2: parameters"
    for relay, edm in (("r5-5", "edm-s10"), ("r9-9", "edm-s18")):
        a, b = relay[1:].replace("-", " + "), edm.split("-s")[1]
        labels[f"{relay} ÷ {edm} time at equal total NFE"] = (
            f"Relay {a} ÷ EDM {b} steps: time per image at equal total calls")
        labels[f"{relay} ÷ {edm} time at equal or better FID"] = (
            f"Relay {a} ÷ EDM {b} steps: time per image, the relay's FID no worse")
    return labels


def benchmark_targets_table(bench: dict) -> Table:
    """A benchmark JSON's targets with plain-language row labels; "met" / "not met" as the JSON
    judged it ("—": a quantity recorded without a target). Entries with both nets' numbers
    (``ours``, ``peer``) show both. ``values``: ``met`` ({key: bool}), ``labels``."""
    labels = _bench_labels(bench)
    rows, met = [], {}
    for key, t in bench.get("targets", {}).items():
        t = t if isinstance(t, dict) else dict(value=t)
        if "value" in t:
            shown = fmt(float(t["value"]), 3)
            if "min" in t and "max" in t:
                shown += f" (range {fmt(float(t['min']), 3)}–{fmt(float(t['max']), 3)})"
        else:
            shown = f"ours {fmt(float(t['ours']), 3)}, diffusers {fmt(float(t['peer']), 3)}"
        if "met" in t:
            met[key] = bool(t["met"])
        verdict = "—" if "met" not in t else ("met" if t["met"] else "**not met**")
        target = str(t.get("target", "—")).replace(">=", "≥").replace("<=", "≤")
        rows.append([labels.get(key, key.replace("_", " ")), shown, target, verdict])
    return Table(["comparison", "measured", "target", "verdict"], rows,
                 dict(met=met, labels={k: labels.get(k, k) for k in bench.get("targets", {})}))


def loss_curve_table(bench: dict) -> Table:
    """The settings of ``benchmarks/train_step.py``'s fp32 / bf16 loss curves, and the mean loss
    of each over its last ten steps. ``values``: ``final`` ({precision: mean loss})."""
    lc = bench["loss_curve"]
    names = dict(data="data", loss="loss", net="network", optimizer="optimizer", steps="steps",
                 batch="batch", seed="seed")
    rows = [[names.get(k, k), f"`{v}`" if k == "net" else v] for k, v in lc.items() if k != "curves"]
    final = {p: float(np.mean(c[-10:])) for p, c in lc["curves"].items()}
    rows += [[f"mean loss, last 10 steps, {p}", f] for p, f in final.items()]
    return Table(["setting", "value"], rows, dict(final=final, steps=lc.get("steps")))


def baseline_config_table(cfg: dict, log: list[dict],
                          keys=("method", "preset", "dataset", "resolution", "batch_size", "lr",
                                "steps", "amp", "seed")) -> Table:
    """The baseline run's configuration (its ``config.json``) and training time (its log)."""
    rows = [[k, f"`{cfg[k]}`"] for k in keys if k in cfg]
    rows.append(["training time", f"{_minutes(log):.1f} min on this CPU"])
    return Table(["setting", "value"], rows, dict(minutes=_minutes(log)))


def baseline_metrics_table(ev: dict) -> Table:
    """The baseline's evaluation: sampler, NFE per image and every metric with its sample count."""
    keys = [k for k in ev if "@" in k and not k.startswith("KID_std")]
    return Table(["sampler", "NFE / image", *keys],
                 [[ev["sampler"], f"{ev['nfe_per_image']:.0f}", *[float(ev[k]) for k in keys]]])


# --- verdicts -----------------------------------------------------------------------------------
def recognisable(fid: float, recall: float) -> bool:
    """Samples a quality verdict can rest on: recall ≥ RECALL_MIN and FID ≤ FID_MAX."""
    return recall >= RECALL_MIN and fid <= FID_MAX


GATE = (f"quality gate: some compared model has recall ≥ {fmt(RECALL_MIN)} and "
        f"FID ≤ {FID_MAX:.0f}")


def _testable(fid: dict, recall: dict) -> bool:
    if not any(k in recall for k in fid):
        raise ValueError(f"recall has keys {sorted(map(str, recall))}; allowed: the compared "
                         f"models' keys {sorted(map(str, fid))}")
    return any(recognisable(fid[k], recall[k]) for k in fid if k in recall)


def ranking(values: dict, label=lambda k: str(k), digits: int = 3) -> str:
    """'a 1.2 < b 3.4 < …': keys ordered by value, lowest first."""
    return " < ".join(f"{label(k)} {fmt(float(v), digits)}"
                      for k, v in sorted(values.items(), key=lambda kv: kv[1]))


def _not_testable(fid: dict, recall: dict, label, rule: str) -> Verdict:
    return Verdict(NOT_TESTABLE,
                   f"no model passes the quality gate (highest recall "
                   f"{max(recall.values()):.3f}, lowest FID {fmt(min(fid.values()))}); "
                   f"ranking by FID: {ranking(fid, label)}", rule)


def cost_verdict(ratios: dict[str, float], lo: float = COST_RATIO[0],
                 hi: float = COST_RATIO[1], first: str | None = None) -> Verdict:
    """"Costs about the same": held if every ratio lies in [lo, hi]; partly if the FLOP ratio
    (``first``, default the first key) does and another does not; did not hold otherwise."""
    first = first or next(iter(ratios))
    inside = {k: lo <= r <= hi for k, r in ratios.items()}
    rule = f"held if every ratio lies in [{fmt(lo)}, {fmt(hi)}]"
    out = [k for k, ok in inside.items() if not ok]
    if not out:
        return Verdict("held", "", rule)
    if inside[first]:
        return Verdict("partly", f"{', '.join(out)} outside", rule)
    return Verdict("did not hold", f"{', '.join(out)} outside", rule)


def ranking_only_verdict(values: dict, what: str, label=lambda k: str(k)) -> Verdict:
    """A comparison without any sample-quality measurement (FID, recall): only a ranking."""
    return Verdict(NOT_TESTABLE, f"no sample-quality measurement; ranking by {what}: "
                                 f"{ranking(values, label, 4)}",
                   "a quality verdict needs FID and recall: a ranking only")


def equal_time_verdict(fid: dict[int, float], recall: dict[int, float],
                       tol: float = EQUAL_TIME_FID_TOL) -> Verdict:
    """Patching keeps quality at equal wall-clock: held if some P > 1 has FID ≤ (1 + tol) ×
    FID(P = 1), did not hold otherwise; NOT_TESTABLE unless some P draws recognisable samples."""
    label = lambda P: f"P{P}"                              # noqa: E731
    rule = f"quality gate; held if some P > 1 has FID ≤ {fmt(1 + tol)} × FID(P = 1)"
    if not fid:
        return Verdict(NOT_TESTABLE, "no FID measured", rule)
    if not _testable(fid, recall):
        return _not_testable(fid, recall, label, rule)
    if 1 not in fid or len(fid) < 2:
        return Verdict("inconclusive", "no P = 1 run to compare with", rule)
    best = min((P for P in fid if P != 1), key=fid.get)
    if fid[best] <= (1 + tol) * fid[1]:
        return Verdict("held", f"P{best} FID {fmt(fid[best])} against P1 {fmt(fid[1])}", rule)
    return Verdict("did not hold", f"best P > 1 (P{best}) FID {fmt(fid[best])} against P1 "
                                   f"{fmt(fid[1])}", rule)


def weighting_verdict(fid: dict[str, float], recall: dict[str, float], noise: float,
                      ref: str = "sqrt_snr") -> Verdict:
    """``ref`` weighting is as good as the best: held if its FID is within the seed noise of the
    lowest FID (rank 1 when the noise is unknown), did not hold otherwise."""
    rule = f"quality gate; held if {ref}'s FID is within the seed noise of the best"
    if not _testable(fid, recall):
        return _not_testable(fid, recall, str, rule)
    best = min(fid, key=fid.get)
    rank = sorted(fid, key=fid.get).index(ref) + 1
    gap = fid[ref] - fid[best]
    known = not math.isnan(noise)
    if rank == 1 or (known and gap <= noise):
        return Verdict("held", f"{ref} ranks {rank} of {len(fid)}"
                       + (f", {fmt(gap, 2)} FID from the best ({best})" if rank > 1 else ""), rule)
    return Verdict("did not hold", f"{best} is better by {fmt(gap, 3)} FID"
                   + (f", more than the seed noise {fmt(noise, 2)}" if known else
                      " (one seed: noise unknown)"), rule)


def split_verdict(fid: dict[int, tuple[float, float]], recall: dict[int, tuple[float, float]],
                  noise: float) -> Verdict:
    """SNR splitting helps at equal compute: held if the split model's FID is lower than one
    model's by more than the seed noise for every seed, did not hold if higher by more than it
    for every seed, inconclusive otherwise. ``fid``/``recall``: {seed: (split, one model)}."""
    rule = "quality gate; held / did not hold if every seed's FID gap exceeds the seed noise"
    flat_f = {(s, i): pair[i] for s, pair in fid.items() for i in (0, 1)}
    flat_r = {(s, i): pair[i] for s, pair in recall.items() for i in (0, 1)}
    if not _testable(flat_f, flat_r):
        return _not_testable(flat_f, flat_r, lambda k: f"seed {k[0]} {'split' if k[1] == 0 else 'one'}", rule)
    gain = {s: one - sp for s, (sp, one) in fid.items()}   # > 0: the split model is better
    text = ", ".join(f"seed {s}: split {'better' if g > 0 else 'worse'} by {fmt(abs(g), 3)}"
                     for s, g in gain.items())
    if math.isnan(noise):
        return Verdict("inconclusive", text + " (seed noise unknown)", rule)
    if all(g > noise for g in gain.values()):
        return Verdict("held", text, rule)
    if all(g < -noise for g in gain.values()):
        return Verdict("did not hold", text + f"; seed noise {fmt(noise, 2)}", rule)
    return Verdict("inconclusive", text + f"; seed noise {fmt(noise, 2)}", rule)


def guidance_verdict(fid: dict[float, float], precision: dict[float, float],
                     recall: dict[float, float], noise: dict[str, float],
                     w_mid: float = 1.5, w_hi: float = 3.0) -> Verdict:
    """Guidance at ``w_mid`` improves FID over w = 1, and ``w_hi`` trades recall for precision:
    held if FID(w_mid) < FID(1) − noise, and at ``w_hi`` precision rises and recall falls, each by
    more than its seed noise; partly if one of the two; did not hold if neither."""
    rule = (f"quality gate; held if FID(w={w_mid:g}) < FID(w=1) − noise and, at w={w_hi:g}, "
            "precision rises and recall falls by more than their noise")
    if not _testable(fid, recall):
        return _not_testable(fid, recall, lambda w: f"w={w:g}", rule)
    better = fid[w_mid] < fid[1.0] - noise["FID"]
    trade = (precision[w_hi] > precision[1.0] + noise["precision"]
             and recall[w_hi] < recall[1.0] - noise["recall"])
    parts = [f"FID {'improved' if better else 'not improved'} at w={w_mid:g}",
             f"{'a' if trade else 'no'} precision-for-recall trade at w={w_hi:g}"]
    word = "held" if better and trade else "partly" if better or trade else "did not hold"
    return Verdict(word, "; ".join(parts), rule)


def fidelity_verdict(fidelity: dict[float, float], n: int, z: float = FIDELITY_Z,
                     chance: float = 0.1) -> Verdict:
    """Guidance improves class fidelity: testable if the unguided conditional model (w = 1) is
    above chance by more than z standard errors; held if the best w > 1 beats w = 1 by more than
    z standard errors of a proportion over n samples, did not hold if it does not beat it."""
    rule = (f"testable if fidelity(w=1) > chance {fmt(chance)} + {fmt(z)} s.e.; held if the best "
            f"w > 1 beats w=1 by > {fmt(z)} s.e. ({n} samples)")
    if 1.0 not in fidelity or not any(w > 1 for w in fidelity):
        return Verdict("inconclusive", "needs w = 1 and some w > 1", rule)
    f1 = fidelity[1.0]
    if f1 <= chance + z * math.sqrt(chance * (1 - chance) / n):
        return Verdict(NOT_TESTABLE, f"fidelity at w = 1 is {fmt(f1, 2)}, near chance", rule)
    w_best = max((w for w in fidelity if w > 1), key=fidelity.get)
    se = math.sqrt(max(f1 * (1 - f1), 1e-12) / n)
    gain = fidelity[w_best] - f1
    text = f"w={w_best:g} {fmt(fidelity[w_best], 2)} against w=1 {fmt(f1, 2)} (s.e. {fmt(se, 2)})"
    if gain > z * se:
        return Verdict("held", text, rule)
    return Verdict("did not hold" if gain <= 0 else "inconclusive", text, rule)


def rms_verdict(rms: dict[int, float], max_rms: float = RMS_MAX) -> Verdict:
    """Few respaced steps suffice (short run): held if the fewest steps' samples lie within RMS
    ``max_rms`` of the most steps' samples from the same noise, did not hold otherwise."""
    rule = f"held if RMS(fewest steps − most steps) ≤ {fmt(max_rms)} (pixels in [−1, 1])"
    k = min(rms)
    word = "held" if rms[k] <= max_rms else "did not hold"
    return Verdict(word, f"{k} steps: RMS {fmt(rms[k], 2)}", rule)


def respacing_verdict(fid: dict[int, float], recall: dict[int, float],
                      tol: float = RESPACE_FID_TOL) -> Verdict:
    """Few respaced steps suffice: held if the fewest steps' FID ≤ (1 + tol) × the most steps'."""
    rule = f"quality gate; held if FID(fewest steps) ≤ {fmt(1 + tol)} × FID(most steps)"
    if not _testable(fid, recall):
        return _not_testable(fid, recall, lambda k: f"{k} steps", rule)
    lo, hi = min(fid), max(fid)
    change = 100 * (fid[lo] / fid[hi] - 1)
    text = f"{lo} steps {fmt(fid[lo])} against {hi} steps {fmt(fid[hi])} ({change:+.0f}%)"
    return Verdict("held" if fid[lo] <= (1 + tol) * fid[hi] else "did not hold", text, rule)


def learned_variance_verdict(learned: float, fixed: float, recall: dict[str, float],
                             fid: dict[str, float], noise: float,
                             clipped: float | None = None) -> Verdict:
    """Learned variances make few-step DDPM sampling work: held if the learned Σ's FID is below
    the fixed-variance model's by more than the seed noise; partly if only v clipped to [0, 1]
    is; did not hold if both are above it by more than the noise; inconclusive otherwise."""
    rule = "quality gate; held / did not hold if beyond the fixed-variance FID ± seed noise"
    if not _testable(fid, recall):
        return _not_testable(fid, recall, str, rule)
    text = (f"learned Σ {fmt(learned)}" + (f", clipped {fmt(clipped)}" if clipped is not None
                                            else "") + f" against fixed β̃ {fmt(fixed)}")
    if learned < fixed - noise:
        return Verdict("held", text, rule)
    if clipped is not None and clipped < fixed - noise:
        return Verdict("partly", "only with v clipped to [0, 1]; " + text, rule)
    if learned > fixed + noise and (clipped is None or clipped > fixed + noise):
        return Verdict("did not hold", text, rule)
    return Verdict("inconclusive", text + " (within seed noise)", rule)


def claims_table(claims: list[Claim]) -> Table:
    """The claims table: claim, measurement, the rule with its thresholds, the verdict (with its
    reason, unless the measurement already says it)."""
    rows = [[c.claim, c.measurement, c.verdict.rule, f"**{c.verdict.word}**"
             + (f": {c.verdict.reason}" if c.verdict.reason
                and c.verdict.reason not in c.measurement else "")] for c in claims]
    return Table(["claim", "our measurement", "rule", "verdict"], rows,
                 dict(verdicts={c.claim: c.verdict.word for c in claims}))


def glue_values(**values) -> None:
    """myst-nb ``glue`` every keyword (hidden: display=False), numpy scalars as Python numbers, so
    Markdown can quote them with ``{glue:text}`name:.2f```."""
    from myst_nb import glue

    for name, v in values.items():
        if isinstance(v, np.generic):
            v = v.item()
        elif hasattr(v, "item") and getattr(v, "ndim", None) == 0:  # a 0-d torch tensor
            v = v.item()
        glue(name, v, display=False)
