"""fid_against_n (both sides subsampled, fitted in 1/N), fit_inverse_n, and the seam-aware FID's
crops (pdlib.metrics.seam_crops, seam_fid_from_features): closed forms and invariants."""
import numpy as np
import pytest
import torch

from pdlib.metrics import (fid_against_n, fid_from_features, fid_infinity, fit_inverse_n,
                           seam_crops, seam_fid_from_features)

D = 16


def test_fit_inverse_n_recovers_an_exact_line():
    ns = np.array([10, 20, 40, 80])
    r = fit_inverse_n(ns, 3.0 + 50.0 / ns)
    assert r.fid_inf == pytest.approx(3.0) and r.slope == pytest.approx(50.0)
    assert r.fit_error == pytest.approx(0.0, abs=1e-9)


def test_fid_infinity_unchanged_by_the_shared_fit():
    rng = np.random.default_rng(0)
    fake, real = rng.normal(0.3, 1, (400, D)), rng.normal(0, 1, (4000, D))
    r = fid_infinity(fake, real, seed=0)
    x = 1.0 / np.repeat(r.ns, r.fids.shape[1])
    slope, intercept = np.polyfit(x, r.fids.reshape(-1), 1)
    assert r.fid_inf == pytest.approx(intercept) and r.slope == pytest.approx(slope)


def test_fid_against_n_same_distribution_extrapolates_to_zero():
    """Two samples of one Gaussian: every FID_n is positive (the bias), the intercept is ~0."""
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(3000, D)), rng.normal(size=(3000, D))
    r = fid_against_n(a, b, [200, 300, 500, 800, 1500, 3000], reps=3, seed=0)
    assert (r.fids > 0).all()
    assert r.fids[0].mean() > 10 * abs(r.fid_inf)
    assert abs(r.fid_inf) < 4 * r.fit_error + 0.01
    assert r.slope > 0


def test_fid_against_n_shifted_distribution_recovers_the_closed_form():
    """Means 0.5 apart in every one of D dimensions, equal covariances: FID = 0.25 D."""
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(3000, D)), rng.normal(0.5, 1, size=(3000, D))
    r = fid_against_n(a, b, [200, 300, 500, 800, 1500, 3000], reps=3, seed=0)
    truth = 0.25 * D
    assert abs(r.fids[0].mean() - truth) > 3 * abs(r.fid_inf - truth)
    assert r.fid_inf == pytest.approx(truth, abs=0.35)           # ±3.5 sd of the pools' own mean gap


@pytest.mark.parametrize('ns, match', [([2, 3], 'at least 3'), ([2, 3, 10 ** 6], 'allowed are'),
                                       ([1.5, 3, 4], 'allowed are')])
def test_fid_against_n_rejects_bad_sizes(ns, match):
    x = np.zeros((50, 3)) + np.arange(150).reshape(50, 3) % 7
    with pytest.raises(ValueError, match=match):
        fid_against_n(x, x, ns)


def test_fid_against_n_rejects_mismatched_features():
    with pytest.raises(ValueError, match='features_b has d=4'):
        fid_against_n(np.ones((10, 3)), np.ones((10, 4)), [2, 3, 4])


def test_seam_crops_positions():
    """Each crop is a tile-sized window of the image itself: inner crops are whole tiles,
    straddling crops are centred on an interior grid corner."""
    n, H, grid = 6, 24, 3
    x = torch.arange(n * H * H, dtype=torch.float32).reshape(n, 1, H, H)
    s, i = seam_crops(x, grid, torch.Generator().manual_seed(0))
    t = H // grid
    assert s.shape == i.shape == (n, 1, t, t)
    for k in range(n):
        r0, c0 = divmod(int(i[k, 0, 0, 0].item()) - k * H * H, H)
        assert r0 % t == 0 and c0 % t == 0                     # a tile's top-left pixel
        assert torch.equal(i[k], x[k, :, r0:r0 + t, c0:c0 + t])
        r1, c1 = divmod(int(s[k, 0, 0, 0].item()) - k * H * H, H)
        assert (r1 + t // 2) % t == 0 and (c1 + t // 2) % t == 0   # centred on a border corner
        assert 0 < r1 + t // 2 < H and 0 < c1 + t // 2 < H
        assert torch.equal(s[k], x[k, :, r1:r1 + t, c1:c1 + t])


def test_seam_crops_see_a_seam_the_inner_crops_miss():
    """Images constant per tile (a different value in each): inner crops are flat, straddling
    crops hold the jumps."""
    tiles = torch.randn(8, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    x = tiles.repeat_interleave(8, 2).repeat_interleave(8, 3)       # 16×16, 2×2 tiles of 8×8
    s, i = seam_crops(x, 2)
    assert torch.all(i.amax((2, 3)) == i.amin((2, 3)))
    assert torch.all(s.amax((2, 3)) > s.amin((2, 3)))


@pytest.mark.parametrize('grid', [1, 5, 2.0, True])
def test_seam_crops_rejects_bad_grids(grid):
    with pytest.raises(ValueError, match='grid='):
        seam_crops(torch.zeros(2, 1, 16, 16), grid)


def test_seam_fid_from_features_gaps():
    """Straddling features shifted, inner features not: the gap is the FID of the shift."""
    rng = np.random.default_rng(3)
    ref_s, ref_i = rng.normal(size=(600, D)), rng.normal(size=(600, D))
    inner = rng.normal(size=(600, D))
    straddle = rng.normal(1.0, 1, size=(600, D))
    r = seam_fid_from_features(straddle, inner, ref_s, ref_i)
    assert r['FID_straddle'] == pytest.approx(fid_from_features(straddle, ref_s))
    assert r['FID_gap'] == pytest.approx(r['FID_straddle'] - r['FID_inner'])
    assert r['FID_gap'] > 0.8 * D and r['KID_gap'] > 0 and r['n'] == 600
    same = seam_fid_from_features(inner, inner, ref_i, ref_i)
    assert same['FID_gap'] == pytest.approx(0.0, abs=1e-9)
