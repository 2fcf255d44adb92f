"""The ideal denoiser of a finite data set: brute force, chunking, limits, the 2-point closed form."""

import math

import pytest
import torch

from pdlib.ideal import IdealDenoiser, ideal_denoiser, ideal_posterior_weights
from pdlib.samplers import edm_sample
from pdlib.schedules import edm_sigmas


def brute_force(data, x, sigma):
    """E[x0|x] by explicit Gaussian likelihoods in float64 (fine for moderate σ only)."""
    d2 = ((x[:, None] - data[None]) ** 2).flatten(2).sum(-1)              # (B, N)
    w = torch.exp(-d2 / (2 * sigma.reshape(-1, 1) ** 2))
    w = w / w.sum(dim=1, keepdim=True)
    return torch.einsum("bn,n...->b...", w, data)


@pytest.fixture
def tiny():
    g = torch.Generator().manual_seed(0)
    data = torch.randn(7, 1, 2, 2, generator=g, dtype=torch.float64)
    x = torch.randn(5, 1, 2, 2, generator=g, dtype=torch.float64) * 1.5
    return data, x


@pytest.mark.parametrize("sigma", [0.3, 1.0, 4.0])
def test_matches_brute_force(tiny, sigma):
    data, x = tiny
    s = torch.full((5,), sigma, dtype=torch.float64)
    torch.testing.assert_close(ideal_denoiser(data, x, sigma), brute_force(data, x, s), rtol=1e-12, atol=1e-12)
    w = ideal_posterior_weights(data, x, sigma)
    assert w.shape == (5, 7)
    torch.testing.assert_close(w.sum(dim=1), torch.ones(5, dtype=torch.float64))


def test_per_sample_sigma_and_chunking(tiny):
    data, x = tiny
    sigma = torch.tensor([0.05, 0.3, 1.0, 3.0, 30.0], dtype=torch.float64)
    ref = ideal_denoiser(data, x, sigma, chunk_size=1000)
    for chunk in (1, 2, 3, 7):
        torch.testing.assert_close(ideal_denoiser(data, x, sigma, chunk_size=chunk), ref, rtol=1e-12, atol=1e-14)
    for b in range(5):
        torch.testing.assert_close(ideal_denoiser(data, x[b:b + 1], sigma[b].item()), ref[b:b + 1])


def test_small_sigma_is_nearest_neighbour(tiny):
    data, x = tiny
    nn_idx = ((x[:, None] - data[None]) ** 2).flatten(2).sum(-1).argmin(dim=1)
    for sigma in (0.0, 1e-12, 1e-150):
        out = ideal_denoiser(data, x, sigma, chunk_size=3)
        assert not out.isnan().any()
        torch.testing.assert_close(out, data[nn_idx], rtol=0, atol=0)
    # brute force underflows here (exp(−d²/2σ²) = 0 for all n); the streamed LSE does not
    assert brute_force(data, x, torch.full((5,), 1e-3, dtype=torch.float64)).isnan().any()
    torch.testing.assert_close(ideal_denoiser(data, x, 1e-3), data[nn_idx])


def test_large_sigma_is_the_mean(tiny):
    data, x = tiny
    for sigma in (1e9, math.inf):
        out = ideal_denoiser(data, x, sigma, chunk_size=2)
        torch.testing.assert_close(out, data.mean(dim=0, keepdim=True).expand_as(x), rtol=1e-8, atol=1e-8)


def test_two_points_tanh():
    """Data {a, −a}: E[x0|x] = a·tanh(⟨a, x⟩/σ²)."""
    a = torch.tensor([0.6, -0.8, 0.3], dtype=torch.float64).reshape(1, 3, 1, 1)
    data = torch.cat([a, -a])
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 3, 1, 1, generator=g, dtype=torch.float64)
    for sigma in (0.05, 0.5, 2.0):
        want = a * torch.tanh((x * a).sum(dim=(1, 2, 3), keepdim=True) / sigma ** 2)
        torch.testing.assert_close(ideal_denoiser(data, x, sigma, chunk_size=1), want, rtol=1e-12, atol=1e-12)


def test_float32_input_and_large_data_chunked():
    g = torch.Generator().manual_seed(2)
    data = torch.rand(5000, 1, 8, 8, generator=g) * 2 - 1
    x = torch.randn(4, 1, 8, 8, generator=g)
    out = ideal_denoiser(data, x, 0.7, chunk_size=1024)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ideal_denoiser(data, x, 0.7, chunk_size=5000), rtol=1e-6, atol=1e-6)


def test_ideal_sampler_memorizes():
    """EDM sampling with the ideal denoiser of 3 points ends on a training point."""
    data = torch.tensor([[-0.8, 0.5], [0.2, -0.9], [0.7, 0.7]], dtype=torch.float64).reshape(3, 2, 1, 1)
    x = torch.randn(16, 2, 1, 1, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 80
    out = edm_sample(IdealDenoiser(data), x, edm_sigmas(32))
    dist = ((out[:, None] - data[None]) ** 2).flatten(2).sum(-1).min(dim=1).values
    assert dist.max().item() < 1e-6


@pytest.mark.parametrize("call, word", [
    (lambda d, x: ideal_denoiser(d, x[:, :, :1], 1.0), "x has shape"),
    (lambda d, x: ideal_denoiser(d, x, -1.0), "sigma"),
    (lambda d, x: ideal_denoiser(d, x, math.nan), "sigma"),
    (lambda d, x: ideal_denoiser(d, x, torch.ones(3)), "sigma"),
    (lambda d, x: ideal_denoiser(d, x, 1.0, chunk_size=0), "chunk_size"),
    (lambda d, x: ideal_denoiser(d[:0], x, 1.0), "data"),
])
def test_bad_inputs(tiny, call, word):
    data, x = tiny
    with pytest.raises(ValueError, match=word):
        call(data, x)
