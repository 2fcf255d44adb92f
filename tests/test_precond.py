"""Preconditioners: EDM coefficient identities, D → x as σ → 0, VP oracles for ε / x0 / v."""

import math

import pytest
import torch
from torch import nn

from pdlib.precond import (EDMPrecond, VPPrecond, eps_from_x0, prediction_target, sigma_batch,
                           x0_from_prediction)
from pdlib.schedules import respace, vp_schedule


class Recorder(nn.Module):
    """A net that records its inputs and returns a fixed function of them."""

    def __init__(self, out_channels=None):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.out_channels = out_channels

    def forward(self, x_in, noise_labels, class_labels=None):
        self.seen = (x_in.clone(), noise_labels.clone(), class_labels)
        return self.conv(x_in[:, :3])


def test_edm_coefficients():
    pre = EDMPrecond(Recorder(), sigma_data=0.5)
    sigma = torch.tensor([0.002, 0.1, 0.5, 1.0, 80.0], dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = pre.coefficients(sigma)
    sd = 0.5
    torch.testing.assert_close(c_skip, sd ** 2 / (sigma ** 2 + sd ** 2))
    torch.testing.assert_close(c_skip + c_out ** 2 / sd ** 2, torch.ones_like(sigma))  # c_skip + c_out²/σd² = 1
    torch.testing.assert_close(c_in ** 2 * (sigma ** 2 + sd ** 2), torch.ones_like(sigma))  # unit-variance input
    torch.testing.assert_close(c_noise, sigma.log() / 4)
    # the training target F = (x0 − c_skip·x)/c_out has unit variance for data of std σd
    var_target = (c_skip ** 2 * sigma ** 2 + (1 - c_skip) ** 2 * sd ** 2) / c_out ** 2
    torch.testing.assert_close(var_target, torch.ones_like(sigma))


def test_edm_forward_net_inputs_and_limit():
    torch.manual_seed(0)
    net = Recorder()
    pre = EDMPrecond(net)
    x = torch.randn(2, 3, 8, 8)
    extra = torch.randn(2, 2, 8, 8)
    labels = torch.tensor([1, 4])
    sigma = torch.tensor([0.3, 7.0])
    out = pre(x, sigma, class_labels=labels, extra=extra)
    x_in, noise, cl = net.seen
    c_in = 1 / (sigma.double() ** 2 + 0.25).sqrt()
    torch.testing.assert_close(x_in[:, :3], (c_in.reshape(-1, 1, 1, 1) * x).float())   # extra AFTER c_in
    torch.testing.assert_close(x_in[:, 3:], extra)
    torch.testing.assert_close(noise, (sigma.double().log() / 4).float())
    assert cl is labels and out.shape == x.shape and out.dtype == torch.float32
    # D → x as σ → 0, for any F
    x64 = x.double()
    d = pre(x64, 1e-9)
    assert d.dtype == torch.float64
    torch.testing.assert_close(d, x64, rtol=0, atol=1e-7)
    # D → σd²-shrunk F-term only at large σ: c_skip → 0
    d_big = pre(x64, 1e6)
    torch.testing.assert_close(d_big, 0.5 * net.conv(net.seen[0][:, :3]).double(), rtol=1e-5, atol=1e-5)


def test_sigma_batch():
    assert sigma_batch(0.5, 3, "cpu").tolist() == [0.5] * 3
    assert sigma_batch(torch.tensor([1.0, 2.0]), 2, "cpu").dtype == torch.float64
    with pytest.raises(ValueError, match="sigma"):
        sigma_batch(torch.ones(3), 2, "cpu")
    with pytest.raises(ValueError, match="sigma"):
        sigma_batch(-1.0, 2, "cpu")


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_parameterization_roundtrip(prediction):
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(4, 2, 3, 3, generator=g, dtype=torch.float64)
    eps = torch.randn(4, 2, 3, 3, generator=g, dtype=torch.float64)
    abar = torch.tensor([0.99, 0.5, 0.1, 1e-3], dtype=torch.float64).reshape(-1, 1, 1, 1)
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
    target = prediction_target(x0, eps, abar, prediction)
    torch.testing.assert_close(x0_from_prediction(target, x_t, abar, prediction), x0)
    torch.testing.assert_close(eps_from_x0(x0, x_t, abar), eps)


class Oracle(nn.Module):
    """Knows x0; returns the exact ε, x0 or v for the VP state and the ORIGINAL t it receives."""

    def __init__(self, x0, train_schedule, prediction, learn_sigma=False):
        super().__init__()
        self.x0, self.sched, self.prediction, self.learn_sigma = x0, train_schedule, prediction, learn_sigma

    def forward(self, x_in, t, class_labels=None):
        assert torch.allclose(t, t.round()), "a VP net receives integer original timesteps here"
        abar = self.sched.alphas_cumprod[t.round().long()].reshape(-1, 1, 1, 1).to(x_in.dtype)
        eps = eps_from_x0(self.x0, x_in, abar)
        out = prediction_target(self.x0, eps, abar, self.prediction)
        if self.learn_sigma:
            out = torch.cat([out, torch.full_like(out, 0.5)], dim=1)
        return out


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("spec", [None, "ddim25"])
def test_vp_oracle_gives_true_x0(prediction, spec):
    train = vp_schedule("linear")
    sched = train if spec is None else respace(train, spec)
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(3, 2, 4, 4, generator=g, dtype=torch.float64)
    pre = VPPrecond(Oracle(x0, train, prediction), train, prediction)
    for k in (0, 5, sched.T - 1):
        sigma = sched.sigmas[k]
        x = x0 + sigma * torch.randn(x0.shape, generator=g, dtype=torch.float64)
        torch.testing.assert_close(pre(x, sigma.expand(3)), x0, rtol=1e-8, atol=1e-8 * (1 + sigma.item()))


def test_vp_learn_sigma_and_variance():
    train = vp_schedule("cosine")
    x0 = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    pre = VPPrecond(Oracle(x0, train, "v", learn_sigma=True), train, "v", learn_sigma=True)
    sigma = train.sigmas[100].expand(2)
    x = x0 + sigma.reshape(-1, 1, 1, 1) * torch.randn_like(x0)
    d, v = pre.forward_with_variance(x, sigma)
    torch.testing.assert_close(d, x0)
    torch.testing.assert_close(pre(x, sigma), x0)
    torch.testing.assert_close(v, torch.full_like(x0, 0.75))        # (0.5 + 1)/2
    with pytest.raises(ValueError, match="learn_sigma"):
        VPPrecond(Oracle(x0, train, "v"), train, "v").forward_with_variance(x, sigma)


def test_vp_input_scaling_and_extra():
    net = Recorder()
    sched = vp_schedule("linear")
    pre = VPPrecond(net, sched, "eps")
    x = torch.randn(2, 3, 5, 5)
    extra = torch.randn(2, 1, 5, 5)
    sigma = sched.sigmas[[10, 700]].float()
    pre(x, sigma, extra=extra)
    x_in, t, _ = net.seen
    torch.testing.assert_close(x_in[:, :3], x / (1 + sigma.reshape(-1, 1, 1, 1) ** 2).sqrt())
    torch.testing.assert_close(x_in[:, 3:], extra)
    torch.testing.assert_close(t, torch.tensor([10.0, 700.0]), rtol=0, atol=1e-3)


def test_bad_inputs():
    sched = vp_schedule("linear")
    with pytest.raises(ValueError, match="prediction"):
        VPPrecond(Recorder(), sched, "score")
    with pytest.raises(ValueError, match="schedule"):
        VPPrecond(Recorder(), "linear")
    with pytest.raises(ValueError, match="sigma_data"):
        EDMPrecond(Recorder(), sigma_data=0)
    with pytest.raises(ValueError, match="net output"):          # learn_sigma needs 2C outputs
        VPPrecond(Recorder(), sched, learn_sigma=True)(torch.randn(1, 3, 4, 4), 1.0)
    with pytest.raises(ValueError, match="extra"):
        EDMPrecond(Recorder())(torch.randn(2, 3, 4, 4), 1.0, extra=torch.randn(2, 1, 3, 3))
    with pytest.raises(ValueError, match="x"):
        EDMPrecond(Recorder())(torch.ones(3, dtype=torch.int64), 1.0)


def test_vp_zero_terminal_snr_v_prediction():
    """Lin et al.: at ᾱ = 0 (σ = ∞, represented by ZERO_SNR_SIGMA) a v-net still gives x̂0 = −v."""
    from pdlib.schedules import sampling_sigmas, zero_terminal_snr
    z = zero_terminal_snr(vp_schedule("linear"))
    x0 = torch.randn(2, 1, 3, 3, dtype=torch.float64)
    pre = VPPrecond(Oracle(x0, z, "v"), z, "v")
    sigma = sampling_sigmas(z)[0]
    x = torch.randn_like(x0) * math.sqrt(1 + sigma.item() ** 2)           # the VP prior in σ-space
    torch.testing.assert_close(pre(x, sigma), x0, rtol=0, atol=1e-4)
