"""Chapter 8 (measuring quality): the committed measurements as tables, and the verdicts drawn
from them.

``scripts/run_ch08_full.py`` writes ``results/ch08_full/``: ``fid_vs_n.json`` (FID between
random subsets of n training and n test images, and of two halves of the training set, with the
1/n fits), ``corruptions.json`` (FID, sFID, KID, precision/recall and the border-energy ratio of
corrupted test images), ``seams.json`` (the seam-aware FID/KID of test and stitched images) and
``models.json`` (FID∞ of chapters 1 and 3's committed models and of real test images through the
same protocol). Every file carries its provenance.
"""
from __future__ import annotations

import numpy as np

from pdlib.book import read_json
from pdlib.book.results import Table, Verdict, _dir, _need
from pdlib.metrics import fit_inverse_n

__all__ = ["FOLDER", "SCRIPT", "LAW_TOL", "PRECISION_TOL", "RECALL_DROP", "KID_Z", "SET_LABELS",
           "read", "fid_vs_n_table", "fit_ranges_table", "corruptions_table", "moves_table",
           "seams_table", "models_table", "law_verdict", "n_dependence_verdict",
           "kid_unbiased_verdict", "mode_drop_verdict", "seam_verdict", "ranking_verdict"]

FOLDER, SCRIPT = "ch08_full", "scripts/run_ch08_full.py"
LAW_TOL = 0.10       # the 1/N law holds: the intercept of two samples of one distribution within
                     # 10% of their FID at the largest N (it should be ~0)
PRECISION_TOL = 0.05  # mode dropping "keeps precision": precision within 0.05 of the clean set's
RECALL_DROP = 0.10    # ... and "lowers recall": recall at least 0.10 below the clean set's
KID_Z = 2.0          # a KID (or a KID difference) counts as non-zero beyond this many standard errors
SET_LABELS = {"clean": "clean test images", "blur": "blurred", "noise": "noised",
              "modes": "mode-dropped", "seamed": "stitched (seams)", "test": "real test images"}
METRICS = ("FID", "sFID", "KID", "precision", "recall", "border_energy_ratio")


def read(name: str, folder=FOLDER) -> dict:
    """One JSON of the folder ('fid_vs_n', 'corruptions', 'seams', 'models')."""
    return _need(_dir(folder) / f"{name}.json", SCRIPT)


def _curve(c: dict) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(c["ns"], np.int64), np.asarray(c["fids"], np.float64).reshape(len(c["ns"]), -1)


def fid_vs_n_table(folder=FOLDER) -> Table:
    """FID_N of train against test (mean and sd over the subset pairs) and of two halves of the
    training set, per N; ``values``: ns, mean, sd, halves ({N: mean}), fid_inf, fit_error, slope,
    halves_fid_inf, halves_fit_error, kid, kid_std, reps, n_train, n_test."""
    d = read("fid_vs_n", folder)
    ns, f = _curve(d["train_vs_test"])
    hn, hf = _curve(d["train_vs_train"])
    halves = {int(n): float(v) for n, v in zip(hn, hf.mean(1))}
    mean = f.mean(1)
    sd = f.std(1, ddof=1) if f.shape[1] > 1 else np.zeros(len(ns))
    rows = [[f"{int(n):,}", f"{m:.1f}", f"{s:.1f}",
             f"{halves[int(n)]:.1f}" if int(n) in halves else "—"]
            for n, m, s in zip(ns, mean, sd)]
    tt, th = d["train_vs_test"], d["train_vs_train"]
    rows.append(["N → ∞ (1/N fit)", f"{tt['fid_inf']:.1f} ± {tt['fit_error']:.1f}", "",
                 f"{th['fid_inf']:.1f} ± {th['fit_error']:.1f}"])
    kid, kid_std = d["kid_train_vs_test"]
    v = dict(ns=[int(n) for n in ns], mean=[float(m) for m in mean], sd=[float(s) for s in sd],
             halves=halves, fid_inf=tt["fid_inf"], fit_error=tt["fit_error"], slope=tt["slope"],
             halves_fid_inf=th["fid_inf"], halves_fit_error=th["fit_error"],
             kid=float(kid), kid_std=float(kid_std), reps=int(d["reps"]),
             n_train=int(d["n_train"]), n_test=int(d["n_test"]))
    header = ["N", "FID_N train vs test (mean)", "sd over subsets", "FID_N train vs train"]
    return Table(header, rows, v)


def fit_ranges_table(ranges=((100, 300), (300, 800), (400, 1000), (600, 1000)),
                     folder=FOLDER) -> Table:
    """The 1/N fit of train against test restricted to ranges of N: if the law held, every range
    would give the same intercept. ``values``: intercepts ({(lo, hi): (FID∞, error)})."""
    ns, f = _curve(read("fid_vs_n", folder)["train_vs_test"])
    rows, v = [], {}
    for lo, hi in ranges:
        keep = (ns >= lo) & (ns <= hi)
        if keep.sum() < 3:
            continue
        r = fit_inverse_n(ns[keep], f[keep])
        v[(lo, hi)] = (r.fid_inf, r.fit_error)
        rows.append([f"{lo:,} – {hi:,}", int(keep.sum()), f"{r.fid_inf:.1f} ± {r.fit_error:.1f}"])
    return Table(["range of N", "sizes", "intercept FID∞"], rows, dict(intercepts=v))


def corruptions_table(folder=FOLDER) -> Table:
    """One row per corrupted set: FID, sFID, KID, precision, recall, border-energy ratio;
    ``values``: {set: {metric: value}} under 'sets', and n, n_ref, blur_sigma, noise_std,
    mode_classes, grid, train_border."""
    d = read("corruptions", folder)
    sets = {r["set"]: {m: float(r[m]) for m in METRICS + ("KID_std",)} for r in d["rows"]}
    rows = [[SET_LABELS.get(k, k), f"{s['FID']:.1f}", f"{s['sFID']:.1f}", f"{s['KID']:.4f}",
             f"{s['precision']:.2f}", f"{s['recall']:.2f}", f"{s['border_energy_ratio']:.2f}"]
            for k, s in sets.items()]
    first = d["rows"][0]
    v = dict(sets=sets, n=int(first["n"]), n_ref=int(first["n_ref"]), blur_sigma=d["blur_sigma"],
             noise_std=d["noise_std"], mode_classes=list(d["mode_classes"]), grid=int(d["grid"]),
             train_border=float(d["clean_border_energy_ratio_train"]))
    header = ["set", f"FID@{first['n']}", "sFID", "KID", "precision", "recall",
              "border ratio"]
    return Table(header, rows, v)


def _change(metric: str, clean: float, other: float) -> float:
    """How far a metric moved from the clean set, as a fraction: the relative increase of FID,
    sFID and the border ratio, the relative drop of precision and recall. (KID is left out: its
    clean value is ~0, so a relative change means nothing.)"""
    if metric in ("precision", "recall"):
        return (clean - other) / clean
    return other / clean - 1


def moves_table(corr: Table | None = None) -> Table:
    """For each failure, how much each metric moved from the clean set (FID, sFID, border ratio:
    relative increase; precision, recall: relative drop). ``values``: {set: {metric: change}}
    under 'change'."""
    corr = corr or corruptions_table()
    sets = corr.values["sets"]
    clean = sets["clean"]
    ranked = ("FID", "sFID", "precision", "recall", "border_energy_ratio")
    change, rows = {}, []
    for name, s in sets.items():
        if name == "clean":
            continue
        change[name] = c = {m: _change(m, clean[m], s[m]) for m in ranked}
        rows.append([SET_LABELS.get(name, name)] + [f"{100 * c[m]:+.0f}%" for m in ranked])
    header = ["failure", "FID", "sFID", "precision drop", "recall drop", "border ratio"]
    return Table(header, rows, dict(change=change))


def seams_table(folder=FOLDER) -> Table:
    """The seam-aware scores of real test and stitched images: FID and KID of crops straddling a
    grid corner and of whole-tile crops, and the gaps. ``values``: {set: row} under 'sets', crop,
    grid, n_crops."""
    d = read("seams", folder)
    sets = {r["set"]: {k: float(v) for k, v in r.items() if k != "set"} for r in d["rows"]}
    rows = [[SET_LABELS.get(k, k), f"{s['FID_straddle']:.1f}", f"{s['FID_inner']:.1f}",
             f"{s['FID_gap']:.1f}", f"{s['KID_straddle']:.4f}", f"{s['KID_inner']:.4f}",
             f"{s['KID_gap']:.4f}"] for k, s in sets.items()]
    header = ["set", "FID straddling", "FID inner", "FID gap", "KID straddling", "KID inner",
              "KID gap"]
    return Table(header, rows, dict(sets=sets, crop=int(d["crop"]), grid=int(d["grid"]),
                                    n_crops=int(d["n_crops"])))


MODEL_LABELS = {"ch01": "chapter 1: EDM (ch01-edm-small)",
                "ch03": "chapter 3: patched U-Net, P = 4 (ch03-patched-cc)",
                "real": "real test images (the floor)"}


def models_table(folder=FOLDER) -> Table | None:
    """FID∞ of chapters 1 and 3's committed models and of real test images through the same
    protocol (None until models.json is written). ``values``: {model: dict(fid_1k, fid_all,
    fid_inf, fit_error, kid, kid_std, committed_fid, committed_key, n, n_ref)} under 'models',
    and 'above_floor' ({model: FID∞ − the real images' FID∞})."""
    d = read_json(_dir(folder) / "models.json")
    if d is None:
        return None
    models = {}
    for r in d["rows"]:
        models[r["model"]] = dict(
            fid_1k=float(r["fid_1k"]), fid_all=float(r["fid_all"]),
            fid_inf=float(r["fid_inf"]["fid_inf"]), fit_error=float(r["fid_inf"]["fit_error"]),
            slope=float(r["fid_inf"]["slope"]), ns=list(r["fid_inf"]["ns"]),
            fids=r["fid_inf"]["fids"], kid=float(r["kid"][0]), kid_std=float(r["kid"][1]),
            committed_fid=r.get("committed_fid"), committed_key=r.get("committed_fid_key"),
            n=int(r["n"]), n_ref=int(r["n_ref"]), n_1k=int(r["n_1k"]))
    floor = models.get("real", {}).get("fid_inf")
    above = {k: m["fid_inf"] - floor for k, m in models.items() if floor is not None and k != "real"}
    n = max(m["n"] for m in models.values())
    rows = []
    for k, m in models.items():
        committed = "—" if m["committed_fid"] is None else f"{m['committed_fid']:.1f}"
        rows.append([MODEL_LABELS.get(k, k), committed, f"{m['fid_1k']:.1f}", f"{m['fid_all']:.1f}",
                     f"{m['fid_inf']:.1f} ± {m['fit_error']:.1f}",
                     "—" if k not in above else f"{above[k]:.1f}", f"{m['kid']:.4f}"])
    header = ["images", "committed FID@1k", "FID@1k (new samples)", f"FID@{n // 1000}k",
              "FID∞ ± fit error", "FID∞ − floor", f"KID@{n // 1000}k"]
    return Table(header, rows, dict(models=models, above_floor=above, n=n))


# --- verdicts ----------------------------------------------------------------------------------
def law_verdict(fid_inf: float, fit_error: float, fid_at_max: float, n_max: int,
                tol: float = LAW_TOL) -> Verdict:
    """FID∞ of two samples of one distribution should be ~0: 'held' when |FID∞| is within
    `tol` of their FID at the largest N measured, 'did not hold' otherwise."""
    rule = f"|FID∞| ≤ {tol:.0%} of FID@{n_max:,} (two samples of one distribution)"
    text = f"FID∞ {fid_inf:.1f} ± {fit_error:.1f} against FID@{n_max:,} {fid_at_max:.1f}"
    word = "held" if abs(fid_inf) <= tol * fid_at_max else "did not hold"
    return Verdict(word, text, rule)


def n_dependence_verdict(ns, mean, factor: float = 2.0) -> Verdict:
    """'FID@N numbers at different N cannot be compared': held when the FID of the same two
    distributions changes by more than `factor` over the N measured."""
    lo, hi = int(np.argmin(ns)), int(np.argmax(ns))
    ratio = mean[lo] / mean[hi]
    rule = f"FID_N at the smallest N ≥ {factor:g}× FID_N at the largest (same two distributions)"
    text = (f"{mean[lo]:.1f} at N = {ns[lo]:,}, {mean[hi]:.1f} at N = {ns[hi]:,} "
            f"(×{ratio:.1f})")
    return Verdict("held" if ratio >= factor else "did not hold", text, rule)


def kid_unbiased_verdict(kid: float, kid_std: float, z: float = KID_Z) -> Verdict:
    """KID of two samples of one distribution is 0 in expectation: held when |KID| ≤ z·std."""
    rule = f"|KID| ≤ {z:g} standard deviations over subsets"
    text = f"KID {kid:.4f} ± {kid_std:.4f}"
    return Verdict("held" if abs(kid) <= z * kid_std else "did not hold", text, rule)


def mode_drop_verdict(clean: dict, dropped: dict, precision_tol: float = PRECISION_TOL,
                      recall_drop: float = RECALL_DROP) -> Verdict:
    """Mode dropping should lower recall and leave precision: 'held' when both happen, 'partly'
    when only one does."""
    dp = dropped["precision"] - clean["precision"]
    dr = clean["recall"] - dropped["recall"]
    rule = (f"precision within ±{precision_tol:g} of the clean set's and recall at least "
            f"{recall_drop:g} lower")
    text = (f"precision {clean['precision']:.2f} → {dropped['precision']:.2f}, recall "
            f"{clean['recall']:.2f} → {dropped['recall']:.2f}")
    keep, drop = abs(dp) <= precision_tol, dr >= recall_drop
    word = "held" if keep and drop else "partly" if keep or drop else "did not hold"
    return Verdict(word, text, rule)


def seam_verdict(real: dict, seamed: dict, z: float = KID_Z) -> Verdict:
    """A seam-aware score should move with seams only: 'held' when the stitched images' inner
    (whole-tile) crops score as real images' do and their straddling crops score worse, both by
    KID against z standard errors; 'partly' when only the straddling crops move as expected."""
    se_inner = float(np.hypot(real["KID_std_inner"], seamed["KID_std_inner"]))
    se_str = float(np.hypot(real["KID_std_straddle"], seamed["KID_std_straddle"]))
    same_inner = abs(seamed["KID_inner"] - real["KID_inner"]) <= z * se_inner
    moved = seamed["KID_straddle"] - real["KID_straddle"] > z * se_str
    rule = (f"stitched − real KID: inner crops within {z:g} s.e., straddling crops above "
            f"{z:g} s.e.")
    text = (f"KID straddling {seamed['KID_straddle']:.4f} against {real['KID_straddle']:.4f}, "
            f"inner {seamed['KID_inner']:.4f} against {real['KID_inner']:.4f}")
    word = "held" if same_inner and moved else "partly" if moved else "did not hold"
    return Verdict(word, text, rule)


def ranking_verdict(a: dict, b: dict, labels=("A", "B")) -> Verdict:
    """Whether FID@1k and FID∞ rank two models the same way (a and b: rows of models_table)."""
    by_1k = "<" if a["fid_1k"] < b["fid_1k"] else ">"
    by_inf = "<" if a["fid_inf"] < b["fid_inf"] else ">"
    gap = abs(a["fid_inf"] - b["fid_inf"])
    err = float(np.hypot(a["fit_error"], b["fit_error"]))
    rule = "same order under FID@1k and FID∞, and the FID∞ gap above 2 fit errors"
    text = (f"{labels[0]} against {labels[1]}: FID@1k {a['fid_1k']:.1f} {by_1k} "
            f"{b['fid_1k']:.1f}, FID∞ {a['fid_inf']:.1f} {by_inf} {b['fid_inf']:.1f}")
    if by_1k != by_inf:
        return Verdict("did not hold", text, rule)
    return Verdict("held" if gap > 2 * err else "inconclusive", text, rule)
