"""The denoiser wrappers of pdlib.denoisers: what each computes, and that every one of them passes
`learn_sigma` and `forward_with_variance` through, alone, composed, and split by SNR."""

import pytest
import torch

from pdlib.denoisers import (CFGDenoiser, ClipDenoiser, DenoiserWrapper, DynamicThreshold,
                             NFECounter, SNRSplitDenoiser, learns_variance)
from pdlib.nets import unet_preset
from pdlib.precond import VPPrecond
from pdlib.samplers import ddpm_sample, prior_sample
from pdlib.schedules import respace, sampling_sigmas, vp_schedule

NULL = 3                                        # the null label of the class-conditional nets


# ----------------------------------------------------------------------------------------------
# Small denoisers.

def _vp(seed: int, learn_sigma: bool = True, num_classes=None) -> VPPrecond:
    """VPPrecond over the tiny U-Net at 8×8, its zero-initialised layers given random weights."""
    torch.manual_seed(seed)
    net = unet_preset("tiny", in_channels=1, resolution=8, learn_sigma=learn_sigma,
                      num_classes=num_classes).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return VPPrecond(net, vp_schedule("linear"), "eps", learn_sigma=learn_sigma)


@pytest.fixture(scope="module")
def pre():
    return _vp(0)


@pytest.fixture(scope="module")
def pre_cond():
    return _vp(1, num_classes=NULL)


def _x(B=4, seed=0):
    return torch.randn(B, 1, 8, 8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def labelled_D(x, sigma, class_labels=None, extra=None):
    """A toy conditional denoiser: pulls x towards a label-dependent mean (label 10 = null)."""
    target = class_labels.to(x.dtype).reshape(-1, 1, 1, 1) / 10
    if extra is not None:
        target = target + extra.mean(dim=1, keepdim=True)
    return target + 0.1 * x / (1 + sigma.reshape(-1, 1, 1, 1) ** 2)


class _LabelVar(torch.nn.Module):
    """Deterministic learn_sigma denoiser: v = 0.25 for a real label, 0.75 for the null label 10."""
    learn_sigma = True

    def forward(self, x, sigma, class_labels=None):
        return labelled_D(x, sigma, class_labels)

    def forward_with_variance(self, x, sigma, class_labels=None):
        v = torch.where(class_labels == 10, 0.75, 0.25).to(x.dtype).reshape(-1, 1, 1, 1).expand_as(x)
        return labelled_D(x, sigma, class_labels), v


# ----------------------------------------------------------------------------------------------
# What each wrapper computes.

def test_cfg():
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    sigma = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    labels = torch.tensor([1, 3, 7])
    extra = torch.randn(3, 1, 4, 4, dtype=torch.float64)
    D_c = labelled_D(x, sigma, labels, extra)
    D_u = labelled_D(x, sigma, torch.full_like(labels, 10), extra)
    counter = NFECounter(labelled_D)
    torch.testing.assert_close(CFGDenoiser(counter, 1.0, 10)(x, sigma, class_labels=labels, extra=extra), D_c)
    assert counter.nfe == 1 and counter.rows == 6                   # one batched call, twice the rows
    torch.testing.assert_close(CFGDenoiser(labelled_D, 0.0, 10)(x, sigma, class_labels=labels, extra=extra), D_u)
    w = 2.5
    guided = CFGDenoiser(labelled_D, w, 10)(x, sigma, class_labels=labels, extra=extra)
    # ε-space guidance gives the same x̂0: ε = (x − D)/σ is affine in D
    s = sigma.reshape(-1, 1, 1, 1)
    eps_c, eps_u = (x - D_c) / s, (x - D_u) / s
    torch.testing.assert_close(x - s * (eps_u + w * (eps_c - eps_u)), guided)
    # a scalar σ is the same as one per sample
    torch.testing.assert_close(CFGDenoiser(labelled_D, w, 10)(x, 2.0, class_labels=labels),
                               CFGDenoiser(labelled_D, w, 10)(x, torch.full((3,), 2.0), class_labels=labels))
    with pytest.raises(ValueError, match="class_labels"):
        CFGDenoiser(labelled_D, w, 10)(x, sigma)
    with pytest.raises(ValueError, match="sigma"):
        CFGDenoiser(labelled_D, w, 10)(x, torch.ones(2), class_labels=labels)


def test_dynamic_threshold_and_clip():
    big = torch.linspace(-3, 3, 2 * 16).reshape(1, 2, 4, 4).double()
    small = torch.linspace(-0.5, 0.5, 2 * 16).reshape(1, 2, 4, 4).double()
    x0 = torch.cat([big, small])
    dt = DynamicThreshold(lambda x, sigma: x, quantile=0.9)
    out = dt(x0, 1.0)
    assert out.abs().max().item() <= 1.0 + 1e-12
    s = torch.quantile(big.abs().flatten(), 0.9).item()
    torch.testing.assert_close(out[0], big[0].clamp(-s, s) / s)
    torch.testing.assert_close(out[1], small[0])                    # s = max(1, q) = 1: unchanged
    assert out[0].abs().max().item() == pytest.approx(1.0)
    clip = ClipDenoiser(lambda x, sigma: x)(x0, 1.0)
    assert clip.max().item() == 1.0 and clip.min().item() == -1.0
    torch.testing.assert_close(clip[1], small[0])
    with pytest.raises(ValueError, match="quantile"):
        DynamicThreshold(lambda x, s: x, quantile=0.0)
    with pytest.raises(ValueError, match="lo, hi"):
        ClipDenoiser(lambda x, s: x, lo=1.0, hi=1.0)
    with pytest.raises(ValueError, match="denoiser"):
        NFECounter(None)
    with pytest.raises(ValueError, match=r"denoisers\[1\]"):
        SNRSplitDenoiser([lambda x, s: x, 3.0], [1.0])


def test_nfe_counter_counts_and_resets():
    c = NFECounter(lambda x, sigma: x)
    c(_x(3), 1.0)
    c(_x(5), 1.0)
    assert (c.nfe, c.rows) == (2, 8)
    c.reset()
    assert (c.nfe, c.rows) == (0, 0)


def test_snr_split_denoiser_routes_by_snr():
    hi = lambda x, sigma, **c: torch.zeros_like(x)                  # model 0: high SNR (σ ≤ 2)
    lo = lambda x, sigma, **c: torch.ones_like(x)                   # model 1: low SNR
    split = SNRSplitDenoiser([hi, lo], [0.25])                      # SNR 0.25 ⇔ σ = 2
    x = torch.zeros(4, 1, 2, 2, dtype=torch.float64)
    out = split(x, torch.tensor([0.1, 2.0, 2.0001, 50.0], dtype=torch.float64))
    assert out[:, 0, 0, 0].tolist() == [0.0, 0.0, 1.0, 1.0]
    assert split(x, 3.0).eq(1).all() and split(x, 1.0).eq(0).all()  # a scalar σ: one model for all
    assert not split.learn_sigma and not learns_variance(split)     # plain functions learn no variances
    with pytest.raises(ValueError, match="snr_boundaries"):
        SNRSplitDenoiser([hi, lo, hi], [0.25, 1.0])
    with pytest.raises(ValueError, match="boundaries"):
        SNRSplitDenoiser([hi, lo], [0.25, 0.1])


def test_snr_split_routes_per_sample_conditioning():
    seen = []

    def member(k):
        def D(x, sigma, class_labels=None, extra=None):
            seen.append((k, class_labels.tolist(), extra[:, 0, 0, 0].tolist(), sigma.tolist()))
            return x * 0 + k
        return D

    split = SNRSplitDenoiser([member(0), member(1)], [0.25])
    x = torch.zeros(3, 1, 2, 2, dtype=torch.float64)
    extra = torch.arange(3, dtype=torch.float64).reshape(3, 1, 1, 1).expand(3, 1, 2, 2)
    split(x, torch.tensor([5.0, 1.0, 9.0]), class_labels=torch.tensor([7, 8, 9]), extra=extra)
    assert sorted(seen) == [(0, [8], [1.0], [1.0]), (1, [7, 9], [0.0, 2.0], [5.0, 9.0])]


# ----------------------------------------------------------------------------------------------
# learn_sigma and forward_with_variance pass through every wrapper.

def _wrappers(D, D_cond):
    """name -> (wrapper, conditioning, the denoiser and conditioning its variance values come from)."""
    labels = torch.tensor([0, 2, 1, 0])
    return {
        "cfg": (CFGDenoiser(D_cond, 2.0, NULL), {"class_labels": labels}, (D_cond, {"class_labels": labels})),
        "threshold": (DynamicThreshold(D, quantile=0.9), {}, (D, {})),
        "clip": (ClipDenoiser(D, -0.5, 0.5), {}, (D, {})),
        "counter": (NFECounter(D), {}, (D, {})),
        "split": (SNRSplitDenoiser([D, D], [0.25]), {}, (D, {})),
        "identity": (DenoiserWrapper(D), {}, (D, {})),
    }


@pytest.mark.parametrize("name", ["cfg", "threshold", "clip", "counter", "split", "identity"])
def test_every_wrapper_passes_variance_through(name, pre, pre_cond):
    W, cond, (inner, inner_cond) = _wrappers(pre, pre_cond)[name]
    assert W.learn_sigma is True and learns_variance(W)
    x = _x()
    sigma = torch.tensor([0.3, 1.0, 3.0, 20.0], dtype=torch.float64)      # both sides of SNR 0.25
    with torch.no_grad():
        x0, v = W.forward_with_variance(x, sigma, **cond)
        torch.testing.assert_close(x0, W(x, sigma, **cond))               # the same x̂0 as forward
        _, v_inner = inner.forward_with_variance(x, sigma, **inner_cond)
    assert v.shape == x.shape
    torch.testing.assert_close(v, v_inner, rtol=1e-5, atol=1e-6)          # the wrapped model's v
    assert not torch.allclose(v, torch.full_like(v, 0.5))                 # (not a constant)


@pytest.mark.parametrize("name", ["cfg", "threshold", "clip", "counter", "split", "identity"])
def test_wrapper_of_a_model_without_variances(name):
    D, D_cond = _vp(2, learn_sigma=False), _vp(3, learn_sigma=False, num_classes=NULL)
    W, cond, _ = _wrappers(D, D_cond)[name]
    assert W.learn_sigma is False and not learns_variance(W)
    with pytest.raises(ValueError, match="learn_sigma"):
        W.forward_with_variance(_x(), 1.0, **cond)
    assert W(_x(), 1.0, **cond).shape == (4, 1, 8, 8)


def test_snr_split_returns_each_members_x0_and_variance():
    a, b = _vp(10), _vp(11)
    split = SNRSplitDenoiser([a, b], [0.25])                              # a: σ <= 2, b: σ > 2
    assert split.learn_sigma
    x = _x(6, seed=1)
    sigma = torch.tensor([0.1, 5.0, 2.0, 2.5, 1.0, 80.0], dtype=torch.float64)
    ia, ib = torch.tensor([0, 2, 4]), torch.tensor([1, 3, 5])
    with torch.no_grad():
        x0, v = split.forward_with_variance(x, sigma)
        x0_a, v_a = a.forward_with_variance(x[ia], sigma[ia])
        x0_b, v_b = b.forward_with_variance(x[ib], sigma[ib])
        x0_b_wrong, v_b_wrong = a.forward_with_variance(x[ib], sigma[ib])
    torch.testing.assert_close(x0[ia], x0_a)
    torch.testing.assert_close(v[ia], v_a)
    torch.testing.assert_close(x0[ib], x0_b)
    torch.testing.assert_close(v[ib], v_b)
    assert not torch.allclose(v[ib], v_b_wrong)                           # the members do differ
    # one member that does not learn its variances: the split does not either
    mixed = SNRSplitDenoiser([a, _vp(12, learn_sigma=False)], [0.25])
    assert not mixed.learn_sigma
    with pytest.raises(ValueError, match="learn_sigma"):
        mixed.forward_with_variance(x, sigma)


def test_ddpm_samples_a_split_model_with_its_learned_variances(pre):
    """The regression: a split of learn_sigma models used to sample with the posterior variance."""
    sig = sampling_sigmas(respace(vp_schedule("linear"), "8"))
    x = prior_sample((2, 1, 8, 8), sig, torch.Generator().manual_seed(0), dtype=torch.float64)
    run = lambda D, var: ddpm_sample(D, x, sig, variance=var, generator=torch.Generator().manual_seed(1))
    split = SNRSplitDenoiser([pre, pre], [0.25])
    torch.testing.assert_close(run(split, "auto"), run(pre, "learned"))
    assert not torch.allclose(run(split, "auto"), run(pre, "posterior"))


def test_wrappers_compose_and_pass_variance(pre_cond):
    d = NFECounter(DynamicThreshold(CFGDenoiser(pre_cond, 3.0, NULL)))
    assert d.learn_sigma and learns_variance(d)
    x, sigma, labels = _x(), torch.tensor([0.3, 1.0, 3.0, 20.0], dtype=torch.float64), torch.tensor([0, 1, 2, 0])
    with torch.no_grad():
        x0, v = d.forward_with_variance(x, sigma, class_labels=labels)
        _, v_c = pre_cond.forward_with_variance(x, sigma, class_labels=labels)
        torch.testing.assert_close(x0, d(x, sigma, class_labels=labels))
    torch.testing.assert_close(v, v_c, rtol=1e-5, atol=1e-6)              # the conditional half's v
    assert d.nfe == 2 and d.rows == 8
    # ... and inside a split, on the other side of which is a plain model
    split = SNRSplitDenoiser([d, DynamicThreshold(CFGDenoiser(pre_cond, 3.0, NULL))], [0.25])
    with torch.no_grad():
        x0_s, v_s = split.forward_with_variance(x, sigma, class_labels=labels)
    torch.testing.assert_close(x0_s, x0, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(v_s, v_c, rtol=1e-5, atol=1e-6)
    # ddpm_sample picks the learned variances up through all three wrappers
    sig = sampling_sigmas(respace(vp_schedule("linear"), "6"))
    xT = prior_sample((4, 1, 8, 8), sig, torch.Generator().manual_seed(0), dtype=torch.float64)
    run = lambda var: ddpm_sample(d, xT, sig, variance=var, cond={"class_labels": labels},
                                  generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(run("auto"), run("learned"))
    assert not torch.allclose(run("auto"), run("posterior"))


def test_composed_dummy_passes_the_conditional_variance():
    d = NFECounter(DynamicThreshold(CFGDenoiser(_LabelVar(), 2.0, 10)))
    assert d.learn_sigma
    x = torch.randn(2, 1, 2, 2, dtype=torch.float64)
    x0, v = d.forward_with_variance(x, torch.ones(2, dtype=torch.float64), class_labels=torch.tensor([0, 1]))
    torch.testing.assert_close(v, torch.full_like(x, 0.25))         # the conditional half's values
    assert d.nfe == 1 and x0.abs().max() <= 1
    assert not NFECounter(labelled_D).learn_sigma


def test_wrappers_are_modules_holding_what_they_wrap(pre):
    for W in (CFGDenoiser(pre, 1.0, NULL), DynamicThreshold(pre), ClipDenoiser(pre), NFECounter(pre)):
        assert isinstance(W, torch.nn.Module) and W.denoiser is pre
        assert any(m is pre for m in W.modules())                  # .to(device) moves the model too
    fn = lambda x, sigma: x
    assert NFECounter(fn).denoiser is fn
    split = SNRSplitDenoiser([pre, fn], [1.0])
    assert split.denoisers[0] is pre and isinstance(split.denoisers[1], torch.nn.Module)
