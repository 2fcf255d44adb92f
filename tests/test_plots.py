"""pdlib.plots: trajectory recording from a real sampler, error-curve measurements, and the figures."""
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from pdlib.plots import (TrajectoryRecorder, loglog_slope, nfe_at_error,  # noqa: E402
                         noise_denoise_animation, plot_error_vs_nfe, plot_pixel_trajectories, rms)
from pdlib.samplers import edm_sample, euler_sample  # noqa: E402
from pdlib.schedules import edm_sigmas  # noqa: E402


def gaussian_denoiser(x, sigma):
    """Exact D for data ~ N(0, s²I), s = 0.5: D = x·s²/(s²+σ²)."""
    s2 = 0.25
    return x * s2 / (s2 + sigma.reshape(-1, 1, 1, 1) ** 2)


def test_recorder_sees_every_step_and_matches_output():
    g = torch.Generator().manual_seed(0)
    sig = edm_sigmas(6)
    x = torch.randn(2, 1, 4, 4, generator=g, dtype=torch.float64) * sig[0]
    rec = TrajectoryRecorder(pixels=[(0, 1, 2), (0, 3, 3)])
    out = edm_sample(gaussian_denoiser, x, sig, callback=rec)
    assert rec.sigmas == pytest.approx(sig[:-1].tolist())
    assert rec.sigmas_next == pytest.approx(sig[1:].tolist())
    assert len(rec.x) == len(rec.denoised) == 6
    assert rec.values[-1] == pytest.approx([out[0, 0, 1, 2].item(), out[0, 0, 3, 3].item()])
    assert torch.allclose(rec.x[-1], out[0].float())


def test_rms_and_shape_check():
    a = torch.zeros(2, 3)
    assert rms(a, a + 2.0) == pytest.approx(2.0)
    assert rms(a, torch.tensor([[3.0, 0, 0], [0, 0, 0]])) == pytest.approx(math.sqrt(9 / 6))
    with pytest.raises(ValueError, match="shape"):
        rms(a, torch.zeros(3, 2))


def test_loglog_slope_and_nfe_at_error_on_power_laws():
    n = np.array([4, 8, 16, 32])
    assert loglog_slope(n, 3.0 / n) == pytest.approx(-1.0)
    assert loglog_slope(n, 5.0 / n ** 2) == pytest.approx(-2.0)
    # err = 1/n reaches 0.1 at n = 10 (interpolated), 0.01 at n = 100 (extrapolated).
    assert nfe_at_error(n, 1.0 / n, 0.1) == (pytest.approx(10.0), False)
    assert nfe_at_error(n, 1.0 / n, 0.01) == (pytest.approx(100.0), True)
    assert nfe_at_error(n, 1.0 / n, 1.0) == (4.0, False)          # already below at the first point
    assert nfe_at_error([1, 2], [1.0, 1.0], 0.5) == (math.inf, True)
    with pytest.raises(ValueError, match="target"):
        nfe_at_error(n, 1.0 / n, 0.0)
    with pytest.raises(ValueError, match="same length"):
        loglog_slope([1, 2, 3], [1, 2])


def test_euler_order_one_on_exact_denoiser():
    """The helpers read Euler's order off a real solve: slope ≈ −1 against a fine Heun reference."""
    g = torch.Generator().manual_seed(1)
    eps = torch.randn(1, 1, 4, 4, generator=g, dtype=torch.float64)
    ref_sig = edm_sigmas(400)
    ref = edm_sample(gaussian_denoiser, eps * ref_sig[0], ref_sig)
    steps = [8, 16, 32, 64]
    err = []
    for N in steps:
        sig = edm_sigmas(N)
        err.append(rms(euler_sample(gaussian_denoiser, eps * sig[0], sig), ref))
    assert -1.3 < loglog_slope(steps, err) < -0.7


def test_figures_draw():
    sig = edm_sigmas(5)
    x = torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * sig[0]
    rec = TrajectoryRecorder(pixels=[(0, 0, 0)])
    edm_sample(gaussian_denoiser, x, sig, callback=rec)
    fig, (a1, a2) = plt.subplots(1, 2)
    plot_pixel_trajectories(a1, rec)
    assert a1.get_xscale() == "log" and len(a1.lines) == 2           # trace + final-value line
    plot_error_vs_nfe(a2, {"A": ([2, 4, 8], [1, 0.5, 0.25]), "B": ([3, 5, 9], [1, 0.3, 0.1])},
                      target=0.2)
    assert a2.get_xscale() == "log" and a2.get_yscale() == "log"
    plt.close(fig)
    with pytest.raises(ValueError, match="pixels"):
        plot_pixel_trajectories(plt.gca(), TrajectoryRecorder())
    imgs = [torch.zeros(1, 4, 4), torch.ones(1, 4, 4)]
    anim = noise_denoise_animation(torch.zeros(1, 4, 4), imgs, imgs, [0.1, 1.0])
    assert "<script" in anim.to_jshtml()
    with pytest.raises(ValueError, match="lengths"):
        noise_denoise_animation(torch.zeros(1, 4, 4), imgs, imgs[:1], [0.1, 1.0])
