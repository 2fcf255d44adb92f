"""Relay Diffusion's stage 2 (Teng et al. 2024; pdlib.dct, pdlib.blur, pdlib.samplers.relay_sample,
pdlib.losses.BlurLoss, pdlib.methods.relay) pinned to references: the block DCT against scipy's
orthonormal DCT-II; the blur schedule σ(t), σ_B(t) and α against the equations written out with
scipy.stats; block noise against its box-filter definition and its correlation; the sampler against
EDM's Heun / Euler with the blur off and against an oracle denoiser (exact, on the forward marginal);
its NFE; relay_start; BlurLoss against a hand computation; the `relay` method end to end with
stage-1 checkpoints; and the one-line option errors of the config and CLI path."""
import dataclasses
import math

import numpy as np
import pytest
import scipy.fft
import scipy.stats
import torch

from pdlib.blur import BlurSchedule, block_noise, block_noise_correlation, downsample, upsample
from pdlib.config import TrainConfig
from pdlib.dct import block_dct, block_idct, dct_matrix
from pdlib.losses import BlurLoss
from pdlib.methods import RelayMethod, RelayOptions, build_method
from pdlib.samplers import edm_sample, euler_sample, relay_sample, relay_start
from pdlib.schedules import edm_sigmas
from pdlib.train import train

F64 = torch.float64


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _rand(*shape, seed=0, dtype=F64):
    return torch.randn(*shape, generator=_gen(seed), dtype=dtype)


def _one_line_error(fn, pattern):
    with pytest.raises(ValueError, match=pattern) as e:
        fn()
    msg = str(e.value)
    assert "allowed" in msg and "\n" not in msg, msg
    return msg


def _ref_sigma(sched, t):
    """σ(t) = exp(P_mean + P_std·Φ⁻¹(t·L)), written out with scipy."""
    return np.exp(sched.P_mean + sched.P_std * scipy.stats.norm.ppf(np.asarray(t, float) * sched.prob_length))


def _ref_alpha(sched, sigma):
    """α(σ) of eqs. 7.1–7.3 written out in numpy: t(σ) = Φ((ln σ − P_mean)/P_std)/L (clipped to
    [0, 1], 0 at σ = 0), σ_B = σ_B,max·sin²(πt/2), α_kl = (1−m)·exp(−π²(k²+l²)/s²·σ_B²/2) + m;
    returns (len(sigma), s, s)."""
    out = []
    s = sched.up_scale
    for sig in np.atleast_1d(np.asarray(sigma, float)):
        t = 0.0 if sig == 0 else min(1.0, scipy.stats.norm.cdf((math.log(sig) - sched.P_mean) / sched.P_std)
                                     / sched.prob_length)
        b = sched.blur_sigma_max * math.sin(math.pi * t / 2) ** 2
        a = np.empty((s, s))
        for k in range(s):
            for l in range(s):
                decay = math.exp(-math.pi ** 2 * (k ** 2 + l ** 2) / s ** 2 * b ** 2 / 2)
                a[k, l] = (1 - sched.blur_m) * decay + sched.blur_m
        out.append(a)
    return torch.tensor(np.stack(out), dtype=F64)


def _ref_blocks(x, s, fn):
    """fn (a 2-D scipy transform) applied to every s×s block of x (B, C, H, W), numpy in, same layout out."""
    x = np.asarray(x)
    out = np.empty_like(x)
    for i in range(0, x.shape[-2], s):
        for j in range(0, x.shape[-1], s):
            out[..., i:i + s, j:j + s] = fn(x[..., i:i + s, j:j + s])
    return out


# ----------------------------------------------------------------------------------------------
# 1. The block DCT.

@pytest.mark.parametrize("s", [1, 2, 3, 4, 5, 8, 16])
def test_dct_matrix_is_scipys_orthonormal_dct2(s):
    M = dct_matrix(s)
    ref = scipy.fft.dct(np.eye(s), type=2, norm="ortho", axis=0)        # column n = DCT of e_n
    assert M.dtype == F64 and M.shape == (s, s)
    np.testing.assert_allclose(M.numpy(), ref, atol=1e-14, rtol=0)
    torch.testing.assert_close(M @ M.T, torch.eye(s, dtype=F64), atol=1e-14, rtol=0)


def test_block_dct_with_one_block_is_scipys_dctn():
    x = _rand(2, 3, 8, 8)
    y = block_dct(x, 8)
    assert y.shape == (2, 3, 1, 1, 8, 8)
    ref = scipy.fft.dctn(x.numpy(), axes=(-2, -1), norm="ortho")
    np.testing.assert_allclose(y[:, :, 0, 0].numpy(), ref, atol=1e-12, rtol=0)


@pytest.mark.parametrize("s", [2, 4])
def test_block_dct_of_every_block_is_scipys_dctn(s):
    x = _rand(2, 2, 8, 12, seed=1)
    y = block_dct(x, s)
    assert y.shape == (2, 2, 8 // s, 12 // s, s, s)
    for i in range(8 // s):
        for j in range(12 // s):
            ref = scipy.fft.dctn(x[:, :, i * s:(i + 1) * s, j * s:(j + 1) * s].numpy(),
                                 axes=(-2, -1), norm="ortho")
            np.testing.assert_allclose(y[:, :, i, j].numpy(), ref, atol=1e-12, rtol=0)


@pytest.mark.parametrize("s", [1, 2, 4, 8])
def test_block_dct_round_trip_parseval_and_dc(s):
    x = _rand(3, 2, 8, 16, seed=2)
    y = block_dct(x, s)
    torch.testing.assert_close(block_idct(y), x, atol=1e-12, rtol=0)
    torch.testing.assert_close((y ** 2).sum(), (x ** 2).sum(), atol=1e-10, rtol=0)
    block_mean = x.reshape(3, 2, 8 // s, s, 16 // s, s).mean(dim=(3, 5))
    torch.testing.assert_close(y[..., 0, 0], s * block_mean, atol=1e-12, rtol=0)


@pytest.mark.parametrize("shape,s", [((1, 1, 8, 12), 3), ((1, 1, 8, 12), 8), ((1, 1, 6, 8), 4)])
def test_a_block_size_that_does_not_divide_the_image_is_an_error(shape, s):
    _one_line_error(lambda: block_dct(torch.zeros(shape, dtype=F64), s), rf"s={s} does not divide")
    _one_line_error(lambda: downsample(torch.zeros(shape), s), rf"s={s} does not divide")


# ----------------------------------------------------------------------------------------------
# 2. The blur schedule.

SCHEDULES = [BlurSchedule(), BlurSchedule(up_scale=2, blur_sigma_max=2.0, P_mean=-0.8, P_std=1.5,
                                          prob_length=0.8, blur_m=0.05)]


@pytest.mark.parametrize("sched", SCHEDULES, ids=["default", "custom"])
def test_alpha_is_one_without_blur_and_at_the_dc_term(sched):
    torch.testing.assert_close(sched.alpha(0.0), torch.ones(sched.up_scale, sched.up_scale, dtype=F64),
                               atol=1e-15, rtol=0)
    b = torch.tensor([0.0, 0.3, 1.0, 3.0, 10.0, 1e3], dtype=F64)
    a = sched.alpha(b)
    assert a.shape == (6, sched.up_scale, sched.up_scale)
    torch.testing.assert_close(a[:, 0, 0], torch.ones(6, dtype=F64), atol=1e-15, rtol=0)


@pytest.mark.parametrize("sched", SCHEDULES, ids=["default", "custom"])
def test_blur_keeps_every_block_mean_and_is_the_identity_at_zero(sched):
    s = sched.up_scale
    x = _rand(3, 2, 8, 8, seed=3)
    torch.testing.assert_close(sched.blur(x, 0.0), x, atol=1e-12, rtol=0)
    for b in (0.5, 3.0, 10.0):
        blurred = sched.blur(x, b)
        torch.testing.assert_close(downsample(blurred, s), downsample(x, s), atol=1e-12, rtol=0)
        assert (blurred - x).abs().max() > 1e-3                           # it does blur
    per_image = sched.blur(x, torch.tensor([0.0, 1.0, 5.0], dtype=F64))   # one level per image
    for i, b in enumerate((0.0, 1.0, 5.0)):
        torch.testing.assert_close(per_image[i], sched.blur(x[i:i + 1], b)[0], atol=1e-12, rtol=0)
    torch.testing.assert_close(downsample(per_image, s), downsample(x, s), atol=1e-12, rtol=0)


@pytest.mark.parametrize("sched", SCHEDULES, ids=["default", "custom"])
def test_blur_is_the_attenuated_dct_of_every_block(sched):
    s, b = sched.up_scale, 1.3
    x = _rand(2, 1, 8, 8, seed=4)
    at_b = dataclasses.replace(sched, blur_sigma_max=b)                   # at t = 1, σ_B = b
    a = _ref_alpha(at_b, sched.sigma_max)[0].numpy()
    ref = _ref_blocks(x.numpy(), s, lambda blk: scipy.fft.idctn(
        a * scipy.fft.dctn(blk, axes=(-2, -1), norm="ortho"), axes=(-2, -1), norm="ortho"))
    np.testing.assert_allclose(sched.blur(x, b).numpy(), ref, atol=1e-12, rtol=0)


@pytest.mark.parametrize("sched", SCHEDULES, ids=["default", "custom"])
def test_alpha_decreases_in_frequency_and_blur_down_to_its_floor(sched):
    s, m = sched.up_scale, sched.blur_m
    a = sched.alpha(1.0)
    assert (a[1:, :] < a[:-1, :]).all() and (a[:, 1:] < a[:, :-1]).all()     # strictly, in k and l
    levels = torch.tensor([0.0, 0.25, 0.5, 1.0, 2.0, 3.0], dtype=F64)
    A = sched.alpha(levels)
    off_dc = torch.ones(s, s, dtype=torch.bool)
    off_dc[0, 0] = False
    assert (A[1:][:, off_dc] < A[:-1][:, off_dc]).all()                     # strictly, in σ_B
    assert (sched.alpha(torch.logspace(-2, 3, 30, dtype=F64)) >= m).all()
    torch.testing.assert_close(sched.alpha(1e3)[off_dc], torch.full((s * s - 1,), m, dtype=F64),
                               atol=1e-15, rtol=0)


@pytest.mark.parametrize("sched", SCHEDULES, ids=["default", "custom"])
def test_alpha_is_the_written_out_equation(sched):
    sigmas = [0.0, 0.002, 0.05, 0.3, 0.9, sched.sigma_max, 10 * sched.sigma_max]
    torch.testing.assert_close(sched.alpha_at_sigma(torch.tensor(sigmas, dtype=F64)),
                               _ref_alpha(sched, sigmas), atol=1e-13, rtol=0)
    b = torch.tensor([0.0, 0.7, 2.5], dtype=F64)                           # alpha(σ_B) directly
    k = np.arange(sched.up_scale)
    f2 = (k[:, None] ** 2 + k[None, :] ** 2) * math.pi ** 2 / sched.up_scale ** 2
    ref = np.stack([(1 - sched.blur_m) * np.exp(-f2 * v ** 2 / 2) + sched.blur_m for v in b.numpy()])
    np.testing.assert_allclose(sched.alpha(b).numpy(), ref, atol=1e-15, rtol=0)


@pytest.mark.parametrize("sched", SCHEDULES, ids=["default", "custom"])
def test_sigma_of_t_its_inverse_sigma_max_and_blur_sigma(sched):
    t = np.linspace(0.005, 1.0, 60)
    np.testing.assert_allclose(sched.sigma(torch.tensor(t)).numpy(), _ref_sigma(sched, t), rtol=1e-12)
    np.testing.assert_allclose(sched.t_of_sigma(sched.sigma(torch.tensor(t))).numpy(), t, atol=1e-12)
    top = math.exp(sched.P_mean + sched.P_std * scipy.stats.norm.ppf(sched.prob_length))
    assert sched.sigma_max == pytest.approx(top, rel=1e-12)
    assert sched.sigma_max == pytest.approx(float(sched.sigma(1.0)), rel=1e-15)
    assert float(sched.t_of_sigma(0.0)) == 0.0 and float(sched.t_of_sigma(10 * top)) == 1.0
    np.testing.assert_allclose(sched.blur_sigma(torch.tensor(t)).numpy(),
                               sched.blur_sigma_max * np.sin(np.pi * t / 2) ** 2, atol=1e-14)
    assert float(sched.blur_sigma(0.0)) == 0.0
    assert float(sched.blur_sigma(1.0)) == pytest.approx(sched.blur_sigma_max, rel=1e-15)


@pytest.mark.parametrize("kw,field", [
    (dict(up_scale=0), "up_scale"), (dict(up_scale=2.0), "up_scale"), (dict(up_scale=True), "up_scale"),
    (dict(blur_sigma_max=-1.0), "blur_sigma_max"), (dict(blur_sigma_max=float("inf")), "blur_sigma_max"),
    (dict(P_mean=float("nan")), "P_mean"), (dict(P_std=0.0), "P_std"),
    (dict(prob_length=0.0), "prob_length"), (dict(prob_length=1.0), "prob_length"),
    (dict(blur_m=1.0), "blur_m"), (dict(blur_m=-0.1), "blur_m"),
])
def test_bad_blur_schedule_fields_are_one_line_errors(kw, field):
    _one_line_error(lambda: BlurSchedule(**kw), rf"^{field}=")


# ----------------------------------------------------------------------------------------------
# 3. Block noise.

def test_block_noise_is_the_wrapped_box_sum_of_the_generators_white_noise():
    s, shape = 3, (2, 2, 9, 12)
    noise = block_noise(shape, s, _gen(5), dtype=F64)
    g = torch.randn(shape, generator=_gen(5), dtype=F64).numpy()
    K = np.zeros(shape[-2:])
    K[:s, :s] = 1 / s                                                       # box kernel, circular
    ref = np.real(np.fft.ifft2(np.fft.fft2(g) * np.fft.fft2(K)))
    assert noise.shape == shape and noise.dtype == F64
    np.testing.assert_allclose(noise.numpy(), ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(block_noise(shape, s, _gen(5), dtype=F64), noise, atol=0, rtol=0)
    assert not torch.equal(block_noise(shape, s, _gen(6), dtype=F64), noise)
    torch.testing.assert_close(block_noise(shape, 1, _gen(5), dtype=F64), torch.from_numpy(g),
                               atol=0, rtol=0)


@pytest.mark.parametrize("s", [3, 4])
def test_block_noise_has_unit_variance_and_the_box_correlation(s):
    x = block_noise((256, 1, 48, 48), s, _gen(7), dtype=F64)
    var = (x ** 2).mean()
    assert abs(float(var) - 1) < 0.02
    assert abs(float((x[:, :, 0] ** 2).mean()) - 1) < 0.05                  # the wrapped border too
    assert abs(float((x[:, :, :, -1] ** 2).mean()) - 1) < 0.05
    L = s + 1
    ref = block_noise_correlation(s, L)
    for di in range(-L, L + 1):
        for dj in range(-L, L + 1):
            emp = float((x * torch.roll(x, shifts=(di, dj), dims=(-2, -1))).mean() / var)
            want = max(0.0, 1 - abs(di) / s) * max(0.0, 1 - abs(dj) / s)
            assert abs(emp - want) < 0.02, (di, dj, emp, want)
            assert float(ref[abs(di), abs(dj)]) == pytest.approx(want, abs=1e-15)


@pytest.mark.parametrize("s,max_lag", [(1, 2), (2, 4), (4, 6), (5, 3)])
def test_block_noise_correlation_is_the_autocorrelation_of_the_box(s, max_lag):
    ref = block_noise_correlation(s, max_lag)
    assert ref.shape == (max_lag + 1, max_lag + 1) and ref.dtype == F64
    box = np.ones(s) / math.sqrt(s)                                         # unit-norm 1-D box
    auto = np.correlate(np.pad(box, (0, max_lag)), box, mode="full")[s - 1:s + max_lag]
    np.testing.assert_allclose(ref.numpy(), np.outer(auto, auto), atol=1e-15)
    assert float(ref[0, 0]) == 1.0 and (ref[s:, :] == 0).all() and (ref[:, s:] == 0).all()


# ----------------------------------------------------------------------------------------------
# 4. With the blur off, relay_sample is EDM's Heun / Euler.

def _gaussian_denoiser(mu, c):
    """The exact posterior mean of data N(μ, c²I) noised by σ: (c²x + σ²μ)/(c²+σ²)."""
    def D(x, sigma):
        s2 = sigma.reshape(-1, 1, 1, 1).to(x.dtype) ** 2
        return (c ** 2 * x + s2 * mu) / (c ** 2 + s2)
    return D


@pytest.mark.parametrize("heun,reference", [(True, edm_sample), (False, euler_sample)],
                         ids=["heun", "euler"])
def test_relay_sample_without_blur_is_edm(heun, reference):
    mu = _rand(1, 2, 8, 8, seed=8)
    D = _gaussian_denoiser(mu, 0.4)
    sigmas = edm_sigmas(7, 0.002, 0.9, 7)
    x = 0.9 * _rand(3, 2, 8, 8, seed=9)
    no_blur = BlurSchedule(blur_sigma_max=0.0, up_scale=4)
    out = relay_sample(D, x, sigmas, blur=no_blur, s_noise=0.0, s_block=0.0, heun=heun)
    want = reference(D, x, sigmas)
    torch.testing.assert_close(out, want, atol=1e-10, rtol=0)
    assert (want - x).abs().max() > 0.1                                     # the sampler moved
    blurred = relay_sample(D, x, sigmas, blur=BlurSchedule(up_scale=4), heun=heun)
    assert (blurred - want).abs().max() > 1e-3                              # and the blur matters


def _ref_relay(D, x, sigmas, sched, heun, s_noise=0.0, s_block=0.0, generator=None):
    """relay_sample written out in numpy with scipy's per-block DCT and α tiled over the blocks
    (as the release's `repeat`). Euler: the paper's / release's update x' = IDCT[γu + (α' − γα)û0]
    + s_n·σ'·(ε + s_b·ε_block), γ = √(1 − s_n²)·σ'/σ. Heun: û0 and n̂ = (u − α·û0)/σ averaged
    with those at the Euler point, u' = u + Δσ·n̄ + Δα·ū0, then the same fresh-noise mix."""
    s = sched.up_scale
    B, _, H, W = x.shape
    dct = lambda v: _ref_blocks(v, s, lambda b: scipy.fft.dctn(b, axes=(-2, -1), norm="ortho"))
    idct = lambda v: _ref_blocks(v, s, lambda b: scipy.fft.idctn(b, axes=(-2, -1), norm="ortho"))
    den = lambda v, sig: D(torch.from_numpy(v), torch.full((B,), sig, dtype=F64)).numpy()
    A = [np.tile(a, (H // s, W // s)) for a in _ref_alpha(sched, sigmas.tolist()).numpy()]
    sig = sigmas.tolist()
    x = x.numpy().astype(np.float64)
    N = len(sig) - 1
    for i in range(N):
        u, u0 = dct(x), dct(den(x, sig[i]))
        if heun and i < N - 1:
            n1 = (u - A[i] * u0) / sig[i]
            ue = A[i + 1] * u0 + sig[i + 1] * n1
            u02 = dct(den(idct(ue), sig[i + 1]))
            u0, n = (u0 + u02) / 2, (n1 + (ue - A[i + 1] * u02) / sig[i + 1]) / 2
            un = u + (sig[i + 1] - sig[i]) * n + (A[i + 1] - A[i]) * u0
            un = A[i + 1] * u0 + math.sqrt(1 - s_noise ** 2) * (un - A[i + 1] * u0)
        else:
            gamma = math.sqrt(1 - s_noise ** 2) * sig[i + 1] / sig[i]
            un = gamma * u + (A[i + 1] - gamma * A[i]) * u0
        x = idct(un)
        if s_noise > 0 and sig[i + 1] > 0:
            fresh = torch.randn(x.shape, generator=generator, dtype=F64)
            if s_block > 0:
                fresh = fresh + s_block * block_noise(x.shape, s, generator, dtype=F64)
            x = x + s_noise * sig[i + 1] * fresh.numpy()
    return torch.from_numpy(x)


@pytest.mark.parametrize("heun", [False, True], ids=["euler", "heun"])
@pytest.mark.parametrize("s_noise,s_block", [(0.0, 0.0), (0.2, 0.0), (0.3, 0.15)])
def test_relay_sample_with_blur_is_the_written_out_update(heun, s_noise, s_block):
    sched = BlurSchedule(up_scale=4, blur_m=0.01)
    D = _gaussian_denoiser(_rand(1, 2, 8, 12, seed=40), 0.4)
    sigmas = edm_sigmas(5, 0.002, 0.9, 7)
    x = 0.9 * _rand(2, 2, 8, 12, seed=41)
    out = relay_sample(D, x, sigmas, blur=sched, s_noise=s_noise, s_block=s_block, heun=heun,
                       generator=_gen(42))
    want = _ref_relay(D, x, sigmas, sched, heun, s_noise, s_block, _gen(42))
    torch.testing.assert_close(out, want, atol=1e-10, rtol=0)


def test_relay_sample_with_blur_converges_at_first_and_second_order():
    """Uniform σ grids from σ(1) to 0.1 and one more step to 0.05; the state at 0.1 (reached by a
    corrected Heun step) against 512 Heun steps: Euler's error halves, Heun's quarters."""
    sched = BlurSchedule(up_scale=4)
    D = _gaussian_denoiser(_rand(1, 1, 8, 8, seed=43), 0.4)
    x = 0.9 * _rand(2, 1, 8, 8, seed=44)

    def at_01(N, heun):
        sigmas = torch.cat([torch.linspace(sched.sigma_max, 0.1, N + 1, dtype=F64),
                            torch.tensor([0.05], dtype=F64)])
        seen = []
        relay_sample(D, x, sigmas, blur=sched, heun=heun, callback=seen.append)
        assert seen[-2]["sigma_next"] == pytest.approx(0.1)
        return seen[-2]["x"]

    ref = at_01(512, True)
    for heun, lo, hi in ((True, 3.3, 5.5), (False, 1.6, 2.5)):
        err = [float((at_01(N, heun) - ref).abs().max()) for N in (16, 32, 64)]
        ratios = [err[0] / err[1], err[1] / err[2]]
        assert all(lo < r < hi for r in ratios), (heun, err, ratios)


# ----------------------------------------------------------------------------------------------
# 5. An oracle denoiser: the sampler ends at the data exactly and stays on the forward marginal.

def _oracle_start(sched, x0, sigma0, seed):
    n = _rand(*x0.shape, seed=seed)
    b = sched.blur_sigma(sched.t_of_sigma(sigma0))
    return sched.blur(x0, b) + sigma0 * n, n


@pytest.mark.parametrize("heun", [True, False], ids=["heun", "euler"])
@pytest.mark.parametrize("s_noise,s_block", [(0.0, 0.0), (0.3, 0.0), (0.5, 0.15)])
def test_relay_sample_with_an_oracle_ends_at_the_data(heun, s_noise, s_block):
    sched = BlurSchedule(up_scale=4)
    x0 = _rand(2, 1, 16, 16, seed=10)
    x, _ = _oracle_start(sched, x0, 0.9, seed=11)
    out = relay_sample(lambda y, sigma: x0.expand_as(y), x, edm_sigmas(6, 0.002, 0.9, 7), blur=sched,
                       s_noise=s_noise, s_block=s_block, heun=heun, generator=_gen(12))
    torch.testing.assert_close(out, x0, atol=1e-10, rtol=0)


@pytest.mark.parametrize("heun", [True, False], ids=["heun", "euler"])
def test_relay_sample_with_an_oracle_stays_on_the_forward_marginal(heun):
    sched = BlurSchedule(up_scale=4, blur_sigma_max=2.0)
    x0 = _rand(2, 1, 8, 8, seed=13)
    sigma0 = sched.sigma_max
    x, n = _oracle_start(sched, x0, sigma0, seed=14)
    sigmas = edm_sigmas(5, 0.002, sigma0, 7)
    seen = []
    relay_sample(lambda y, sigma: x0.expand_as(y), x, sigmas, blur=sched, heun=heun,
                 callback=seen.append)
    assert [r["i"] for r in seen] == list(range(5))
    X0, N = block_dct(x0, 4), block_dct(n, 4)
    for r, sig_next in zip(seen, sigmas[1:].tolist()):
        assert r["sigma_next"] == sig_next
        want = _ref_alpha(sched, [sig_next])[0] * X0 + sig_next * N
        torch.testing.assert_close(block_dct(r["x"], 4), want, atol=1e-10, rtol=0)
    assert (sched.blur(x0, sched.blur_sigma(sched.t_of_sigma(sigmas[2]))) - x0).abs().max() > 1e-2


# ----------------------------------------------------------------------------------------------
# 6. NFE.

@pytest.mark.parametrize("heun,nfe", [(True, lambda N: 2 * N - 1), (False, lambda N: N)],
                         ids=["heun", "euler"])
@pytest.mark.parametrize("s_noise", [0.0, 0.2])
@pytest.mark.parametrize("N", [1, 2, 5])
def test_relay_sample_counts_its_denoiser_calls(heun, nfe, s_noise, N):
    mu = _rand(1, 1, 8, 8, seed=15)
    inner = _gaussian_denoiser(mu, 0.5)
    calls = []

    def D(x, sigma):
        assert x.dtype == F64 and sigma.dtype == F64 and sigma.shape == (x.shape[0],)
        calls.append(float(sigma[0]))
        return inner(x, sigma)

    sigmas = edm_sigmas(N, 0.002, 0.9, 7)
    seen = []
    x = 0.9 * _rand(2, 1, 8, 8, seed=16)
    out = relay_sample(D, x.float(), sigmas, blur=BlurSchedule(), s_noise=s_noise, heun=heun,
                       generator=_gen(0), callback=seen.append)
    assert len(calls) == nfe(N) and len(seen) == N
    assert calls[-1] == sigmas[-2]                                          # the last step: D(x, σ_{N−1})
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, seen[-1]["denoised"].float(), atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------------------------
# 7. relay_start, upsample and downsample.

@pytest.mark.parametrize("s_block", [0.0, 0.15])
def test_relay_start_is_the_upsampled_image_plus_white_and_block_noise(s_block):
    low, s, sigma0 = _rand(2, 3, 4, 5, seed=17).float(), 4, 0.7
    x = relay_start(low, sigma0, s, s_block, _gen(18))
    assert x.shape == (2, 3, 16, 20) and x.dtype == F64
    g = _gen(18)
    noise = torch.randn((2, 3, 16, 20), generator=g, dtype=F64)
    if s_block > 0:
        noise = noise + s_block * block_noise((2, 3, 16, 20), s, g, dtype=F64)
    torch.testing.assert_close(x, upsample(low.double(), s) + sigma0 * noise, atol=1e-12, rtol=0)
    torch.testing.assert_close(relay_start(low, sigma0, s, s_block, _gen(18)), x, atol=0, rtol=0)


def test_upsample_is_nearest_neighbour_and_downsample_the_block_mean():
    x, s = _rand(2, 3, 4, 5, seed=19), 3
    up = upsample(x, s)
    i, j = torch.arange(12), torch.arange(15)
    torch.testing.assert_close(up, x[:, :, i // s][:, :, :, j // s], atol=0, rtol=0)
    torch.testing.assert_close(downsample(up, s), x, atol=1e-12, rtol=0)
    y = _rand(2, 1, 8, 12, seed=20)
    torch.testing.assert_close(downsample(y, 4), y.reshape(2, 1, 2, 4, 3, 4).mean(dim=(3, 5)),
                               atol=1e-12, rtol=0)


# ----------------------------------------------------------------------------------------------
# 8. BlurLoss.

def test_blur_loss_of_an_oracle_is_zero():
    x0 = _rand(6, 1, 8, 8, seed=21).float()
    loss = BlurLoss(BlurSchedule(up_scale=4))(lambda x, sigma: x0, x0, generator=_gen(22))
    assert loss.shape == (6,) and torch.equal(loss, torch.zeros(6))


def test_blur_loss_noisy_near_t0_and_at_t1():
    sched = BlurSchedule(up_scale=4)
    L = BlurLoss(sched, s_block=0.15)
    x0 = _rand(4, 2, 8, 8, seed=23)
    t0 = torch.full((4,), 1e-6, dtype=F64)
    x_t, sigma = L.noisy(x0, t0, _gen(24))
    np.testing.assert_allclose(sigma.numpy(), _ref_sigma(sched, t0.numpy()), rtol=1e-10)
    assert float(sigma[0]) < 2e-3 and (x_t - x0).abs().max() < 10 * float(sigma[0])
    t1 = torch.ones(4, dtype=F64)
    x_t, sigma = L.noisy(x0, t1, _gen(25))
    np.testing.assert_allclose(sigma.numpy(), sched.sigma_max, rtol=1e-12)
    g = _gen(25)
    noise = torch.randn(x0.shape, generator=g, dtype=F64)
    noise = noise + 0.15 * block_noise(x0.shape, 4, g, dtype=F64)
    torch.testing.assert_close(x_t, sched.blur(x0, sched.blur_sigma_max) + sched.sigma_max * noise,
                               atol=1e-12, rtol=0)
    torch.testing.assert_close(downsample(x_t - sched.sigma_max * noise, 4), downsample(x0, 4),
                               atol=1e-12, rtol=0)
    mixed = torch.tensor([1e-6, 0.3, 0.7, 1.0], dtype=F64)                  # one t per image
    x_t, sigma = L.noisy(x0, mixed, _gen(26))
    g = _gen(26)
    noise = torch.randn(x0.shape, generator=g, dtype=F64)
    noise = noise + 0.15 * block_noise(x0.shape, 4, g, dtype=F64)
    for i, t in enumerate(mixed.tolist()):
        want = sched.blur(x0[i:i + 1], sched.blur_sigma(t)) + float(_ref_sigma(sched, t)) * noise[i:i + 1]
        torch.testing.assert_close(x_t[i:i + 1], want, atol=1e-12, rtol=0)


def test_blur_loss_is_the_capped_edm_weight_times_the_error():
    sched, sd, cap, t_min = BlurSchedule(up_scale=4), 0.5, 10.0, 1e-3
    L = BlurLoss(sched, s_block=0.15, sigma_data=sd, t_min=t_min, max_weight=cap)
    x0 = _rand(64, 1, 8, 8, seed=27).float()
    seen = []

    def zeros(x, sigma):
        seen.append(sigma)
        return torch.zeros_like(x)

    loss = L(zeros, x0, generator=_gen(28))
    u = torch.rand(64, generator=_gen(28), dtype=F64).numpy()
    sigma = _ref_sigma(sched, t_min + (1 - t_min) * u)
    lam = (sigma ** 2 + sd ** 2) / (sigma * sd) ** 2
    assert (lam > cap).any() and (lam < cap).any()                          # the cap binds for some
    want = np.minimum(lam, cap) * (x0.double() ** 2).mean(dim=(1, 2, 3)).numpy()
    assert loss.shape == (64,)
    np.testing.assert_allclose(loss.double().numpy(), want, rtol=1e-5)
    np.testing.assert_allclose(seen[0].double().numpy(), sigma, rtol=1e-6)


@pytest.mark.parametrize("kw,field", [
    (dict(s_block=-0.1), "s_block"), (dict(sigma_data=0.0), "sigma_data"),
    (dict(t_min=0.0), "t_min"), (dict(t_min=1.0), "t_min"), (dict(max_weight=0.0), "max_weight"),
    (dict(max_weight=float("inf")), "max_weight"),
])
def test_bad_blur_loss_options_are_one_line_errors(kw, field):
    _one_line_error(lambda: BlurLoss(BlurSchedule(), **kw), rf"^{field}=")


# ----------------------------------------------------------------------------------------------
# 9. The method.

def _relay_cfg(**kw):
    cfg = TrainConfig.flat(method="relay", preset="tiny", dataset="fashion_mnist", resolution=32, **kw)
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, img_channels=1))


@pytest.fixture(scope="module")
def relay():
    torch.manual_seed(0)
    m = build_method(_relay_cfg())
    m.denoiser.eval()
    return m


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    """Tiny EDM checkpoints on digits, trained for 1 step: {resolution: path} at 8 (= 32/4), 16, 32."""
    out = {}
    for r in (8, 16, 32):
        folder = tmp_path_factory.mktemp(f"stage1-{r}")
        train(TrainConfig.flat(method="edm", preset="tiny", dataset="digits", resolution=r,
                               batch_size=8, steps=1, log_every=1, sample_every=0, sample_n=2,
                               sample_steps=2, ckpt_every=0, warmup_steps=0, lr=2e-3,
                               out_dir=str(folder)), progress=False)
        out[r] = str(folder / "latest.pt")
    return out


def _low(n, seed=30):
    return torch.rand(n, 1, 8, 8, generator=_gen(seed)) * 2 - 1


def test_relay_method_builds_and_trains(relay):
    assert isinstance(relay, RelayMethod) and isinstance(relay.opts, RelayOptions)
    assert relay.name == "relay" and relay.low_shape == (1, 8, 8) and not relay.samples_alone
    assert isinstance(relay.loss_fn, BlurLoss) and relay.loss_fn.blur == relay.opts.schedule()
    g = _gen(31)
    x0 = torch.rand(4, 1, 32, 32, generator=g) * 2 - 1
    batch = relay.prepare_batch(x0, None, g)
    losses = relay.loss(batch, g)
    assert losses.shape == (4,) and torch.isfinite(losses).all() and (losses > 0).all()


def test_relay_method_samples_from_low_res_deterministically(relay):
    low = _low(3)
    out = relay.sample(3, generator=_gen(32), steps=2, low_res=low)
    assert out.shape == (3, 1, 32, 32) and torch.isfinite(out).all() and out.abs().max() <= 1
    torch.testing.assert_close(relay.sample(3, generator=_gen(32), steps=2, low_res=low), out,
                               atol=0, rtol=0)
    assert not torch.equal(relay.sample(3, generator=_gen(33), steps=2, low_res=low), out)
    euler = relay.sample(3, generator=_gen(32), steps=2, low_res=low, sampler="euler", s_noise=0.0,
                         s_block=0.0, truncation_sigma=0.5)
    assert euler.shape == (3, 1, 32, 32) and not torch.equal(euler, out)


@pytest.mark.parametrize("kw", [dict(), dict(truncation_sigma=0.5, s_noise=0.0, s_block=0.3,
                                            sampler="euler")], ids=["options", "arguments"])
def test_relay_method_sample_is_relay_start_then_relay_sample(relay, kw):
    o = relay.opts
    low = _low(2)
    out = relay.sample(2, generator=_gen(36), steps=3, low_res=low, **kw)
    sig0 = kw.get("truncation_sigma", o.truncation_sigma)
    s_noise, s_block = kw.get("s_noise", o.s_noise), kw.get("s_block", o.s_block)
    g = _gen(36)
    sigmas = edm_sigmas(3, o.sigma_min, sig0, o.rho)
    with torch.no_grad():
        x = relay_start(low, sig0, o.up_scale, s_block, g)
        x = relay_sample(relay.denoiser, x, sigmas, blur=o.schedule(), s_noise=s_noise,
                         s_block=s_block, heun=kw.get("sampler", "heun") == "heun", generator=g)
    torch.testing.assert_close(out, x.float().clamp(-1, 1), atol=0, rtol=0)


@pytest.mark.parametrize("kw,pattern", [
    (dict(up_scale=3), r"method\.up_scale=3 does not divide data\.resolution=32"),
    (dict(up_scale=1), r"method\.up_scale=1 is invalid"),
    (dict(truncation_sigma=5.0), r"method\.truncation_sigma=5\.0 is invalid.*1\.77"),
    (dict(truncation_sigma=0.002), r"method\.truncation_sigma=0\.002 is invalid"),
    (dict(truncation_sigma=0.001), r"method\.truncation_sigma=0\.001 is invalid"),
])
def test_bad_relay_options_are_one_line_errors(kw, pattern):
    _one_line_error(lambda: build_method(_relay_cfg(**kw)), pattern)


def test_bad_relay_sample_arguments_are_one_line_errors(relay, stage1):
    low = _low(2)
    for sig in (5.0, 0.002, -1.0):
        _one_line_error(lambda: relay.sample(2, steps=2, low_res=low, truncation_sigma=sig),
                        rf"^truncation_sigma={sig!r} is invalid")
    _one_line_error(lambda: relay.sample(2, steps=2, low_res=torch.zeros(2, 1, 16, 16)),
                    r"low_res has shape \(2, 1, 16, 16\).*\(2, 1, 8, 8\)")
    _one_line_error(lambda: relay.sample(3, steps=2, low_res=low), r"low_res has shape \(2, 1, 8, 8\)")
    _one_line_error(lambda: relay.sample(2, steps=2), r"stage1=None and method\.stage1=None")
    _one_line_error(lambda: relay.sample(2, steps=2, low_res=low, sampler="ddim"), r"sampler='ddim'")
    _one_line_error(lambda: relay.sample(2, steps=2, stage1=stage1[16], stage1_steps=1),
                    r"stage1=.* samples 1×16×16 images; allowed: .*1×8×8.*1×32×32")


@pytest.mark.parametrize("r", [8, 32], ids=["low-res", "full-res"])
def test_relay_method_runs_the_whole_relay_from_a_stage1_checkpoint(relay, stage1, r):
    out = relay.sample(2, generator=_gen(34), stage1=stage1[r], stage1_steps=2, steps=2)
    assert out.shape == (2, 1, 32, 32) and torch.isfinite(out).all() and out.abs().max() <= 1
    torch.testing.assert_close(relay.sample(2, generator=_gen(34), stage1=stage1[r], stage1_steps=2,
                                            steps=2), out, atol=0, rtol=0)
    # The same relay with the stage-1 samples passed as low_res (the generator continued).
    g = _gen(34)
    m1 = relay.stage1_model(stage1[r])
    assert m1.resolution == r
    low = m1.sample(2, generator=g, steps=2)
    if r == 32:
        low = downsample(low, 4)
    assert low.shape == (2, 1, 8, 8)
    torch.testing.assert_close(relay.sample(2, generator=g, low_res=low, steps=2), out, atol=0, rtol=0)


def test_relay_method_with_stage1_in_its_options_samples_alone(stage1):
    m = build_method(_relay_cfg(stage1=stage1[8], stage1_steps=2))
    m.denoiser.eval()
    assert m.samples_alone
    out = m.sample(2, generator=_gen(35), steps=2)
    assert out.shape == (2, 1, 32, 32) and torch.isfinite(out).all()


# ----------------------------------------------------------------------------------------------
# 10. The config and CLI path.

def test_relay_config_validates_and_carries_its_schedule():
    cfg = TrainConfig.flat(method="relay", up_scale=4, blur_sigma_max=2.0, prob_length=0.9,
                           dataset="fashion_mnist", resolution=32)
    assert isinstance(cfg.method, RelayOptions) and cfg.method.up_scale == 4
    assert cfg.method.schedule() == BlurSchedule(up_scale=4, blur_sigma_max=2.0, P_mean=-1.2,
                                                 P_std=1.2, prob_length=0.9, blur_m=0.001)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("kw,pattern", [
    (dict(s_noise=1.0), r"method\.s_noise=1\.0 is invalid"),
    (dict(s_noise=-0.1), r"method\.s_noise=-0\.1 is invalid"),
    (dict(blur_sigma_max=-1), r"method\.blur_sigma_max=-1(\.0)? is invalid"),
    (dict(s_block=-0.5), r"method\.s_block=-0\.5 is invalid"),
    (dict(blur_m=1.0), r"method\.blur_m=1\.0 is invalid"),
    (dict(prob_length=1.0), r"method\.prob_length=1\.0 is invalid"),
    (dict(t_min=0.0), r"method\.t_min=0\.0 is invalid"),
    (dict(max_weight=0.0), r"method\.max_weight=0\.0 is invalid"),
    (dict(stage1_steps=0), r"method\.stage1_steps=0 is invalid"),
    (dict(stage1=""), r"method\.stage1='' is invalid"),
])
def test_bad_relay_config_fields_are_one_line_errors(kw, pattern):
    _one_line_error(lambda: TrainConfig.flat(method="relay", up_scale=4, dataset="fashion_mnist",
                                             resolution=32, **kw), pattern)


def test_relay_cli_arguments():
    from pdlib.train.cli import config_from_args
    base = ["--method.name", "relay", "--data.dataset", "fashion_mnist", "--data.resolution", "32"]
    cfg, _ = config_from_args(base + ["--method.up-scale", "4", "--method.s-noise", "0.1"])
    assert isinstance(cfg.method, RelayOptions) and cfg.method.s_noise == 0.1
    _one_line_error(lambda: config_from_args(base + ["--method.s-noise", "1.0"]), r"method\.s_noise=1\.0")
    _one_line_error(lambda: config_from_args(base + ["--method.blur-sigma-max", "-1"]),
                    r"method\.blur_sigma_max=-1")
