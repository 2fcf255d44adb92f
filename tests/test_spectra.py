"""pdlib.spectra: radial power spectra against closed forms (cosines, white noise, blur)."""
import math

import pytest
import torch
import torch.nn.functional as F

from pdlib.spectra import (cutoff_frequency, needed_resolution, radial_frequencies,
                           radial_power_spectrum, spectral_ratio)


def _cosine(N: int, k: int, axis: int, amplitude: float = 1.0) -> torch.Tensor:
    n = torch.arange(N, dtype=torch.float64)
    wave = amplitude * torch.cos(2 * math.pi * k * n / N)               # (N,)
    img = wave[None, :].expand(N, N) if axis == 1 else wave[:, None].expand(N, N)
    return img.reshape(1, 1, N, N).clone()


def test_frequencies_are_cycles_per_pixel_up_to_nyquist():
    freqs, index = radial_frequencies(32)
    assert freqs.shape == (17,)
    assert freqs[0] == 0 and freqs[-1] == 0.5 and torch.allclose(freqs[1] - freqs[0], torch.tensor(1 / 32, dtype=torch.float64))
    assert index.shape == (32, 32)
    assert index[0, 0] == 0 and index[0, 5] == 5 and index[16, 0] == 16
    assert index[16, 16] == -1                                          # corner: |f| = 0.707 > 0.5


@pytest.mark.parametrize("k,axis", [(1, 0), (4, 1), (7, 0), (16, 1)])
def test_cosine_puts_its_power_at_its_frequency(k, axis):
    N = 32
    x = _cosine(N, k, axis, amplitude=0.8)
    freqs, power = radial_power_spectrum(x)
    assert int(power.argmax()) == k
    assert freqs[k] == k / N
    others = torch.cat([power[:k], power[k + 1:]])
    assert others.max() < 1e-20 * power[k] + 1e-20
    # the two peaks (0, ±k) carry (A/2)²·N² each (one at Nyquist, of power A²·N²), averaged over
    # the DFT frequencies of bin k
    _, index = radial_frequencies(N)
    count = int((index == k).sum())
    peak = 0.8 ** 2 * N * N / 4 * (2 if k < N // 2 else 4)
    assert torch.allclose(power[k], torch.tensor(peak / count, dtype=torch.float64))


def test_white_noise_is_flat_at_its_variance_and_parseval_holds():
    g = torch.Generator().manual_seed(0)
    s = 0.3
    x = s * torch.randn(256, 3, 32, 32, generator=g, dtype=torch.float64)
    freqs, power = radial_power_spectrum(x)
    # flat at s² within sampling error (bins hold ≥ 4 DFT frequencies × 768 maps)
    assert torch.allclose(power[1:], torch.full_like(power[1:], s ** 2), rtol=0.1)
    # Parseval: the mean of |DFT|²/(HW) over all frequencies equals the mean of x² exactly
    spec = torch.fft.fft2(x).abs().square() / (32 * 32)
    assert torch.allclose(spec.mean(), x.square().mean(), rtol=1e-12)


def test_average_is_over_images_and_channels():
    a, b = _cosine(16, 2, 0), _cosine(16, 5, 1)
    _, pa = radial_power_spectrum(a)
    _, pb = radial_power_spectrum(b)
    _, pab = radial_power_spectrum(torch.cat([a, b], dim=0))
    _, pc = radial_power_spectrum(torch.cat([a, b], dim=1))
    assert torch.allclose(pab, (pa + pb) / 2) and torch.allclose(pc, (pa + pb) / 2)


def test_blur_lowers_high_frequencies_and_keeps_the_mean():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 1, 32, 32, generator=g, dtype=torch.float64)
    kernel = torch.ones(1, 1, 3, 3, dtype=torch.float64) / 9
    blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="circular"), kernel)      # (64, 1, 32, 32)
    freqs, p = radial_power_spectrum(x)
    _, pb = radial_power_spectrum(blurred)
    ratio = spectral_ratio(pb, p)
    assert torch.allclose(ratio[0], torch.tensor(1.0, dtype=torch.float64), rtol=1e-12)  # DC passes
    assert ratio[-1] < 0.12 and ratio[4] > 0.5                                            # a low-pass
    # per DFT frequency the blur multiplies the power by |Ĥ(f)|², so each radial bin's ratio is a
    # weighted mean of |Ĥ|² over the bin: it lies between the bin's min and max of |Ĥ|²
    h = torch.zeros(32, 32, dtype=torch.float64)
    h[:2, :2] = h[-1:, :2] = h[:2, -1:] = h[-1:, -1:] = 1 / 9                # circular 3×3 box
    H2 = torch.fft.fft2(h).abs().square()                          # (32, 32)
    _, index = radial_frequencies(32)
    for k in range(17):
        band = H2[index == k]
        assert band.min() - 1e-9 <= ratio[k] <= band.max() + 1e-9


def test_cutoff_and_needed_resolution():
    freqs = torch.arange(17, dtype=torch.float64) / 32
    ratio = torch.cat([torch.ones(9), torch.full((8,), 0.1)]).to(torch.float64)   # kept up to 8/32
    assert cutoff_frequency(freqs, ratio) == 0.25
    assert needed_resolution(0.25, 32) == 16                              # P = 2 suffices
    assert needed_resolution(0.5, 32) == 32 and needed_resolution(0.0, 32) == 1
    assert cutoff_frequency(freqs, torch.zeros(17)) == 0.0
    ratio[12] = 0.7                                                       # highest, not first
    assert cutoff_frequency(freqs, ratio) == 12 / 32
    assert cutoff_frequency(freqs, ratio, threshold=0.8) == 0.25


def test_cutoff_of_a_lowpassed_image_gives_its_band():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(32, 1, 32, 32, generator=g, dtype=torch.float64)
    X = torch.fft.fft2(x)
    _, index = radial_frequencies(32)
    X[..., (index > 6) | (index < 0)] = 0                                  # ideal low-pass at 6/32
    low = torch.fft.ifft2(X).real
    freqs, p = radial_power_spectrum(x)
    _, pl = radial_power_spectrum(low)
    fc = cutoff_frequency(freqs, spectral_ratio(pl, p))
    assert fc == 6 / 32 and needed_resolution(fc, 32) == 12


@pytest.mark.parametrize("bad", [torch.zeros(3, 8, 8), torch.zeros(1, 1, 8, 6),
                                 torch.zeros(1, 1, 8, 8, dtype=torch.int64), "img"])
def test_bad_images_raise(bad):
    with pytest.raises(ValueError, match="images"):
        radial_power_spectrum(bad)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="N="):
        radial_frequencies(1)
    with pytest.raises(ValueError, match="reference"):
        spectral_ratio(torch.ones(3), torch.ones(4))
    with pytest.raises(ValueError, match="threshold"):
        cutoff_frequency(torch.ones(3), torch.ones(3), threshold=0)
    with pytest.raises(ValueError, match="cutoff"):
        needed_resolution(0.7, 32)
    with pytest.raises(ValueError, match="N="):
        needed_resolution(0.2, 0)
