"""Schedules: formulas against hand computations, respacing (ADM), zero terminal SNR, σ grids."""

import math

import pytest
import torch

from pdlib.schedules import (VPSchedule, ZERO_SNR_SIGMA, edm_sigmas, respace, sampling_sigmas,
                             snr_to_t, space_timesteps, vp_schedule, zero_terminal_snr)


def test_linear_endpoints_and_scaling():
    s = vp_schedule("linear", 1000)
    assert s.T == 1000 and s.betas.dtype == torch.float64
    assert s.betas[0].item() == pytest.approx(1e-4, rel=1e-12)
    assert s.betas[-1].item() == pytest.approx(0.02, rel=1e-12)
    assert s.betas[1].item() == pytest.approx(1e-4 + (0.02 - 1e-4) / 999, rel=1e-12)
    torch.testing.assert_close(s.alphas_cumprod, torch.cumprod(1 - s.betas, 0), rtol=0, atol=0)
    torch.testing.assert_close(s.timesteps, torch.arange(1000))
    s250 = vp_schedule("linear", 250)                      # s = 1000/T = 4
    assert s250.betas[0].item() == pytest.approx(4e-4, rel=1e-12)
    assert s250.betas[-1].item() == pytest.approx(0.08, rel=1e-12)


def test_linear_x():
    s = vp_schedule("linear0.025", 1000)
    assert s.betas[0].item() == pytest.approx(1e-4) and s.betas[-1].item() == pytest.approx(0.025)
    s2 = vp_schedule("linear0.025", 500)
    assert s2.betas[-1].item() == pytest.approx(0.05) and s2.betas[0].item() == pytest.approx(2e-4)


def test_cosine_endpoints():
    T, off = 1000, 0.008
    s = vp_schedule("cosine", T)
    f = lambda t: math.cos((t / T + off) / (1 + off) * math.pi / 2) ** 2
    assert s.betas[0].item() == pytest.approx(1 - f(1) / f(0), rel=1e-10)
    assert s.alphas_cumprod[0].item() == pytest.approx(f(1) / f(0), rel=1e-10)
    assert s.alphas_cumprod[499].item() == pytest.approx(f(500) / f(0), rel=1e-8)
    assert s.betas[-1].item() == pytest.approx(0.999)     # clipped
    assert bool((s.betas <= 0.999).all())


def test_sigmas_snr_and_t_sigma_maps():
    s = vp_schedule("linear")
    ab = s.alphas_cumprod
    torch.testing.assert_close(s.sigmas, ((1 - ab) / ab).sqrt())
    torch.testing.assert_close(s.snr, 1 / s.sigmas ** 2)
    t = torch.tensor([0, 1, 17, 500, 999])
    torch.testing.assert_close(s.sigma_to_t(s.sigmas[t]), t.double(), rtol=0, atol=1e-9)
    torch.testing.assert_close(s.t_to_sigma(t), s.sigmas[t])
    # continuous t: log σ is interpolated linearly
    mid = s.t_to_sigma(torch.tensor(10.5, dtype=torch.float64))
    assert mid.item() == pytest.approx(math.sqrt(s.sigmas[10].item() * s.sigmas[11].item()), rel=1e-12)
    assert s.sigma_to_t(mid).item() == pytest.approx(10.5, abs=1e-9)
    # clamped outside the table; float32 in, float32 out
    assert s.sigma_to_t(torch.tensor([1e-9, 1e9])).tolist() == [0.0, 999.0]
    assert s.sigma_to_t(torch.tensor([1.0], dtype=torch.float32)).dtype == torch.float32


def test_snr_split_point_luhman():
    s = vp_schedule("linear", 1000)
    assert snr_to_t(s, 0.25) == 396
    assert s.snr[395] >= 0.25 > s.snr[396]


def test_zero_terminal_snr():
    s = vp_schedule("linear")
    z = zero_terminal_snr(s)
    assert z.alphas_cumprod[-1].item() == 0.0
    assert z.alphas_cumprod[0].item() == pytest.approx(s.alphas_cumprod[0].item(), rel=1e-12)
    assert z.betas[-1].item() == pytest.approx(1.0)
    # √ᾱ is an affine function of the old √ᾱ
    a, b = s.alphas_cumprod.sqrt(), z.alphas_cumprod.sqrt()
    slope = (b[0] - b[-1]) / (a[0] - a[-1])
    torch.testing.assert_close(b, b[-1] + slope * (a - a[-1]), rtol=0, atol=1e-12)
    torch.testing.assert_close(torch.cumprod(1 - z.betas, 0), z.alphas_cumprod, rtol=1e-10, atol=1e-14)
    assert math.isinf(z.sigmas[-1].item())
    sig = sampling_sigmas(z)
    assert sig[0].item() == ZERO_SNR_SIGMA and bool(torch.isfinite(sig).all())
    assert z.sigma_to_t(sig[:2]).tolist() == pytest.approx([999.0, 998.0])


def test_respace_count_and_ddim():
    s = vp_schedule("linear")
    r = respace(s, "250")
    assert r.T == 250 and r.timesteps[0] == 0 and r.timesteps[-1] == 999
    r = respace(s, "ddim50")
    assert r.timesteps.tolist() == list(range(0, 1000, 20))
    assert space_timesteps(1000, "ddim7") == list(range(0, 1000, 143))


def test_respace_sections():
    steps = space_timesteps(1000, "10,15,20")
    assert len(steps) == 45 and steps == sorted(set(steps))
    # sections of 334, 333, 333 steps; each section keeps its first and last step
    assert steps[:10] == [round(j * 333 / 9) for j in range(10)]
    assert steps[9] == 333 and steps[10] == 334 and steps[24] == 666 and steps[25] == 667
    assert steps[-1] == 999


def _adm_space_timesteps(T, spec):
    """Reference, written from the description of ADM's algorithm in plain Python (no pdlib):
    'ddimN' is the smallest stride in [1, T) with exactly N steps; otherwise per section, steps
    start + round(cur) with cur advanced by repeated float addition of (size − 1)/(count − 1)."""
    if isinstance(spec, str) and spec.startswith("ddim"):
        n = int(spec[4:])
        for stride in range(1, T):
            if len(range(0, T, stride)) == n:
                return set(range(0, T, stride))
        raise ValueError(spec)
    counts = [int(c) for c in spec.split(",")] if isinstance(spec, str) else list(spec)
    base, remainder = T // len(counts), T % len(counts)
    kept, offset = set(), 0
    for k, n in enumerate(counts):
        length = base + 1 if k < remainder else base
        if length < n:
            raise ValueError(spec)
        step = 1 if n <= 1 else (length - 1) / (n - 1)
        position = 0.0
        for _ in range(n):
            kept.add(offset + round(position))
            position = position + step
        offset = offset + length
    return kept


def _agrees(T, spec):
    assert space_timesteps(T, spec) == sorted(_adm_space_timesteps(T, spec)), (T, spec)


def test_space_timesteps_matches_adm_for_every_single_count():
    for n in range(1, 1001):
        _agrees(1000, str(n))
    assert space_timesteps(1000, 1000) == list(range(1000))
    assert space_timesteps(1000, 1) == [0]


def test_space_timesteps_matches_adm_for_sections_and_ddim():
    import random
    rng = random.Random(0)
    specs = [(1000, f"{a},{b}") for a, b in
             ((rng.randint(1, 500), rng.randint(1, 500)) for _ in range(300))]
    specs += [(1000, f"{a},{b},{c}") for a, b, c in
              ((rng.randint(1, 334), rng.randint(1, 333), rng.randint(1, 333)) for _ in range(300))]
    specs += [(T, f"{rng.randint(1, T // 4)},{rng.randint(1, T // 4)},{rng.randint(1, T // 4)},"
                  f"{rng.randint(1, T // 4)}") for T in (300, 401, 997) for _ in range(20)]
    specs += [(1000, "500,500"), (1000, "334,333,333"), (1000, "1,1"), (1000, "10,15,20"),
              (1000, "0,10"), (1000, "5,0,7"), (4000, "25,25,25,25"), (7, "2,2,1")]
    for T, spec in specs:
        _agrees(T, spec)
    assert space_timesteps(1000, [10, 15, 20]) == space_timesteps(1000, "10,15,20")
    for T in (1000, 300, 97, 2):
        ddim = {len(range(0, T, i)) for i in range(1, T)}
        for n in sorted(ddim)[:40] + sorted(ddim)[-5:]:
            _agrees(T, f"ddim{n}")


def test_space_timesteps_adm_at_half_ties():
    """Where rounding j·stride and ADM's accumulated cur differ: .5 ties, banker's rounding."""
    assert space_timesteps(1000, "21") == [
        0, 50, 100, 150, 200, 250, 300, 350, 400, 450, 499, 549, 599, 649, 699, 749, 799, 849, 899,
        949, 999]
    assert space_timesteps(300, "10,15,20") == [
        0, 11, 22, 33, 44, 55, 66, 77, 88, 99,
        100, 107, 114, 121, 128, 135, 142, 149, 157, 164, 171, 178, 185, 192, 199,
        200, 205, 210, 216, 221, 226, 231, 236, 242, 247, 252, 257, 263, 268, 273, 278, 283, 289,
        294, 299]
    assert space_timesteps(1000, "21") == sorted(_adm_space_timesteps(1000, "21"))
    assert space_timesteps(300, "10,15,20") == sorted(_adm_space_timesteps(300, "10,15,20"))
    assert respace(vp_schedule("linear"), "21").timesteps[10].item() == 499   # 10·49.95 would round to 500


def test_respace_recomputes_betas_exactly():
    s = vp_schedule("cosine")
    r = respace(s, "10,15,20")
    kept = s.alphas_cumprod[r.timesteps]
    torch.testing.assert_close(r.alphas_cumprod, kept, rtol=0, atol=0)
    torch.testing.assert_close(torch.cumprod(1 - r.betas, 0), kept, rtol=1e-10, atol=0)
    # the respaced schedule gives the net its ORIGINAL t
    torch.testing.assert_close(r.sigma_to_t(r.sigmas), r.timesteps.double(), rtol=0, atol=1e-8)
    # respacing a respaced schedule composes
    rr = respace(respace(s, "100"), "ddim10")
    assert rr.timesteps.tolist() == respace(s, "100").timesteps[::10].tolist()


def test_sampling_and_edm_sigmas():
    r = respace(vp_schedule("linear"), "ddim50")
    sig = sampling_sigmas(r)
    assert sig.dtype == torch.float64 and sig.numel() == 51 and sig[-1] == 0
    torch.testing.assert_close(sig[:-1], r.sigmas.flip(0))
    e = edm_sigmas(18)
    assert e.numel() == 19 and e.dtype == torch.float64 and e[-1] == 0
    assert e[0].item() == pytest.approx(80.0) and e[-2].item() == pytest.approx(0.002)
    lo, hi = 0.002 ** (1 / 7), 80 ** (1 / 7)
    assert e[5].item() == pytest.approx((hi + 5 / 17 * (lo - hi)) ** 7, rel=1e-12)
    assert bool((e[1:] < e[:-1]).all())
    assert edm_sigmas(1).tolist() == [80.0, 0.0]


@pytest.mark.parametrize("call, word", [
    (lambda: vp_schedule("quadratic"), "name"),
    (lambda: vp_schedule("linear", 0), "T"),
    (lambda: vp_schedule("linear", 10), "linear"),          # β = 0.02·100 > 1
    (lambda: respace(vp_schedule("linear"), "ddim999"), "ddim999"),
    (lambda: respace(vp_schedule("linear"), "2000"), "2000"),
    (lambda: respace(vp_schedule("linear"), "abc"), "spec"),
    (lambda: respace(vp_schedule("linear"), ""), "spec"),
    (lambda: respace(vp_schedule("linear"), "10,x"), "spec"),
    (lambda: respace(vp_schedule("linear"), "0"), "spec"),
    (lambda: respace(vp_schedule("linear"), "0,0"), "spec"),
    (lambda: respace(vp_schedule("linear"), [10, 2.5]), "spec"),
    (lambda: respace(vp_schedule("linear"), "ddim1"), "ddim1"),    # ADM: no stride < T gives 1 step
    (lambda: respace(vp_schedule("linear"), "400,400,400"), "400,400,400"),
    (lambda: respace(vp_schedule("linear"), "ddimx"), "spec"),
    (lambda: edm_sigmas(0), "n"),
    (lambda: edm_sigmas(5, sigma_min=0), "sigma_min"),
    (lambda: edm_sigmas(5, sigma_max=0.001), "sigma_max"),
    (lambda: edm_sigmas(5, rho=0), "rho"),
    (lambda: snr_to_t(vp_schedule("linear"), 1e-9), "snr"),
    (lambda: snr_to_t(vp_schedule("linear"), -1), "snr"),
    (lambda: VPSchedule(betas=[0.1, 0.2], alphas_cumprod=[0.9]), "betas"),
    (lambda: VPSchedule(betas=[0.1, 1.2], alphas_cumprod=[0.9, 0.1]), "betas"),
    (lambda: VPSchedule(betas=[0.1, 0.2], alphas_cumprod=[0.9, 0.72], timesteps=[3, 3]), "timesteps"),
    (lambda: vp_schedule("linear").sigma_to_t(-1.0), "sigma"),
])
def test_bad_inputs(call, word):
    with pytest.raises(ValueError, match=word):
        call()


def test_posterior_variance_closed_form():
    """β̃_t = β_t(1−ᾱ_{t−1})/(1−ᾱ_t): 0 at t = 0, below β_t after, and → β_t as ᾱ → 0."""
    s = vp_schedule("linear")
    pv = s.posterior_variance
    assert pv[0] == 0 and pv.dtype == torch.float64
    abar = s.alphas_cumprod
    for t in (1, 10, 500, 999):
        assert pv[t].item() == pytest.approx(s.betas[t].item() * (1 - abar[t - 1].item()) / (1 - abar[t].item()), rel=1e-12)
    assert bool((pv[1:] < s.betas[1:]).all())
    assert pv[-1].item() == pytest.approx(s.betas[-1].item(), rel=1e-4)
