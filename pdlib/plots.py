"""Plots and small measurements the σ-space chapter draws: sampler trajectories, ODE error against NFE.

The book's figure style is set once, here: ``use_book_style()`` (called by every chapter's import
cell) sizes figures for the content column (``COLUMN_WIDTH`` inches at 100 dpi = the column's
width in CSS pixels) with fonts readable at that size, and makes the inline backend save PNGs at
twice that resolution (print quality, shown at column width). ``animation_html`` is matplotlib's
``to_jshtml`` without its CDN stylesheet (the book is offline): the player's buttons are Unicode.

Trajectories come from a sampler's `callback` (pdlib.samplers: `dict(i, x, sigma, sigma_next,
denoised)` after each step); `TrajectoryRecorder` collects them so a notebook never touches the
sampler. Error curves are RMS distances to a reference solution; `loglog_slope` and
`nfe_at_error` read the order of a solver and the cost of a target error off such a curve.
"""
from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["COLUMN_WIDTH", "use_book_style", "figsize", "animation_html", "TrajectoryRecorder", "rms", "loglog_slope", "nfe_at_error", "plot_pixel_trajectories",
           "plot_error_vs_nfe", "noise_denoise_animation"]


COLUMN_WIDTH = 6.7          # inches: the book's content column is ~676 CSS px wide; figures at 100 dpi
BOOK_DPI = 100              # CSS pixels per inch of a figure as shown
BOOK_RC = {
    "figure.dpi": BOOK_DPI,
    "figure.figsize": (COLUMN_WIDTH, 3.4),
    "font.size": 10, "axes.titlesize": 10, "axes.labelsize": 10, "legend.fontsize": 9,
    "xtick.labelsize": 9, "ytick.labelsize": 9, "figure.titlesize": 10,
    "savefig.bbox": "tight",
}


def use_book_style() -> None:
    """Set the book's figure defaults (see the module docstring) for this process / kernel."""
    import matplotlib as mpl

    mpl.rcParams.update(BOOK_RC)
    try:
        from matplotlib_inline.backend_inline import set_matplotlib_formats
    except ImportError:                                       # no IPython: plain matplotlib
        return
    set_matplotlib_formats("retina")                          # PNG at 2× dpi, shown at 1×


def figsize(height: float, frac: float = 1.0) -> tuple[float, float]:
    """(width, height) in inches of a figure `frac` of the content column wide."""
    if not 0 < frac <= 1:
        raise ValueError(f"frac={frac!r} is invalid; allowed: 0 < frac <= 1 (of the column width)")
    return (COLUMN_WIDTH * frac, height)


# Glyphs every common font has (DejaVu, Liberation): ⏮ ⏸ ⏭ are missing from many and show as boxes
_FA_ICONS = {"fa-minus": "−", "fa-fast-backward": "⇤", "fa-step-backward": "◀",
             "fa-play fa-flip-horizontal": "◁", "fa-pause": "‖", "fa-play": "▷",
             "fa-step-forward": "▶", "fa-fast-forward": "⇥", "fa-plus": "+"}


def animation_html(anim, **kw) -> str:
    """``anim.to_jshtml()`` for an offline page: no font-awesome stylesheet from a CDN; the
    player's icons become Unicode characters. Display with ``IPython.display.HTML``."""
    import re

    text = anim.to_jshtml(**kw)
    text, n = re.subn(r'<link rel="stylesheet"\s+href="https?://[^"]*font-awesome[^"]*">', "", text)
    for cls, char in sorted(_FA_ICONS.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(f'<i class="fa {cls}"></i>', f'<span aria-hidden="true">{char}</span>')
    if n != 1 or "<i class=\"fa " in text or "://" in re.sub(r"data:[^\"']*", "", text):
        raise RuntimeError("matplotlib's to_jshtml template changed: pdlib.plots.animation_html "
                           "could not make it offline (update _FA_ICONS / the link pattern)")
    return text


class TrajectoryRecorder:
    """A sampler callback that stores σ, the state x and the denoised estimate D of every step."""

    def __init__(self,
        pixels: list[tuple[int, int, int]] | None = None,   # (c, h, w) of image 0 to trace; None = none
        keep_images: bool = True,                           # also keep x and D of image 0 per step
    ):
        self.pixels = list(pixels or [])
        self.keep_images = bool(keep_images)
        self.sigmas: list[float] = []          # σ at the start of each step
        self.sigmas_next: list[float] = []     # σ after each step
        self.values: list[list[float]] = []    # traced pixels of x after each step
        self.x: list[torch.Tensor] = []        # (C, H, W) state of image 0 after each step
        self.denoised: list[torch.Tensor] = [] # (C, H, W) D(x, σ) of image 0 at each step

    def __call__(self, info: dict) -> None:
        x, d = info["x"], info["denoised"]                  # (B, C, H, W)
        self.sigmas.append(float(info["sigma"]))
        self.sigmas_next.append(float(info["sigma_next"]))
        self.values.append([float(x[0, c, h, w]) for c, h, w in self.pixels])
        if self.keep_images:
            self.x.append(x[0].detach().float().cpu().clone())
            self.denoised.append(d[0].detach().float().cpu().clone())


def rms(a: torch.Tensor, b: torch.Tensor) -> float:
    """Root-mean-square distance √mean((a − b)²) over all elements, in float64."""
    if a.shape != b.shape:
        raise ValueError(f"a has shape {tuple(a.shape)} but b has {tuple(b.shape)}; allowed: equal shapes")
    return float(((a.double() - b.double()) ** 2).mean().sqrt())


def _curve(nfe, err) -> tuple[np.ndarray, np.ndarray]:
    n, e = np.asarray(nfe, dtype=np.float64), np.asarray(err, dtype=np.float64)
    if n.ndim != 1 or n.shape != e.shape or n.size < 2:
        raise ValueError(f"nfe and err have shapes {n.shape} and {e.shape}; allowed: two 1-D "
                         f"sequences of the same length >= 2")
    if (n <= 0).any() or (e <= 0).any():
        raise ValueError("nfe and err must be > 0 (they are read on log scales)")
    order = np.argsort(n)
    return n[order], e[order]


def loglog_slope(nfe, err) -> float:
    """Least-squares slope of log(err) against log(NFE); a solver of order p gives about −p."""
    n, e = _curve(nfe, err)
    return float(np.polyfit(np.log(n), np.log(e), 1)[0])


def nfe_at_error(nfe, err, target: float) -> tuple[float, bool]:
    """(NFE at which the curve first falls to `target`, extrapolated?) by log-log interpolation.

    Between measured points the curve is taken as a straight line in log-log; beyond the last point
    it is extended with the slope of the last two points (then the flag is True). A curve that is
    below the target at its first point returns that point's NFE.
    """
    if not target > 0:
        raise ValueError(f"target={target!r} is invalid; allowed: a value > 0")
    n, e = _curve(nfe, err)
    ln, le, lt = np.log(n), np.log(e), math.log(target)
    if le[0] <= lt:
        return float(n[0]), False
    for i in range(len(n) - 1):
        if le[i + 1] <= lt:
            w = (lt - le[i]) / (le[i + 1] - le[i])
            return float(math.exp(ln[i] + w * (ln[i + 1] - ln[i]))), False
    slope = (le[-1] - le[-2]) / (ln[-1] - ln[-2])
    if slope >= 0:
        return float("inf"), True
    return float(math.exp(ln[-1] + (lt - le[-1]) / slope)), True


def plot_pixel_trajectories(ax, rec: TrajectoryRecorder, title: str | None = None):
    """The traced pixels of x against σ (log axis, time runs right to left as σ falls)."""
    if not rec.pixels:
        raise ValueError("rec.pixels is empty; allowed: a TrajectoryRecorder built with pixels=[...]")
    s = np.asarray(rec.sigmas_next, dtype=np.float64)
    v = np.asarray(rec.values)                                  # (steps, pixels)
    keep = s > 0                                                # σ = 0 has no place on a log axis
    for j, (c, h, w) in enumerate(rec.pixels):
        line, = ax.plot(s[keep], v[keep, j], marker=".", lw=1, label=f"pixel ({h}, {w})")
        ax.axhline(v[-1, j], color=line.get_color(), lw=0.6, ls=":")   # final value (σ = 0)
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("noise level σ (after the step)")
    ax.set_ylabel("pixel value of x")
    ax.set_title(title or "pixel trajectories (dotted: final value)")
    ax.legend(fontsize=7)
    return ax


def plot_error_vs_nfe(ax, curves: dict, slopes=(1, 2), target: float | None = None,
                      title: str | None = None):
    """Log-log RMS error against NFE per solver, with guide lines of slope −p anchored at each curve's start."""
    styles = {}
    for k, (name, (nfe, err)) in enumerate(curves.items()):
        n, e = _curve(nfe, err)
        line, = ax.plot(n, e, marker="o", ms=4, lw=1.5, label=name,
                        ls="--" if k % 2 else "-")
        styles[name] = (n, e, line.get_color())
    for p in slopes:
        anchors = [v for v in styles.values() if abs(loglog_slope(v[0], v[1]) + p) < 0.75]
        n, e, _ = anchors[0] if anchors else next(iter(styles.values()))
        ax.plot(n, e[0] * (n / n[0]) ** (-p), color="grey", lw=0.8, ls=":")
        ax.annotate(f"slope −{p}", (n[-1], e[0] * (n[-1] / n[0]) ** (-p)), fontsize=8, color="grey")
    if target is not None:
        ax.axhline(target, color="k", lw=0.6, ls="-.", label=f"target {target:g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("network evaluations (NFE)")
    ax.set_ylabel("RMS distance to the reference solution")
    ax.set_title(title or "ODE discretisation error")
    ax.legend(fontsize=8)
    return ax


def noise_denoise_animation(x0: torch.Tensor, noisy: list, denoised: list, sigmas, figsize=(4.2, 1.6),
                            dpi: int = 100):
    """A FuncAnimation over σ: clean image, x0 + σε, and D(x, σ) (images (C, H, W) in [−1, 1])."""
    from matplotlib import animation
    from matplotlib import pyplot as plt
    from pdlib.viz import to_uint8

    if not (len(noisy) == len(denoised) == len(sigmas) >= 1):
        raise ValueError(f"noisy, denoised and sigmas have lengths {len(noisy)}, {len(denoised)}, "
                         f"{len(sigmas)}; allowed: equal and >= 1")
    fig, axes = plt.subplots(1, 3, figsize=figsize, dpi=dpi)
    arts = []
    for ax, img, name in zip(axes, (x0, noisy[0], denoised[0]), ("x0", "x0 + σε", "D(x, σ)")):
        arts.append(ax.imshow(to_uint8(img), cmap="gray", vmin=0, vmax=255))
        ax.set_title(name, fontsize=8)
        ax.set_axis_off()
    label = fig.suptitle("", fontsize=8)

    def frame(i):
        arts[1].set_data(to_uint8(noisy[i]))
        arts[2].set_data(to_uint8(denoised[i]))
        label.set_text(f"σ = {float(sigmas[i]):.3g}")
        return arts[1:] + [label]

    frame(0)
    anim = animation.FuncAnimation(fig, frame, frames=len(sigmas), interval=500, blit=False)
    plt.close(fig)
    return anim
