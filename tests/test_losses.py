"""Losses: weighting formulas, EDM loss, VP loss identities, the hybrid VLB, t samplers, label dropout."""

import math

import pytest
import torch
from torch import nn

from pdlib.losses import (EDMLoss, VPLoss, _log_sub_exp, discretized_gaussian_log_likelihood, drop_labels,
                          loss_weight, normal_kl, uniform_t, uniform_t_in_snr_interval, vb_terms_bpd)
from pdlib.precond import VPPrecond, eps_from_x0, prediction_target
from pdlib.schedules import vp_schedule


def test_weightings_formulas():
    abar = torch.tensor([0.9, 0.5, 0.2, 0.01], dtype=torch.float64)
    snr = abar / (1 - abar)                              # 9, 1, 0.25, 1/99
    sigma2 = (1 - abar) / abar
    torch.testing.assert_close(loss_weight("none", abar), torch.ones(4, dtype=torch.float64))
    torch.testing.assert_close(loss_weight("eps", abar), torch.ones(4, dtype=torch.float64))
    torch.testing.assert_close(loss_weight("sqrt_snr", abar), torch.tensor([3.0, 1.0, 0.5, 99 ** -0.5], dtype=torch.float64))
    torch.testing.assert_close(loss_weight("p2", abar), snr / (1 + snr).sqrt())          # SNR·√(1−ᾱ)
    torch.testing.assert_close(loss_weight("snr", abar), snr)
    torch.testing.assert_close(loss_weight("snr+1", abar), snr + 1)
    torch.testing.assert_close(loss_weight("truncated_snr", abar), torch.tensor([9.0, 1.0, 1.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(loss_weight("min_snr_5", abar), torch.tensor([5.0, 1.0, 0.25, 1 / 99], dtype=torch.float64))
    torch.testing.assert_close(loss_weight("min_snr_0.5", abar), torch.tensor([0.5, 0.5, 0.25, 1 / 99], dtype=torch.float64))
    torch.testing.assert_close(loss_weight("edm", abar), (sigma2 + 0.25) / (sigma2 * 0.25))
    assert loss_weight("edm", torch.tensor([0.0], dtype=torch.float64)).item() == 4.0  # finite at σ = ∞
    with pytest.raises(ValueError, match="name"):
        loss_weight("snr2", abar)
    with pytest.raises(ValueError, match="min_snr_0"):
        loss_weight("min_snr_0", abar)


def _edm_draws(seed, x0, P_mean=-1.2, P_std=1.2):
    g = torch.Generator().manual_seed(seed)
    sigma = (torch.randn(x0.shape[0], generator=g) * P_std + P_mean).exp()
    eps = torch.randn(x0.shape, generator=g, dtype=x0.dtype)
    return sigma, eps


def test_edm_loss_reference():
    x0 = torch.randn(6, 2, 4, 4)
    loss_fn = EDMLoss()
    # a perfect denoiser has zero loss
    oracle = lambda x, sigma, **c: x0
    assert loss_fn(oracle, x0, torch.Generator().manual_seed(0)).abs().max().item() == 0
    # D = 0: loss = λ(σ)·mean x0² with the same draws of σ
    zero = lambda x, sigma, **c: torch.zeros_like(x)
    sigma, _ = _edm_draws(3, x0)
    lam = (sigma ** 2 + 0.25) / (sigma * 0.5) ** 2
    torch.testing.assert_close(loss_fn(zero, x0, torch.Generator().manual_seed(3)), lam * x0.pow(2).mean(dim=(1, 2, 3)))
    # D = identity: loss = λσ²·mean ε²; and the noisy input is x0 + σε
    seen = {}

    def ident(x, sigma, **c):
        seen.update(c)
        return x
    sigma, eps = _edm_draws(4, x0)
    out = loss_fn(ident, x0, torch.Generator().manual_seed(4), class_labels=torch.zeros(6, dtype=torch.long))
    torch.testing.assert_close(out, ((sigma ** 2 + 0.25) / 0.25) * eps.pow(2).mean(dim=(1, 2, 3)))
    assert "class_labels" in seen
    # lognormal σ: ln σ has the configured mean/std
    s = EDMLoss(P_mean=-1.2, P_std=1.2).sample_sigma(20000, torch.Generator().manual_seed(5)).log()
    assert abs(s.mean().item() + 1.2) < 0.03 and abs(s.std().item() - 1.2) < 0.03


class TinyNet(nn.Module):
    """A deterministic random conv net F(x_t, t) (t enters through a scalar gain)."""

    def __init__(self, C=2, out=None):
        super().__init__()
        self.conv = nn.Conv2d(C, out or C, 3, padding=1)

    def forward(self, x_in, t, class_labels=None):
        return self.conv(x_in) * (1 + t.reshape(-1, 1, 1, 1) / 1000)


@pytest.mark.parametrize("prediction, equivalent", [("eps", "snr"), ("v", "snr+1"), ("x0", "none")])
def test_vp_native_loss_equals_x0_space_weighting(prediction, equivalent):
    """‖ε−ε̂‖² = SNR‖x0−x̂0‖², ‖v−v̂‖² = (SNR+1)‖x0−x̂0‖²: the native loss equals a weighting."""
    torch.manual_seed(0)
    sched = vp_schedule("linear")
    pre = VPPrecond(TinyNet().double(), sched, prediction)
    x0 = torch.randn(8, 2, 4, 4, dtype=torch.float64)
    native = VPLoss(sched, prediction, "none")(pre, x0, torch.Generator().manual_seed(1))
    weighted = VPLoss(sched, prediction, equivalent)(pre, x0, torch.Generator().manual_seed(1))
    torch.testing.assert_close(native, weighted, rtol=1e-9, atol=1e-12)
    assert native.shape == (8,) and bool((native > 0).all())


def test_vp_loss_reference_x0_weighted():
    """Luhman: mean λ_t (x0 − x̂0)², λ = √SNR, with draws replicated by hand."""
    torch.manual_seed(0)
    sched = vp_schedule("linear")
    net = TinyNet().double()
    pre = VPPrecond(net, sched, "x0")
    x0 = torch.randn(5, 2, 4, 4, dtype=torch.float64)
    got = VPLoss(sched, "x0", "sqrt_snr")(pre, x0, torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    t = torch.randint(0, 1000, (5,), generator=g)
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    abar = sched.alphas_cumprod[t].reshape(-1, 1, 1, 1)
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
    x0_hat = net(x_t, t.double())
    want = ((abar / (1 - abar)).sqrt() * (x0 - x0_hat) ** 2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(got, want)


class OracleNet(nn.Module):
    def __init__(self, x0, sched, prediction):
        super().__init__()
        self.x0, self.sched, self.prediction = x0, sched, prediction

    def forward(self, x_t, t, class_labels=None):
        abar = self.sched.alphas_cumprod[t.long()].reshape(-1, 1, 1, 1)
        return prediction_target(self.x0, eps_from_x0(self.x0, x_t, abar), abar, self.prediction)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("weighting", ["none", "p2", "min_snr_5", "truncated_snr"])
def test_vp_loss_oracle_is_zero(prediction, weighting):
    sched = vp_schedule("cosine")
    x0 = torch.randn(4, 1, 3, 3, dtype=torch.float64)
    pre = VPPrecond(OracleNet(x0, sched, prediction), sched, prediction)
    loss = VPLoss(sched, prediction, weighting, t_sampler=lambda B, g: torch.tensor([0, 10, 500, 998]))
    assert loss(pre, x0, torch.Generator().manual_seed(0)).abs().max().item() < 1e-12


def test_normal_kl_matches_torch():
    m1, m2 = torch.randn(10, dtype=torch.float64), torch.randn(10, dtype=torch.float64)
    lv1, lv2 = torch.randn(10, dtype=torch.float64), torch.randn(10, dtype=torch.float64)
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(m1, (0.5 * lv1).exp()),
                                            torch.distributions.Normal(m2, (0.5 * lv2).exp()))
    torch.testing.assert_close(normal_kl(m1, lv1, m2, lv2), ref)


@pytest.mark.parametrize("mean, log_scale", [(0.0, -3.0), (0.9, -1.0), (-0.99, -6.0), (0.3, 0.5)])
def test_discretized_likelihood_is_normalized(mean, log_scale):
    levels = torch.linspace(-1, 1, 256, dtype=torch.float64)
    ll = discretized_gaussian_log_likelihood(levels, torch.full_like(levels, mean), torch.full_like(levels, log_scale))
    assert ll.exp().sum().item() == pytest.approx(1.0, abs=1e-9)
    assert bool((ll <= 0).all()) and bool(torch.isfinite(ll).all())


def test_vb_terms_zero_for_exact_posterior():
    sched = vp_schedule("linear")
    x0 = torch.rand(4, 1, 4, 4, dtype=torch.float64) * 2 - 1
    t = torch.tensor([1, 50, 400, 999])
    abar = sched.alphas_cumprod[t].reshape(-1, 1, 1, 1)
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * torch.randn_like(x0)
    vb = vb_terms_bpd(sched, x0, x_t, t, x0, -torch.ones_like(x0))           # v = −1 → β̃
    assert vb.abs().max().item() < 1e-12
    vb_prior = vb_terms_bpd(sched, x0, x_t, t, x0, torch.ones_like(x0))      # v = +1 → β: KL > 0
    assert bool((vb_prior > 0).all())


class FreeOutput(nn.Module):
    """Returns a learnable tensor regardless of its input: gradients land on the outputs directly."""

    def __init__(self, shape):
        super().__init__()
        self.out = nn.Parameter(torch.randn(shape, dtype=torch.float64) * 0.1)

    def forward(self, x_in, t, class_labels=None):
        return self.out + 0 * x_in.sum()


def test_hybrid_loss_stops_mean_gradient_and_scales_by_T():
    sched = vp_schedule("linear")
    B, C = 4, 2
    x0 = (torch.rand(B, C, 4, 4, dtype=torch.float64) * 2 - 1)
    t_fixed = torch.tensor([0, 3, 200, 900])
    sampler = lambda batch, g: t_fixed
    net = FreeOutput((B, 2 * C, 4, 4))
    pre = VPPrecond(net, sched, "eps", learn_sigma=True)
    hybrid = VPLoss(sched, "eps", learn_sigma=True, t_sampler=sampler)
    simple = VPLoss(sched, "eps", learn_sigma=True, t_sampler=sampler, lambda_vlb=0.0)
    l_h = hybrid(pre, x0, torch.Generator().manual_seed(0))
    l_h.sum().backward()
    g_h = net.out.grad.clone()
    net.out.grad = None
    l_s = simple(pre, x0, torch.Generator().manual_seed(0))
    l_s.sum().backward()
    g_s = net.out.grad.clone()
    torch.testing.assert_close(g_h[:, :C], g_s[:, :C])              # the VLB does not move the mean
    assert g_h[:, C:].abs().sum() > 0 and g_s[:, C:].abs().sum() == 0
    # the difference is λ_vlb·T·L_t (ADM: vb·T/1000)
    g = torch.Generator().manual_seed(0)
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    abar = sched.alphas_cumprod[t_fixed].reshape(-1, 1, 1, 1)
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
    out = net.out.detach()
    x0_hat = (x_t - (1 - abar).sqrt() * out[:, :C]) / abar.sqrt()
    vb = vb_terms_bpd(sched, x0, x_t, t_fixed, x0_hat, out[:, C:])
    torch.testing.assert_close((l_h - l_s).detach(), 1e-3 * 1000 * vb)


def test_t_samplers():
    g = torch.Generator().manual_seed(0)
    t = uniform_t(1000)(50000, g)
    assert t.dtype == torch.int64 and t.min() == 0 and t.max() == 999
    assert abs(t.double().mean().item() - 499.5) < 5
    sched = vp_schedule("linear")
    hi = uniform_t_in_snr_interval(sched, math.inf, 0.25)          # model 0: high SNR, t < 396
    lo = uniform_t_in_snr_interval(sched, 0.25, 0.0)                # model 1: t >= 396
    th, tl = hi(20000, g), lo(20000, g)
    assert th.min() == 0 and th.max() == 395 and th.unique().numel() == 396
    assert tl.min() == 396 and tl.max() == 999
    with pytest.raises(ValueError, match="snr_hi"):
        uniform_t_in_snr_interval(sched, 0.1, 0.2)
    with pytest.raises(ValueError, match="no step"):
        uniform_t_in_snr_interval(sched, 1e9, 1e8)


def test_drop_labels_rate():
    labels = torch.randint(0, 10, (200000,), generator=torch.Generator().manual_seed(0))
    out = drop_labels(labels, 0.1, 10, torch.Generator().manual_seed(1))
    dropped = (out == 10).double().mean().item()
    assert abs(dropped - 0.1) < 0.003                                # 5 standard errors
    kept = out != 10
    assert torch.equal(out[kept], labels[kept])
    assert torch.equal(drop_labels(labels, 0.0, 10), labels)
    assert bool((drop_labels(labels[:100], 1.0, 10) == 10).all())
    a = drop_labels(labels[:1000], 0.5, 10, torch.Generator().manual_seed(2))
    b = drop_labels(labels[:1000], 0.5, 10, torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="p="):
        drop_labels(labels, 1.5, 10)
    with pytest.raises(ValueError, match="labels"):
        drop_labels(labels.float(), 0.1, 10)


def test_bad_inputs():
    sched = vp_schedule("linear")
    with pytest.raises(ValueError, match="weighting|name"):
        VPLoss(sched, "eps", "bogus")
    with pytest.raises(ValueError, match="prediction"):
        VPLoss(sched, "score")
    with pytest.raises(ValueError, match="P_std"):
        EDMLoss(P_std=0)
    with pytest.raises(ValueError, match="VPPrecond"):
        VPLoss(sched)(lambda x, s: x, torch.zeros(1, 1, 2, 2))
    pre = VPPrecond(TinyNet(), sched, "v")
    with pytest.raises(ValueError, match="prediction"):
        VPLoss(sched, "eps")(pre, torch.zeros(1, 2, 4, 4))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_hybrid_loss_gradients_are_finite_in_float32(dtype):
    # float32 regression: the decoder term was -inf at t > 0 (1 - 1e-15 rounds to 1), and the
    # torch.where that discarded it still turned every gradient into NaN
    sched = vp_schedule("linear")
    B, C = 8, 1
    x0 = torch.rand(B, C, 8, 8, generator=torch.Generator().manual_seed(1)).to(dtype) * 2 - 1
    t_fixed = torch.tensor([0, 1, 5, 50, 200, 396, 700, 999])
    net = FreeOutput((B, 2 * C, 8, 8)).to(dtype)
    pre = VPPrecond(net, sched, "x0", learn_sigma=True)
    loss = VPLoss(sched, "x0", weighting="sqrt_snr", learn_sigma=True, t_sampler=lambda b, g: t_fixed)
    values = loss(pre, x0, torch.Generator().manual_seed(0))
    values.sum().backward()
    assert values.dtype == dtype and bool(torch.isfinite(values).all())
    assert bool(torch.isfinite(net.out.grad).all()) and net.out.grad.abs().sum() > 0
    z = torch.tensor([0.0], dtype=dtype)
    assert torch.isfinite(_log_sub_exp(z, z)).all()          # a = b: finite, not log(0)
