"""Samplers against closed forms for Gaussian data (the wrappers are tested in test_denoisers.py).

For data x0 ~ N(μ, s²) per dimension the ideal denoiser is D(x, σ) = μ + s²/(s²+σ²)·(x − μ) and
the probability-flow ODE dx/dσ = (x − D)/σ has the exact solution
x(σ) = μ + (x(σmax) − μ)·√(s²+σ²)/√(s²+σmax²).
"""

import math

import pytest
import torch

from pdlib.schedules import edm_sigmas, respace, sampling_sigmas, vp_schedule
from pdlib.denoisers import DynamicThreshold, NFECounter
from pdlib.samplers import ddim_sample, ddpm_sample, edm_sample, euler_sample, prior_sample

MU = torch.tensor([0.3, -0.2], dtype=torch.float64).reshape(1, 2, 1, 1)
S = torch.tensor([0.5, 0.8], dtype=torch.float64).reshape(1, 2, 1, 1)


def gaussian_D(x, sigma, **cond):
    sigma = sigma.reshape(-1, 1, 1, 1).to(x.dtype)
    return MU + S ** 2 / (S ** 2 + sigma ** 2) * (x - MU)


def exact_flow(x_start, sigma_start, sigma):
    return MU + (x_start - MU) * torch.sqrt(S ** 2 + sigma ** 2) / torch.sqrt(S ** 2 + sigma_start ** 2)


def _error_at_sigma_min(sampler, N, x_start):
    """Max error of the state at σ_min (after step N−2), against the exact ODE solution."""
    sig = edm_sigmas(N)
    states = {}
    sampler(gaussian_D, x_start, sig, callback=lambda d: states.__setitem__(d["i"], d["x"]))
    exact = exact_flow(x_start, sig[0].item(), sig[N - 1].item())
    return (states[N - 2] - exact).abs().max().item()


def _ratios(sampler):
    g = torch.Generator().manual_seed(0)
    x_start = torch.randn(16, 2, 2, 2, generator=g, dtype=torch.float64) * 80
    errs = [_error_at_sigma_min(sampler, N, x_start) for N in (16, 32, 64, 128)]
    return errs, [errs[k] / errs[k + 1] for k in range(len(errs) - 1)]


def test_heun_is_second_order():
    errs, ratios = _ratios(edm_sample)
    assert all(3.0 < r < 5.5 for r in ratios), (errs, ratios)
    assert errs[-1] < 2e-3


def test_euler_is_first_order():
    errs, ratios = _ratios(euler_sample)
    assert all(1.7 < r < 2.3 for r in ratios), (errs, ratios)


def test_ddim_eta0_is_euler_and_converges_to_the_ode():
    g = torch.Generator().manual_seed(1)
    x_start = torch.randn(8, 2, 2, 2, generator=g, dtype=torch.float64) * 80
    sig = edm_sigmas(40)
    torch.testing.assert_close(ddim_sample(gaussian_D, x_start, sig), euler_sample(gaussian_D, x_start, sig),
                               rtol=1e-12, atol=1e-12)
    exact = exact_flow(x_start, 80.0, 0.0)
    errs = [(ddim_sample(gaussian_D, x_start, edm_sigmas(n)) - exact).abs().max().item() for n in (10, 40, 160, 640)]
    assert all(3.0 < errs[k] / errs[k + 1] < 5.0 for k in range(3)), errs   # first order: 4× steps, 4× less
    assert errs[-1] < 0.015, errs
    # on a respaced VP grid too
    vp = sampling_sigmas(respace(vp_schedule("linear"), "ddim100"))
    x_vp = torch.randn(8, 2, 2, 2, generator=g, dtype=torch.float64) * vp[0].item()
    err = (ddim_sample(gaussian_D, x_vp, vp) - exact_flow(x_vp, vp[0].item(), 0.0)).abs().max().item()
    assert err < 0.05


def _recursion_variance(sig, s):
    """Exact variance of the ancestral chain for Gaussian data: x' − μ = k(x − μ) + σ_up·z."""
    V = s ** 2 + sig[0].item() ** 2
    for a, b in zip(sig[:-1].tolist(), sig[1:].tolist()):
        k = (s ** 2 + b ** 2) / (s ** 2 + a ** 2)
        V = k * k * V + (b * b * (a * a - b * b) / (a * a) if b > 0 else 0.0)
    return V


def test_ddpm_marginal_matches_exact_recursion():
    sig = edm_sigmas(200)
    g = torch.Generator().manual_seed(2)
    x = MU + torch.randn(20000, 2, 1, 1, generator=g, dtype=torch.float64) * (S ** 2 + sig[0] ** 2).sqrt()
    out = ddpm_sample(gaussian_D, x, sig, generator=g)
    var = (out - MU).pow(2).mean(dim=(0, 2, 3))
    for c, s in enumerate((0.5, 0.8)):
        assert var[c].item() == pytest.approx(_recursion_variance(sig, s), rel=0.03)
    # ... and η = 1 DDIM is the same chain with the same noise draws
    out_ddim = ddim_sample(gaussian_D, x, sig, eta=1.0, generator=torch.Generator().manual_seed(3))
    out_ddpm = ddpm_sample(gaussian_D, x, sig, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(out_ddim, out_ddpm, rtol=1e-10, atol=1e-10)


def test_ddpm_from_vp_prior_has_right_marginal():
    sig = sampling_sigmas(vp_schedule("linear"))                  # T = 1000, σ0 ≈ 157
    g = torch.Generator().manual_seed(4)
    x = prior_sample((10000, 2, 1, 1), sig, g, vp=True, dtype=torch.float64)
    assert x.std().item() == pytest.approx(math.sqrt(1 + sig[0].item() ** 2), rel=0.03)
    z = (ddpm_sample(gaussian_D, x, sig, generator=g) - MU) / S
    assert abs(z.mean().item()) < 0.04
    assert z.pow(2).mean().item() == pytest.approx(1.0, abs=0.05)


class VarDenoiser(torch.nn.Module):
    learn_sigma = True

    def __init__(self, v):
        super().__init__()
        self.v = v

    def forward(self, x, sigma, **cond):
        return gaussian_D(x, sigma)

    def forward_with_variance(self, x, sigma, **cond):
        return gaussian_D(x, sigma), torch.full_like(x, self.v)


def test_ddpm_learned_variance_interpolates():
    sig = sampling_sigmas(respace(vp_schedule("linear"), "50"))
    x = prior_sample((64, 2, 2, 2), sig, torch.Generator().manual_seed(5), dtype=torch.float64)
    run = lambda d, var: ddpm_sample(d, x, sig, variance=var, generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(run(VarDenoiser(0.0), "auto"), run(gaussian_D, "posterior"))
    torch.testing.assert_close(run(VarDenoiser(1.0), "auto"), run(gaussian_D, "prior"))
    assert not torch.allclose(run(gaussian_D, "prior"), run(gaussian_D, "posterior"))
    with pytest.raises(ValueError, match="learned"):
        run(gaussian_D, "learned")


def test_ddpm_clipped_learned_variance_stays_between_posterior_and_prior():
    """v outside [0, 1] extrapolates log Σ beyond [log β̃, log β]; 'learned_clipped' clips v first."""
    sig = sampling_sigmas(respace(vp_schedule("linear"), "20"))
    x = prior_sample((256, 2, 2, 2), sig, torch.Generator().manual_seed(5), dtype=torch.float64)
    run = lambda d, var: ddpm_sample(d, x, sig, variance=var, generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(run(VarDenoiser(4.0), "learned_clipped"), run(gaussian_D, "prior"))
    torch.testing.assert_close(run(VarDenoiser(-3.0), "learned_clipped"), run(gaussian_D, "posterior"))
    torch.testing.assert_close(run(VarDenoiser(0.3), "learned_clipped"), run(VarDenoiser(0.3), "learned"))
    # unclipped, v = 4 adds more noise than the prior variance β: the samples spread wider
    assert run(VarDenoiser(4.0), "learned").std() > 1.2 * run(gaussian_D, "prior").std()
    with pytest.raises(ValueError, match="learned_clipped"):
        run(gaussian_D, "learned_clipped")


def test_determinism_and_seeds():
    sig = edm_sigmas(8)
    x = torch.randn(4, 2, 3, 3, generator=torch.Generator().manual_seed(0)) * 80
    for f, kw in ((edm_sample, dict(S_churn=40)), (ddim_sample, dict(eta=0.5)), (ddpm_sample, {})):
        a = f(gaussian_D, x, sig, generator=torch.Generator().manual_seed(1), **kw)
        b = f(gaussian_D, x, sig, generator=torch.Generator().manual_seed(1), **kw)
        c = f(gaussian_D, x, sig, generator=torch.Generator().manual_seed(2), **kw)
        assert torch.equal(a, b) and not torch.allclose(a, c)
        assert a.dtype == torch.float32 and a.shape == x.shape


def test_nfe_and_callback():
    x = torch.randn(2, 2, 2, 2) * 80
    for f, n, nfe in ((edm_sample, 10, 19), (euler_sample, 10, 10), (ddim_sample, 7, 7), (ddpm_sample, 5, 5)):
        counter = NFECounter(gaussian_D)
        calls = []
        f(counter, x, edm_sigmas(n), callback=calls.append, generator=torch.Generator().manual_seed(0))
        assert counter.nfe == nfe
        assert [c["i"] for c in calls] == list(range(n))
        assert set(calls[0]) == {"i", "x", "sigma", "sigma_next", "denoised"}
        assert calls[-1]["sigma_next"] == 0.0 and calls[0]["sigma"] == pytest.approx(80.0)


def test_churn_changes_path_only_inside_window():
    x = torch.randn(3, 2, 2, 2, generator=torch.Generator().manual_seed(0)).double() * 80
    sig = edm_sigmas(10)
    plain = edm_sample(gaussian_D, x, sig)
    outside = edm_sample(gaussian_D, x, sig, S_churn=30, S_min=100, S_max=200, generator=torch.Generator().manual_seed(1))
    inside = edm_sample(gaussian_D, x, sig, S_churn=30, S_min=0.05, S_max=50, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(plain, outside, rtol=0, atol=0)
    assert not torch.allclose(plain, inside)


def test_prior_sample():
    sig = edm_sigmas(5)
    g = torch.Generator().manual_seed(0)
    x = prior_sample((20000, 1, 1, 1), sig, g, vp=False)
    assert x.dtype == torch.float32 and x.std().item() == pytest.approx(80, rel=0.03)


@pytest.mark.parametrize("call, word", [
    (lambda: edm_sample(gaussian_D, torch.zeros(1, 1, 2, 2), [1.0, 2.0, 0.0]), "decreasing"),
    (lambda: edm_sample(gaussian_D, torch.zeros(1, 1, 2, 2), [1.0]), "sigmas"),
    (lambda: edm_sample(gaussian_D, torch.zeros(1, 1, 2, 2), [math.inf, 0.0]), "sigmas"),
    (lambda: edm_sample(gaussian_D, torch.zeros(1, 1, 2, 2), [1.0, 0.0], S_churn=-1), "S_churn"),
    (lambda: ddim_sample(gaussian_D, torch.zeros(1, 1, 2, 2), [1.0, 0.0], eta=-0.1), "eta"),
    (lambda: ddpm_sample(gaussian_D, torch.zeros(1, 1, 2, 2), [1.0, 0.0], variance="big"), "variance"),
    (lambda: ddpm_sample(gaussian_D, torch.zeros(4), [1.0, 0.0]), "x"),
])
def test_bad_inputs(call, word):
    with pytest.raises(ValueError, match=word):
        call()


class _ConvNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 4, 3, padding=1)

    def forward(self, x_in, t, class_labels=None):
        return self.conv(x_in) * (1 + t.reshape(-1, 1, 1, 1) / 1000)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA"))])
def test_device_paths(device):
    """A float32 VP net with learned variance, wrapped, on each device, with a generator there."""
    from pdlib.precond import VPPrecond
    dev = torch.device(device)
    torch.manual_seed(0)
    pre = VPPrecond(_ConvNet().to(dev), vp_schedule("linear"), "eps", learn_sigma=True)
    sig = sampling_sigmas(respace(vp_schedule("linear"), "10"))
    g = torch.Generator(dev).manual_seed(0)
    x = prior_sample((3, 2, 4, 4), sig, g, device=dev)
    for f in (edm_sample, ddim_sample, ddpm_sample):
        out = f(NFECounter(DynamicThreshold(pre)), x, sig, generator=g)
        assert out.device.type == dev.type and out.dtype == torch.float32
        assert bool(torch.isfinite(out).all()) and out.abs().max() <= 1 + 1e-6
