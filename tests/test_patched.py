"""The 'patched' method end to end (Luhman & Luhman 2022): defaults, label dropout, weightings,
split boundaries, patch-size shapes, guidance, and the same method on a DiT."""
import math

import pytest
import torch

from pdlib.methods import build_method
from pdlib.denoisers import CFGDenoiser, DynamicThreshold, SNRSplitDenoiser
from pdlib.schedules import snr_to_t, vp_schedule
from pdlib.train import TrainConfig


def _method(**kw):
    base = dict(method="patched", preset="tiny", dataset="digits", img_channels=1, resolution=8)
    return build_method(TrainConfig.flat(**{**base, **kw}))


def test_defaults_are_the_papers():
    m = _method()
    assert type(m).__name__ == "PatchedMethod" and m.name == "patched"
    assert (m.cfg.method.prediction, m.cfg.method.weighting) == ("x0", "sqrt_snr")
    assert m.loss_fn.prediction == "x0" and m.loss_fn.weighting == "sqrt_snr"
    assert m.net.pos_emb == "sincos" and m.net.patch_size == 2
    assert m.cfg.net.overrides == {"patch_size": 2} and m.cfg.method.learn_sigma is False
    assert m.label_dropout == 0.0                                  # unconditional: no dropout
    assert _method(class_cond=True, num_classes=10).label_dropout == pytest.approx(0.1)
    assert _method(patch_size=4).net.patch_size == 4               # an explicit P wins


def test_patched_on_a_dit_uses_the_dits_own_patching():
    from pdlib.nets import DiT, preset_defaults
    m = _method(preset="dit-tiny", class_cond=True, num_classes=10)
    assert isinstance(m.net, DiT) and m.net.patch_size == preset_defaults("dit-tiny")["patch_size"]
    assert "patch_size" not in m.cfg.net.overrides and type(m).threshold_guided
    assert (m.cfg.method.prediction, m.cfg.method.weighting) == ("x0", "sqrt_snr")
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        assert m.denoiser(x, torch.tensor([0.1, 10.0]), class_labels=torch.tensor([0, 10])).shape == x.shape
    assert m.sample(2, generator=torch.Generator().manual_seed(0), steps=2, guidance=2.0).shape == (2, 1, 8, 8)


def test_label_dropout_rate_during_training():
    """The original PyTorch code forgot the dropout; here 10% of labels become the null label."""
    m = _method(class_cond=True, num_classes=10)
    seen = []
    m.loss_fn = lambda D, x0, generator=None, class_labels=None: (seen.append(class_labels), x0.new_zeros(len(x0)))[1]
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(4000) % 10
    for _ in range(5):                  # the labels are dropped when the batch is prepared
        m.loss(m.prepare_batch(torch.zeros(4000, 1, 8, 8), labels, g), g)
    got = torch.cat(seen)
    null = (got == m.null_label)
    assert m.null_label == 10
    assert abs(null.float().mean().item() - 0.1) < 4 * math.sqrt(0.1 * 0.9 / null.numel())
    assert torch.equal(got[~null], labels.repeat(5)[~null])        # kept labels are unchanged
    off = _method(class_cond=True, num_classes=10, label_dropout=0.0)
    off.loss_fn = m.loss_fn
    seen.clear()
    off.loss(off.prepare_batch(torch.zeros(100, 1, 8, 8), labels[:100], g), g)
    assert torch.equal(seen[0], labels[:100])


LAMBDA = {   # x0-space weights λ(ᾱ), written from METHODS.md §1
    "sqrt_snr": lambda a: (a / (1 - a)).sqrt(),
    "p2": lambda a: a / (1 - a) * (1 - a).sqrt(),
    "snr": lambda a: a / (1 - a),
    "snr+1": lambda a: a / (1 - a) + 1,
    "truncated_snr": lambda a: (a / (1 - a)).clamp(min=1),
}


@pytest.mark.parametrize("weighting", sorted(LAMBDA))
@pytest.mark.parametrize("t", [5, 396, 900])
def test_weighting_of_the_method_loss(weighting, t):
    torch.manual_seed(0)
    m = _method(weighting=weighting)
    torch.nn.init.normal_(m.net.conv_out.weight, std=0.1)         # a non-trivial x̂0
    m.loss_fn.t_sampler = lambda B, generator=None: torch.full((B,), t, dtype=torch.int64)
    x0 = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    batch = m.prepare_batch(x0, None)
    assert batch.n_images == 3 and batch.x0 is x0
    loss = m.loss(batch, torch.Generator().manual_seed(7))
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(7))
    a = m.schedule.alphas_cumprod[t]
    x_t = a.sqrt().float() * x0 + (1 - a).sqrt().float() * eps
    with torch.no_grad():
        x0_hat, _ = m.denoiser.predict(x_t, torch.full((3,), t), None, None)
    want = LAMBDA[weighting](a).item() * ((x0 - x0_hat) ** 2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(loss.detach(), want, rtol=1e-4, atol=1e-6)


def test_split_boundary_at_snr_quarter_is_t396():
    sched = vp_schedule("linear", 1000)
    assert snr_to_t(sched, 0.25) == 396
    assert sched.snr[395] >= 0.25 > sched.snr[396]
    D = SNRSplitDenoiser([lambda x, s: x * 0, lambda x, s: x * 0 + 1], [0.25])
    sig = sched.sigmas[[0, 395, 396, 999]]
    assert D.index(sig).tolist() == [0, 0, 1, 1]
    out = D(torch.ones(4, 1, 2, 2), sig)
    assert out[:, 0, 0, 0].tolist() == [0.0, 0.0, 1.0, 1.0]
    assert D.index(torch.tensor([2.0])).item() == 0 and D.index(torch.tensor([2.0001])).item() == 1  # SNR = 1/σ²


@pytest.mark.parametrize("P", [1, 2, 4, 8])
def test_patch_size_shapes(P):
    m = _method(resolution=64, img_channels=3, patch_size=P)
    assert m.net.patch_size == P and m.net.grid == 64 // P
    assert m.net.conv_in.in_channels == 3 * P * P and m.net.conv_out.out_channels == 3 * P * P
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert m.denoiser(x, torch.tensor([0.1, 10.0])).shape == (2, 3, 64, 64)


@pytest.mark.parametrize("P", [2, 4, 8])
def test_luhman_presets(P):
    m = _method(preset=f"luhman-p{P}", resolution=64, img_channels=3)
    assert m.net.patch_size == P and m.net.learn_sigma and m.net.grid == 64 // P
    assert m.cfg.method.learn_sigma is True                    # the preset's, resolved into the method
    assert m.cfg.net.overrides == {"patch_size": P}
    assert m.net.conv_out.out_channels == 2 * 3 * P * P
    with torch.no_grad():
        x0, v = m.denoiser.forward_with_variance(torch.randn(1, 3, 64, 64), torch.tensor([1.0]))
    assert x0.shape == v.shape == (1, 3, 64, 64)


def test_guidance_is_in_eps_space_and_thresholded():
    torch.manual_seed(0)
    m = _method(class_cond=True, num_classes=10)
    torch.nn.init.normal_(m.net.conv_out.weight, std=0.5)
    torch.nn.init.normal_(m.net.label_embed.weight, std=1.0)
    x, s, y = torch.randn(4, 1, 8, 8), torch.full((4,), 2.0), torch.tensor([0, 1, 2, 3])
    w = 1.5
    with torch.no_grad():
        D_c, D_u = m.denoiser(x, s, class_labels=y), m.denoiser(x, s, class_labels=torch.full_like(y, 10))
        e_c, e_u = (x - D_c) / 2.0, (x - D_u) / 2.0
        guided = CFGDenoiser(m.denoiser, w, m.null_label)(x, s, class_labels=y)
        torch.testing.assert_close(guided, x - 2.0 * (e_u + w * (e_c - e_u)), rtol=1e-4, atol=1e-5)
        th = DynamicThreshold(CFGDenoiser(m.denoiser, 8.0, m.null_label))(x * 30, s, class_labels=y)
    assert bool(th.abs().le(1 + 1e-6).all())
    y0 = m.sample(3, generator=torch.Generator().manual_seed(0), steps=4, guidance=w)
    assert y0.shape == (3, 1, 8, 8)


def test_patched_sampling_thresholds_only_when_guided():
    torch.manual_seed(0)
    m = _method(class_cond=True, num_classes=10)
    torch.nn.init.normal_(m.net.conv_out.weight, std=2.0)          # x̂0 far outside [-1, 1]
    torch.nn.init.normal_(m.net.label_embed.weight, std=1.0)

    def peak(guidance, thresholded):
        m.threshold_guided, seen = thresholded, []
        m.sample(3, generator=torch.Generator().manual_seed(0), steps=4, guidance=guidance,
                 callback=lambda d: seen.append(d["denoised"].abs().max().item()))
        return max(seen)

    assert type(m).threshold_guided is True               # Luhman & Luhman's sampler
    assert peak(3.0, True) <= 1 + 1e-6                    # guided: x̂0 dynamically thresholded
    assert peak(3.0, False) > 1.5 and peak(1.0, True) > 1.5   # off, or unguided: untouched


def test_generate_counts_a_guided_step_as_two_evaluations():
    from pdlib.evaluation import generate
    m = _method(class_cond=True, num_classes=10)
    D = m.denoiser
    _, nfe_plain = generate(m, 5, batch_size=3, steps=4, guidance=1.0, progress=False)
    _, nfe_guided = generate(m, 5, batch_size=3, steps=4, guidance=1.5, progress=False)
    assert nfe_plain == 4 and nfe_guided == 8      # DDIM-4; CFG runs the net on cond and null labels
    assert m.denoiser is D                          # counting leaves the caller's method alone


def test_evaluation_can_switch_guided_thresholding_off():
    from pdlib.evaluation import generate
    m = _method(class_cond=True, num_classes=10)
    torch.nn.init.normal_(m.net.conv_out.weight, std=2.0)
    on, _ = generate(m, 4, steps=3, guidance=3.0, progress=False)
    off, _ = generate(m, 4, steps=3, guidance=3.0, dynamic_threshold=False, progress=False)
    again, _ = generate(m, 4, steps=3, guidance=3.0, progress=False)
    assert not torch.equal(on, off) and torch.equal(on, again) and m.threshold_guided


def test_learned_variance_sampling_options_and_weights():
    """generate passes the DDPM reverse variance on; variance_weights reads v and log(β/β̃)."""
    from pdlib.evaluation import generate, variance_weights
    m = _method(learn_sigma=True)
    torch.nn.init.normal_(m.net.conv_out.weight, std=0.5)     # the zero init would output x̂0 = 0
    clipped, _ = generate(m, 3, steps=4, sampler="ddpm", variance="learned_clipped", progress=False)
    posterior, _ = generate(m, 3, steps=4, sampler="ddpm", variance="posterior", progress=False)
    assert clipped.shape == (3, 1, 8, 8) and not torch.equal(clipped, posterior)
    with pytest.raises(ValueError, match="variance='posterior' with sampler='ddim'"):
        generate(m, 1, steps=2, sampler="ddim", variance="posterior", progress=False)
    for p in m.net.conv_out.parameters():          # output 0 everywhere: v = (0 + 1)/2 = 0.5
        torch.nn.init.zeros_(p)
    w = variance_weights(m, [1, 10, 500], n=5)
    assert w["v_t"] == [1, 10, 500]
    assert w["v_mean"] == pytest.approx([0.5] * 3) and w["v_p01"] == pytest.approx([0.5] * 3)
    abar = vp_schedule("linear").alphas_cumprod.double()
    expected = [math.log((1 - abar[t]) / (1 - abar[t - 1])) for t in (1, 10, 500)]   # β/β̃ = (1−ᾱ_t)/(1−ᾱ_{t−1})
    assert w["log_beta_ratio"] == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="t=0"):
        variance_weights(m, [0], n=2)
    with pytest.raises(ValueError, match="learn_sigma"):
        variance_weights(_method(), [5], n=2)
