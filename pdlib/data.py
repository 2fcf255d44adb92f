"""Offline data sets in [-1, 1]: Fashion-MNIST, Google Noto emoji, sklearn digits, toy 2-D.

Nothing here downloads at import or load time. ``fetch(name)`` (CLI: ``python -m pdlib.data fetch
NAME``) copies or installs the raw files once into the data folder, ``$PDLIB_DATA`` or
``<repo>/data``, and checks their sha256; ``load_dataset`` only reads that folder.

| name            | source (offline)                                | native      | classes |
|-----------------|-------------------------------------------------|-------------|---------|
| `fashion_mnist` | Debian package `dataset-fashion-mnist` (MIT)    | 1 × 28 × 28 | 10      |
| `emoji`         | npm `emoji-datasource-google@16.0.0` (Apache-2) | 3 × 64 × 64 | 10      |
| `digits`        | `sklearn.datasets.load_digits` (BSD, UCI)       | 1 × 8 × 8   | 10      |
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "IMAGE_DATASETS", "TOY_DATASETS", "DatasetInfo", "ImageDataset", "data_dir", "fetch",
    "load_dataset", "parse_idx", "read_idx", "toy_2d", "main",
]

# --------------------------------------------------------------------------------------------
# The registry: what each data set is and where it comes from.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetInfo:
    """One image data set: its native shape, default resolution, splits and class names."""
    name: str                      # key for load_dataset / fetch
    native_resolution: int         # side of the square images as stored
    channels: int                  # native channels (1 grey, 3 RGB)
    default_resolution: int        # what load_dataset(resolution=None) returns
    class_names: tuple[str, ...]   # label i ↔ class_names[i]
    source: str                    # where fetch gets it (offline)
    license: str                   # licence of the images


FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
# Sorted `category` values of emoji-datasource-google@16.0.0's emoji.json (skin-tone variants
# inherit their base emoji's category); checked against the file when the cache is built.
EMOJI_CLASSES = ("Activities", "Animals & Nature", "Component", "Flags", "Food & Drink",
                 "Objects", "People & Body", "Smileys & Emotion", "Symbols", "Travel & Places")
DIGITS_CLASSES = tuple(str(d) for d in range(10))

IMAGE_DATASETS: dict[str, DatasetInfo] = {
    "fashion_mnist": DatasetInfo("fashion_mnist", 28, 1, 32, FASHION_CLASSES,
                                 "Debian package dataset-fashion-mnist", "MIT (Zalando SE)"),
    "emoji": DatasetInfo("emoji", 64, 3, 64, EMOJI_CLASSES,
                         "npm emoji-datasource-google@16.0.0", "Apache-2.0 (Google Noto Emoji)"),
    "digits": DatasetInfo("digits", 8, 1, 8, DIGITS_CLASSES,
                          "scikit-learn (sklearn.datasets.load_digits)", "BSD-3-Clause (UCI)"),
}
TOY_DATASETS = ("moons", "swiss_roll", "gaussian_mixture", "checkerboard")
SPLITS = ("train", "test")
MAX_RESOLUTION = 1024

# Fashion-MNIST: sha256 of the *decompressed* IDX files, so that the Debian files and the
# upstream (differently gzipped) files from github.com/zalandoresearch/fashion-mnist both verify.
FASHION_FILES = {
    "train-images-idx3-ubyte.gz": ("c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888", (60000, 28, 28)),
    "train-labels-idx1-ubyte.gz": ("bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9", (60000,)),
    "t10k-images-idx3-ubyte.gz": ("5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b", (10000, 28, 28)),
    "t10k-labels-idx1-ubyte.gz": ("0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34", (10000,)),
}
FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_DEB = "dataset-fashion-mnist"

EMOJI_NPM = "emoji-datasource-google@16.0.0"
EMOJI_PKG_DIR = Path("node_modules", "emoji-datasource-google")
EMOJI_COUNT = 3786
EMOJI_JSON_SHA256 = "1d602e65be88772bf8cc368ce16b855d719eeddbafe128d471b80203f494d29f"
# sha256 over sorted (file name, sha256 of the PNG bytes) of img/google/64/*.png.
EMOJI_PNG_DIGEST = "d3bfa01db3d34774490ee8194bbca35e3ebe55a9fff2cb050251a6c3860e6d85"
# sha256 of the composited uint8 array [3786, 64, 64, 3] stored in the cache.
EMOJI_PIXELS_SHA256 = "4d7dcb6041f5b93d54200590ac8934be94b5320ee30c23a1ab5c292f0b019612"
EMOJI_NPZ = "emoji64.npz"

DIGITS_COUNT = 1797
DIGITS_SHA256 = "8f26b2bd9d135c256808f68f14fdabddde6d9c7f869ae419704b051f0f14b3b3"  # uint8 pixels

FETCH_NAMES = ("fashion_mnist", "emoji", "digits")


def data_dir() -> Path:
    """The data cache: ``$PDLIB_DATA`` if set, else ``<repo root>/data`` (not created here)."""
    env = os.environ.get("PDLIB_DATA")
    if env:
        return Path(env).expanduser().resolve()
    return Path(__file__).resolve().parent.parent / "data"


def _fetch_hint(name: str) -> str:
    return (f"Fetch it once with `python -m pdlib.data fetch {name}` (or `make data` for every "
            f"data set); set PDLIB_DATA to use another data folder.")


def _log(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------------------------
# IDX files (LeCun's MNIST format) read with numpy.
# --------------------------------------------------------------------------------------------

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def parse_idx(raw: bytes) -> np.ndarray:
    """Parse IDX bytes: magic 0x0000, dtype code, ndim, big-endian int32 dims, then the data."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"raw: not an IDX file (magic bytes {raw[:4]!r}, expected 00 00 TT NN)")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"raw: IDX dtype code 0x{code:02X} unknown; allowed "
                         f"{sorted(hex(c) for c in _IDX_DTYPES)}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"raw: IDX header truncated ({len(raw)} bytes for {ndim} dims)")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">i4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(f"raw: IDX size {len(raw)} bytes does not match shape {shape} of "
                         f"{dtype} (expected {expected} bytes)")
    data = np.frombuffer(raw, dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def _read_maybe_gz(path: Path) -> bytes:
    with open(path, "rb") as f:
        raw = f.read()
    return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzipped or not) into a numpy array of its stored dtype and shape; a
    damaged file is a ValueError naming it."""
    try:
        return parse_idx(_read_maybe_gz(Path(path)))
    except (ValueError, EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise ValueError(f"{str(path)!r} is damaged ({' '.join(str(e).split())}); fetch it again "
                         "(python -m pdlib.data fetch NAME --force)") from None


# --------------------------------------------------------------------------------------------
# fetch: the only code that touches the network (apt, npm), and only when asked.
# --------------------------------------------------------------------------------------------


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    _log("  $ " + " ".join(cmd))
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)


def _verify_fashion(folder: Path) -> list[str]:
    """Problems with the Fashion-MNIST files in folder (empty list: all four verified)."""
    problems = []
    for fname, (sha, shape) in FASHION_FILES.items():
        path = folder / fname
        if not path.is_file():
            problems.append(f"{fname} missing")
            continue
        raw = _read_maybe_gz(path)
        if _sha256(raw) != sha:
            problems.append(f"{fname}: sha256 {_sha256(raw)[:12]}… != {sha[:12]}…")
        elif parse_idx(raw).shape != shape:
            problems.append(f"{fname}: shape != {shape}")
    return problems


def _fetch_fashion_mnist(force: bool) -> Path:
    dest = data_dir() / "fashion_mnist"
    if not force and not _verify_fashion(dest):
        _log(f"fashion_mnist: already present in {dest} (4 files, sha256 verified); nothing to do")
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pdlib-fashion-") as tmp:
        tmp = Path(tmp)
        if all((FASHION_SYSTEM_DIR / f).is_file() for f in FASHION_FILES):
            src = FASHION_SYSTEM_DIR
            _log(f"fashion_mnist: copying from the installed Debian package ({src})")
        else:
            src = _apt_download_and_extract(tmp)
        for fname in FASHION_FILES:
            shutil.copyfile(src / fname, dest / (fname + ".part"))
            os.replace(dest / (fname + ".part"), dest / fname)
        copyright_file = src.parent.parent / "doc" / FASHION_DEB / "copyright"
        if copyright_file.is_file():
            shutil.copyfile(copyright_file, dest / "LICENSE.debian-copyright")
    problems = _verify_fashion(dest)
    if problems:
        raise RuntimeError(f"fashion_mnist: verification failed in {dest}: {'; '.join(problems)}")
    size = sum((dest / f).stat().st_size for f in FASHION_FILES)
    _log(f"fashion_mnist: 4 files, {size / 1e6:.1f} MB in {dest}; sha256 and shapes "
         f"verified (60000 train + 10000 test, 28×28)")
    return dest


def _apt_download_and_extract(tmp: Path) -> Path:
    """`apt-get download` the Debian package (no install) and `dpkg -x` it; returns the data dir."""
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise RuntimeError(
            "fashion_mnist: apt-get/dpkg not found (not a Debian system). Place the four files "
            f"{', '.join(FASHION_FILES)} from https://github.com/zalandoresearch/fashion-mnist "
            f"into {data_dir() / 'fashion_mnist'} and run the fetch again to verify them.")
    _log(f"fashion_mnist: downloading the Debian package {FASHION_DEB} (not installing it)")
    # The sandbox option stops apt (as root) handing the download to user _apt, who cannot
    # write into our private temp dir.
    cmd = ["apt-get", "download", "-o", "APT::Sandbox::User=root", FASHION_DEB]
    result = _run(cmd, tmp)
    if result.returncode != 0:
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            _log("fashion_mnist: apt-get download failed; package lists may be empty, running "
                 "apt-get update once")
            upd = _run(["apt-get", "update"], tmp)
            if upd.returncode != 0:
                raise RuntimeError(f"fashion_mnist: `apt-get update` failed:\n{upd.stderr}")
            result = _run(cmd, tmp)
        if result.returncode != 0:
            raise RuntimeError(
                f"fashion_mnist: `{' '.join(cmd)}` failed:\n{result.stderr.strip()}\n"
                "If apt's package lists are empty, run `apt-get update` once as root.")
    debs = sorted(tmp.glob(f"{FASHION_DEB}_*.deb"))
    if not debs:
        raise RuntimeError(f"fashion_mnist: apt-get download left no .deb in {tmp}")
    result = _run(["dpkg", "-x", str(debs[0]), str(tmp / "root")], tmp)
    if result.returncode != 0:
        raise RuntimeError(f"fashion_mnist: dpkg -x failed:\n{result.stderr}")
    return tmp / "root" / FASHION_SYSTEM_DIR.relative_to("/")


def _emoji_png_dir(root: Path) -> Path:
    return root / EMOJI_PKG_DIR / "img" / "google" / "64"


def _verify_emoji_raw(root: Path) -> list[str]:
    pkg, png_dir = root / EMOJI_PKG_DIR, _emoji_png_dir(root)
    if not (pkg / "emoji.json").is_file() or not png_dir.is_dir():
        return [f"{pkg} missing"]
    problems = []
    if _sha256((pkg / "emoji.json").read_bytes()) != EMOJI_JSON_SHA256:
        problems.append("emoji.json: sha256 mismatch")
    names = sorted(p.name for p in png_dir.glob("*.png"))
    if len(names) != EMOJI_COUNT:
        problems.append(f"{len(names)} PNGs in {png_dir}, expected {EMOJI_COUNT}")
    elif _png_digest(png_dir, names) != EMOJI_PNG_DIGEST:
        problems.append("PNG files: sha256 digest mismatch")
    return problems


def _png_digest(png_dir: Path, names: list[str]) -> str:
    h = hashlib.sha256()
    for name in names:
        h.update(name.encode() + b"\0" + hashlib.sha256((png_dir / name).read_bytes()).digest())
    return h.hexdigest()


def _emoji_categories(pkg: Path) -> dict[str, str]:
    """File name → category for every image in emoji.json (skin tones inherit the base's)."""
    entries = json.loads((pkg / "emoji.json").read_text(encoding="utf-8"))
    category = {}
    for e in entries:
        category[e["image"]] = e["category"]
        for variant in (e.get("skin_variations") or {}).values():
            category[variant["image"]] = e["category"]
    return category


def _composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """Alpha-composite uint8 RGBA [..., 4] over white: c·α + 255·(1−α), rounded, uint8 RGB."""
    rgb, a = rgba[..., :3].astype(np.uint32), rgba[..., 3:].astype(np.uint32)
    return ((rgb * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)


def _build_emoji_npz(root: Path) -> Path:
    """Decode the 64×64 PNGs once, composite on white and save images/labels/names as .npz."""
    from PIL import Image  # Pillow (a matplotlib dependency); only needed to build the cache

    pkg, png_dir = root / EMOJI_PKG_DIR, _emoji_png_dir(root)
    category = _emoji_categories(pkg)
    names = sorted(p.name for p in png_dir.glob("*.png"))
    missing = [n for n in names if n not in category]
    if missing:
        raise RuntimeError(f"emoji: {len(missing)} PNGs have no category in emoji.json, "
                           f"e.g. {missing[:3]}")
    class_names = sorted(set(category[n] for n in names))
    if tuple(class_names) != EMOJI_CLASSES:
        raise RuntimeError(f"emoji: categories {class_names} != expected {EMOJI_CLASSES}")
    images = np.empty((len(names), 64, 64, 3), np.uint8)  # (N, H, W, 3)
    for i, name in enumerate(names):
        with Image.open(png_dir / name) as im:
            rgba = np.asarray(im.convert("RGBA"))
        if rgba.shape != (64, 64, 4):
            raise RuntimeError(f"emoji: {name} has shape {rgba.shape}, expected (64, 64, 4)")
        images[i] = _composite_on_white(rgba)
    if _sha256(images.tobytes()) != EMOJI_PIXELS_SHA256:
        raise RuntimeError("emoji: composited pixels do not match the recorded sha256 "
                           f"(got {_sha256(images.tobytes())})")
    labels = np.array([class_names.index(category[n]) for n in names], np.int64)
    out = root / EMOJI_NPZ
    tmp = root / (EMOJI_NPZ + ".part.npz")
    np.savez_compressed(tmp, images=images, labels=labels,
                        class_names=np.array(class_names), files=np.array(names))
    os.replace(tmp, out)
    return out


def _read_emoji_npz(path: Path) -> dict[str, np.ndarray]:
    if not zipfile.is_zipfile(path):
        raise ValueError("not an .npz (zip) file")
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in ("images", "labels", "class_names", "files")}
    if arrays["images"].shape != (EMOJI_COUNT, 64, 64, 3) or arrays["images"].dtype != np.uint8:
        raise ValueError(f"images has shape {arrays['images'].shape} {arrays['images'].dtype}")
    if arrays["labels"].shape != (EMOJI_COUNT,) or arrays["files"].shape != (EMOJI_COUNT,):
        raise ValueError("labels/files have the wrong length")
    return arrays


def _fetch_emoji(force: bool) -> Path:
    root = data_dir() / "emoji"
    npz = root / EMOJI_NPZ
    if not force and npz.is_file():
        try:
            if _sha256(_read_emoji_npz(npz)["images"].tobytes()) == EMOJI_PIXELS_SHA256:
                _log(f"emoji: already present in {npz} ({EMOJI_COUNT} images, sha256 verified); "
                     "nothing to do")
                return root
            _log("emoji: cached pixels do not match their sha256; rebuilding")
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
            _log(f"emoji: cache {npz} unreadable ({err}); rebuilding")
    root.mkdir(parents=True, exist_ok=True)
    if force or _verify_emoji_raw(root):
        if shutil.which("npm") is None:
            raise RuntimeError("emoji: `npm` not found; install Node.js/npm (Debian: "
                               "`apt-get install npm`) and run the fetch again")
        _log(f"emoji: installing the npm package {EMOJI_NPM} into {root} (no root needed)")
        result = _run(["npm", "install", "--prefix", str(root), EMOJI_NPM,
                       "--no-audit", "--no-fund"], root)
        if result.returncode != 0:
            raise RuntimeError(f"emoji: npm install failed:\n{result.stderr.strip()}")
        problems = _verify_emoji_raw(root)
        if problems:
            raise RuntimeError(f"emoji: verification failed: {'; '.join(problems)}")
        _log(f"emoji: emoji.json and {EMOJI_COUNT} PNGs sha256 verified")
    else:
        _log(f"emoji: raw PNGs already present and verified in {root / EMOJI_PKG_DIR}")
    _log(f"emoji: compositing {EMOJI_COUNT} RGBA images on white into {npz}")
    _build_emoji_npz(root)
    _log(f"emoji: {EMOJI_COUNT} images (3×64×64, {len(EMOJI_CLASSES)} categories), "
         f"cache {npz.stat().st_size / 1e6:.1f} MB, pixels sha256 verified")
    return root


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise ImportError("digits needs scikit-learn (`pip install scikit-learn`); it ships the "
                          "8×8 digits inside the wheel") from err
    bunch = load_digits()
    images = bunch.images.astype(np.uint8)  # (1797, 8, 8), values 0..16
    return images, bunch.target.astype(np.int64)


def _fetch_digits(force: bool) -> Path:
    images, _ = _digits_arrays()
    if images.shape != (DIGITS_COUNT, 8, 8) or _sha256(images.tobytes()) != DIGITS_SHA256:
        raise RuntimeError(f"digits: scikit-learn's data has shape {images.shape} / sha256 "
                           f"{_sha256(images.tobytes())[:12]}…, expected ({DIGITS_COUNT}, 8, 8) / "
                           f"{DIGITS_SHA256[:12]}…")
    _log(f"digits: ships inside scikit-learn ({DIGITS_COUNT} images, 8×8, sha256 verified); "
         "nothing to fetch")
    return data_dir()


_FETCHERS = {"fashion_mnist": _fetch_fashion_mnist, "emoji": _fetch_emoji, "digits": _fetch_digits}


def fetch(name: str, force: bool = False) -> Path:
    """Fetch a data set into the data folder once, verify it, and return its folder."""
    if name == "all":
        for n in FETCH_NAMES:
            fetch(n, force=force)
        return data_dir()
    if name not in _FETCHERS:
        raise ValueError(f"name={name!r} is not a fetchable data set; allowed: "
                         f"{', '.join(FETCH_NAMES)} or 'all' (toy 2-D sets need no fetch)")
    return _FETCHERS[name](force)


# --------------------------------------------------------------------------------------------
# Loading: raw uint8 arrays (cached per process) → float32 tensors in [-1, 1].
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _fashion_arrays(folder: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(Path(folder) / f"{prefix}-images-idx3-ubyte.gz")
    labels = read_idx(Path(folder) / f"{prefix}-labels-idx1-ubyte.gz")
    n = 60000 if split == "train" else 10000
    if images.shape != (n, 28, 28) or labels.shape != (n,):
        raise ValueError(f"Fashion-MNIST {split} in {folder} has shapes {images.shape}, "
                         f"{labels.shape}; expected ({n}, 28, 28), ({n},)")
    return images, labels.astype(np.int64)


def _load_fashion(split: str) -> tuple[np.ndarray, np.ndarray]:
    folder = data_dir() / "fashion_mnist"
    missing = [f for f in FASHION_FILES if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(f"Fashion-MNIST not found: {folder} lacks {', '.join(missing)}. "
                                + _fetch_hint("fashion_mnist"))
    return _fashion_arrays(str(folder), split)  # (N, 28, 28) uint8, (N,) int64


@functools.lru_cache(maxsize=2)
def _emoji_arrays(path: str, mtime: float) -> dict[str, np.ndarray]:
    return _read_emoji_npz(Path(path))


def _emoji_is_test(file_name: str) -> bool:
    """Seed-free 90/10 split: the first 4 bytes of sha256(file name) mod 10 == 0 → test."""
    return int.from_bytes(hashlib.sha256(file_name.encode()).digest()[:4], "big") % 10 == 0


def _load_emoji(split: str) -> tuple[np.ndarray, np.ndarray]:
    root = data_dir() / "emoji"
    npz = root / EMOJI_NPZ
    try:
        arrays = _emoji_arrays(str(npz), npz.stat().st_mtime)
    except FileNotFoundError:
        if _verify_emoji_raw(root):
            raise FileNotFoundError(f"emoji not found: {npz} does not exist. "
                                    + _fetch_hint("emoji")) from None
        _log(f"emoji: building the missing cache {npz} from the PNGs already in {root}")
        _build_emoji_npz(root)
        arrays = _emoji_arrays(str(npz), npz.stat().st_mtime)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
        if _verify_emoji_raw(root):
            raise FileNotFoundError(f"emoji cache {npz} is unreadable ({err}) and the raw PNGs "
                                    "are missing. " + _fetch_hint("emoji")) from err
        _log(f"emoji: cache {npz} unreadable ({err}); rebuilding it from the PNGs in {root}")
        _build_emoji_npz(root)
        arrays = _emoji_arrays(str(npz), npz.stat().st_mtime)
    test = np.array([_emoji_is_test(str(f)) for f in arrays["files"]])
    keep = test if split == "test" else ~test
    return arrays["images"][keep], arrays["labels"][keep]  # (N, 64, 64, 3) uint8, (N,)


def _load_digits(split: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = _digits_arrays()  # (1797, 8, 8) in 0..16
    test = np.arange(len(images)) % 10 == 9  # every tenth image is a test image: 1618 / 179
    keep = test if split == "test" else ~test
    return images[keep], labels[keep]


_LOADERS = {"fashion_mnist": _load_fashion, "emoji": _load_emoji, "digits": _load_digits}
_MAX_VALUE = {"fashion_mnist": 255.0, "emoji": 255.0, "digits": 16.0}


def _resize(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """Square resize of (N, C, h, h): box average for integer shrink factors, else bilinear
    with antialiasing."""
    h = x.shape[-1]
    if resolution == h:
        return x
    if resolution < h and h % resolution == 0:
        return F.interpolate(x, size=(resolution, resolution), mode="area")
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear",
                         align_corners=False, antialias=True)


class ImageDataset(torch.utils.data.Dataset):
    """An in-memory labelled image set: ``images`` float32 (N, C, H, W) in [-1, 1], ``labels``."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, class_names, name: str,
                 split: str = "train"):
        if images.ndim != 4 or labels.shape != images.shape[:1]:
            raise ValueError(f"images/labels: shapes {tuple(images.shape)} / "
                             f"{tuple(labels.shape)}; expected (N, C, H, W) and (N,)")
        self.images = images            # (N, C, H, W) float32 in [-1, 1]
        self.labels = labels            # (N,) int64 in [0, num_classes)
        self.class_names = tuple(class_names)
        self.name = name                # registry key, e.g. 'fashion_mnist'
        self.split = split              # 'train' or 'test'

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def resolution(self) -> int:
        return self.images.shape[-1]

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i):
        return self.images[i], self.labels[i]

    def __repr__(self) -> str:
        return (f"ImageDataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
                f"shape={tuple(self.images.shape[1:])}, num_classes={self.num_classes})")

    def batches(self, batch_size: int, generator: torch.Generator | None = None,
                drop_last: bool = True, device=None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of shuffled (x (B, C, H, W), y (B,)) batches; order drawn from generator."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r}: expected a positive int")
        n = len(self)
        if drop_last and batch_size > n:
            raise ValueError(f"batch_size={batch_size} is larger than the data set ({n} images) "
                             "with drop_last=True, so an epoch would have no batch; allowed: "
                             f"batch_size <= {n}, or drop_last=False")
        gen_device = generator.device if generator is not None else "cpu"
        perm = torch.randperm(n, generator=generator, device=gen_device).cpu()
        stop = n - n % batch_size if drop_last else n

        def epoch():
            for start in range(0, stop, batch_size):
                idx = perm[start:start + batch_size]
                x, y = self.images[idx], self.labels[idx]
                if device is not None:
                    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                yield x, y
        return epoch()


def _check_int(param: str, value, low: int, high: int | None = None, allow_none: bool = True):
    if value is None and allow_none:
        return
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not ok or value < low or (high is not None and value > high):
        bound = f"an int in [{low}, {high}]" if high is not None else f"an int >= {low}"
        raise ValueError(f"{param}={value!r}: expected {bound}" + (" or None" if allow_none else ""))


def load_dataset(name: str, resolution: int | None = None, n: int | None = None, seed: int = 0,
                 split: str = "train", channels: int | None = None) -> ImageDataset:
    """Load an offline image data set as float32 (N, C, R, R) in [-1, 1] with int64 labels.

    resolution: None → the data set's default (fashion_mnist: 32 by padding the 28×28 images
    with 2 background pixels (−1) on every side, exact; emoji: 64; digits: 8). The native size
    is returned unchanged; an integer shrink factor averages boxes of pixels; any other size is
    a bilinear resize with antialiasing. n: a random subset of n images drawn with seed (subsets
    are nested: the n-subset of a seed contains its m-subsets for m < n). split: 'train' or
    'test' (Fashion-MNIST's own 60k/10k; emoji: a fixed 90/10 split by a hash of the file name;
    digits: every tenth image is a test image). channels: None (native), 1 (luminance) or 3.
    """
    if name not in IMAGE_DATASETS:
        hint = f"; toy 2-D sets {TOY_DATASETS} come from toy_2d()" if name in TOY_DATASETS else ""
        raise ValueError(f"name={name!r}: unknown data set; allowed: "
                         f"{', '.join(IMAGE_DATASETS)}{hint}")
    info = IMAGE_DATASETS[name]
    _check_int("resolution", resolution, 2, MAX_RESOLUTION)
    _check_int("n", n, 1)
    _check_int("seed", seed, 0, allow_none=False)
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: allowed {', '.join(SPLITS)}")
    if channels not in (None, 1, 3):
        raise ValueError(f"channels={channels!r}: allowed None (native: {info.channels}), 1 or 3")

    images, labels = _LOADERS[name](split)  # uint8 (N, H, W) or (N, H, W, 3); int64 (N,)
    if n is not None:
        if n > len(images):
            raise ValueError(f"n={n}: larger than the {len(images)} images in {name} split="
                             f"{split!r}; allowed 1..{len(images)} or None (all)")
        g = torch.Generator().manual_seed(int(seed))
        idx = torch.randperm(len(images), generator=g)[:n].sort().values.numpy()
        images, labels = images[idx], labels[idx]

    x = torch.from_numpy(np.ascontiguousarray(images))
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)  # (N, C, H, W) uint8
    x = x.contiguous().float()  # permuting uint8 first is 3× faster than floats
    x.div_(_MAX_VALUE[name] / 2).sub_(1)  # (N, C, H, W) in [-1, 1], in place: x is ours
    if channels == 1 and x.shape[1] == 3:
        x = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])  # ITU-R BT.601 luma
    elif channels == 3 and x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)

    r = info.default_resolution if resolution is None else int(resolution)
    if name == "fashion_mnist" and r == 32:
        x = F.pad(x, (2, 2, 2, 2), value=-1.0)  # exact: the background is 0 → −1
    else:
        x = _resize(x, r)
    x = x.clamp_(-1, 1)  # x is fresh memory here, never a view of a cached array
    y = torch.from_numpy(np.ascontiguousarray(labels)).long()
    return ImageDataset(x, y, info.class_names, name, split)


# --------------------------------------------------------------------------------------------
# Toy 2-D distributions (no fetch): float32 (n, 2), roughly unit scale.
# --------------------------------------------------------------------------------------------


def toy_2d(name: str, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """n samples (n, 2) float32 from a toy 2-D distribution: moons, swiss_roll,
    gaussian_mixture (8 Gaussians on a circle) or checkerboard."""
    if name not in TOY_DATASETS:
        raise ValueError(f"name={name!r}: unknown toy data set; allowed: {', '.join(TOY_DATASETS)}")
    _check_int("n", n, 1, allow_none=False)
    g = generator
    dev = g.device if g is not None else torch.device("cpu")

    def rand(*shape):
        return torch.rand(*shape, generator=g, device=dev)

    def randn(*shape):
        return torch.randn(*shape, generator=g, device=dev)

    if name == "moons":
        # two interleaved half circles (+ noise 0.05), centred and scaled to about unit std
        theta = torch.pi * rand(n)
        upper = rand(n) < 0.5
        x = torch.where(upper, torch.cos(theta), 1 - torch.cos(theta))
        y = torch.where(upper, torch.sin(theta), 0.5 - torch.sin(theta))
        pts = torch.stack([x, y], 1) + 0.05 * randn(n, 2)
        pts = (pts - torch.tensor([0.5, 0.25], device=dev)) / torch.tensor([0.87, 0.5], device=dev)
    elif name == "swiss_roll":
        # the 2-D spiral (t cos t, t sin t), t ∈ [1.5π, 4.5π], + noise 0.5, divided by 8
        t = 1.5 * torch.pi * (1 + 2 * rand(n))
        pts = torch.stack([t * torch.cos(t), t * torch.sin(t)], 1) + 0.5 * randn(n, 2)
        pts = pts / 8
    elif name == "gaussian_mixture":
        # 8 equal Gaussians, std 0.1, centred on a circle of radius √2 (unit std per coordinate)
        k = torch.randint(0, 8, (n,), generator=g, device=dev)
        angle = k.float() * (2 * torch.pi / 8)
        centres = 2 ** 0.5 * torch.stack([torch.cos(angle), torch.sin(angle)], 1)
        pts = centres + 0.1 * randn(n, 2)
    else:
        # 4×4 checkerboard on [−2, 2]², uniform on the 8 squares whose cell indices sum to even
        x = 4 * rand(n) - 2
        col = torch.floor(x)
        row = 2 * torch.randint(0, 2, (n,), generator=g, device=dev) - 2 + torch.remainder(col, 2)
        pts = torch.stack([x, row + rand(n)], 1)
    return pts.float()


# --------------------------------------------------------------------------------------------
# CLI: python -m pdlib.data fetch [names] | list
# --------------------------------------------------------------------------------------------


def _present() -> dict[str, str]:
    """One line per data set saying what is in the data folder (cheap: no hashing)."""
    root = data_dir()
    out = {}
    fm = root / "fashion_mnist"
    if all((fm / f).is_file() for f in FASHION_FILES):
        size = sum((fm / f).stat().st_size for f in FASHION_FILES)
        out["fashion_mnist"] = f"present   {fm} ({size / 1e6:.1f} MB, 60000 train + 10000 test)"
    else:
        out["fashion_mnist"] = "missing   (python -m pdlib.data fetch fashion_mnist)"
    npz = root / "emoji" / EMOJI_NPZ
    if npz.is_file():
        out["emoji"] = f"present   {npz} ({npz.stat().st_size / 1e6:.1f} MB, {EMOJI_COUNT} images)"
    else:
        out["emoji"] = "missing   (python -m pdlib.data fetch emoji)"
    try:
        import sklearn  # noqa: F401
        out["digits"] = f"present   inside scikit-learn ({DIGITS_COUNT} images)"
    except ImportError:
        out["digits"] = "missing   (pip install scikit-learn)"
    for toy in TOY_DATASETS:
        out[toy] = "generated toy_2d() (no files)"
    return out


def main(argv: list[str] | None = None) -> int:
    """CLI of the ``pdlib-data`` script: ``fetch [names…] [--force]`` or ``list``. A bad input is
    one line and exit 2, a failed fetch one line and exit 3; --debug shows the traceback."""
    from pdlib.errors import cli_main
    return cli_main("pdlib.data", _main, argv, failures=(RuntimeError,))


def _main(argv: list[str]) -> int:
    from pdlib.errors import ArgumentParser
    parser = ArgumentParser(prog="python -m pdlib.data",
                            description="Fetch and list pdlib's offline data sets.",
                            epilog="--debug shows the traceback of an error. Exit status: 2 bad "
                                   "input, 3 a fetch failed.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_fetch = sub.add_parser("fetch", help="fetch and verify data sets into the data folder")
    p_fetch.add_argument("names", nargs="*", metavar="NAME",
                         help=f"{', '.join(FETCH_NAMES)} or all (default)")
    p_fetch.add_argument("--force", action="store_true", help="fetch again even if present")
    sub.add_parser("list", help="show which data sets are present")
    args = parser.parse_args(argv)

    if args.command == "list":
        _log(f"data folder: {data_dir()}")
        for name, line in _present().items():
            _log(f"  {name:<17}{line}")
        return 0
    wanted = args.names or ["all"]  # no names: every data set
    for name in wanted:
        if name not in (*FETCH_NAMES, "all"):
            p_fetch.error(f"argument NAME: invalid choice: {name!r} (choose from "
                         f"{', '.join(repr(n) for n in (*FETCH_NAMES, 'all'))})")
    names = list(FETCH_NAMES) if "all" in wanted else list(dict.fromkeys(wanted))
    for name in names:
        t0 = time.perf_counter()
        fetch(name, force=args.force)
        _log(f"  ({name}: {time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
