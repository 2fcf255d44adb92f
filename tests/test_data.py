"""pdlib.data: offline loaders, the IDX parser, toy 2-D sets, batching and the fetch CLI."""
import gzip
import struct

import numpy as np
import pytest
import torch

from pdlib import data
from pdlib.data import ImageDataset, load_dataset, parse_idx, read_idx, toy_2d


def _fashion_present():
    return all((data.data_dir() / "fashion_mnist" / f).is_file() for f in data.FASHION_FILES)


def _emoji_present():
    return (data.data_dir() / "emoji" / data.EMOJI_NPZ).is_file()


def _emoji_raw_present():
    return (data.data_dir() / "emoji" / data.EMOJI_PKG_DIR / "emoji.json").is_file()


needs_fashion = pytest.mark.skipif(
    not _fashion_present(), reason="Fashion-MNIST not fetched (python -m pdlib.data fetch fashion_mnist)")
needs_emoji = pytest.mark.skipif(
    not _emoji_present(), reason="emoji not fetched (python -m pdlib.data fetch emoji)")


# ---------------------------------------------------------------- digits (always available)

def test_digits_matches_sklearn_scaled_to_unit_range():
    from sklearn.datasets import load_digits
    ref = load_digits()
    ds = load_dataset("digits")
    train = np.arange(len(ref.images)) % 10 != 9
    assert isinstance(ds, ImageDataset)
    assert ds.images.shape == (1618, 1, 8, 8) and ds.images.dtype == torch.float32
    assert ds.labels.dtype == torch.int64 and ds.labels.shape == (1618,)
    assert ds.resolution == 8 and ds.channels == 1 and len(ds) == 1618
    assert ds.num_classes == 10 and ds.class_names[3] == "3" and ds.name == "digits"
    expected = torch.from_numpy(ref.images[train]).float() / 8 - 1  # 0..16 → [-1, 1]
    torch.testing.assert_close(ds.images[:, 0], expected)
    assert torch.equal(ds.labels, torch.from_numpy(ref.target[train]).long())
    assert ds.images.min() == -1 and ds.images.max() == 1
    x, y = ds[5]
    assert x.shape == (1, 8, 8) and int(y) == int(ref.target[train][5])


def test_digits_splits_are_disjoint_and_cover_everything():
    train, test = load_dataset("digits", split="train"), load_dataset("digits", split="test")
    assert len(train) + len(test) == 1797 and len(test) == 179
    rows = {tuple(r.tolist()) + (int(y),) for r, y in zip(train.images.flatten(1), train.labels)}
    overlap = sum(tuple(r.tolist()) + (int(y),) in rows
                  for r, y in zip(test.images.flatten(1), test.labels))
    assert overlap == 0


def test_resize_integer_shrink_is_a_box_average():
    full = load_dataset("digits", n=20, seed=3)
    half = load_dataset("digits", n=20, seed=3, resolution=4)
    box = full.images.reshape(20, 1, 4, 2, 4, 2).mean(dim=(3, 5))
    torch.testing.assert_close(half.images, box)


def test_resize_up_keeps_range_shape_and_constants():
    ds = load_dataset("digits", resolution=16, n=50, seed=0)
    assert ds.images.shape == (50, 1, 16, 16) and ds.resolution == 16
    assert ds.images.min() >= -1 and ds.images.max() <= 1
    # bilinear with antialias is a convex combination: a constant image stays constant
    const = torch.full((2, 1, 8, 8), 0.25)
    for r in (3, 5, 16, 27):
        out = data._resize(const, r)
        assert out.shape == (2, 1, r, r)
        torch.testing.assert_close(out, torch.full_like(out, 0.25))
    # area resize of a checkerboard by its own period gives its mean
    checker = (torch.arange(8)[:, None] + torch.arange(8)[None, :]) % 2 * 2.0 - 1
    torch.testing.assert_close(data._resize(checker[None, None], 4), torch.zeros(1, 1, 4, 4))


def test_channels_option():
    grey3 = load_dataset("digits", n=8, channels=3)
    assert grey3.images.shape == (8, 3, 8, 8)
    assert torch.equal(grey3.images[:, 0], grey3.images[:, 2])
    grey3.images[:, 0] += 0  # a real tensor, not an expanded view that rejects in-place ops
    assert grey3.images.is_contiguous()


def test_subset_is_deterministic_per_seed_and_nested():
    a = load_dataset("digits", n=100, seed=7)
    b = load_dataset("digits", n=100, seed=7)
    c = load_dataset("digits", n=100, seed=8)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images)
    small = load_dataset("digits", n=40, seed=7)
    big_rows = {tuple(r.tolist()) for r in a.images.flatten(1)}
    assert all(tuple(r.tolist()) in big_rows for r in small.images.flatten(1))


# ---------------------------------------------------------------- batches

def _indexed_dataset(n=23):
    images = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    return ImageDataset(images, torch.arange(n), [str(i) for i in range(n)], "toy")


def test_batches_cover_each_index_once_per_epoch():
    ds = _indexed_dataset(23)
    g = torch.Generator().manual_seed(0)
    seen = [y for _, y in ds.batches(5, g)]
    assert [len(y) for y in seen] == [5, 5, 5, 5]  # drop_last: 23 → 4 full batches
    flat = torch.cat(seen)
    assert len(set(flat.tolist())) == 20
    seen_all = torch.cat([y for _, y in ds.batches(5, g, drop_last=False)])
    assert sorted(seen_all.tolist()) == list(range(23))
    for x, y in ds.batches(4, g):
        assert torch.equal(x[:, 0, 0, 0], y.float())  # images travel with their labels
        assert x.shape == (4, 1, 2, 2)


def test_batches_reproducible_with_seed_and_differ_across_epochs():
    ds = _indexed_dataset(30)
    run = lambda seed: [y.tolist() for _, y in ds.batches(6, torch.Generator().manual_seed(seed))]
    assert run(1) == run(1)
    assert run(1) != run(2)
    g = torch.Generator().manual_seed(1)
    epoch1 = [y.tolist() for _, y in ds.batches(6, g)]
    epoch2 = [y.tolist() for _, y in ds.batches(6, g)]
    assert epoch1 == run(1) and epoch1 != epoch2


def test_batches_device_and_validation():
    ds = _indexed_dataset(10)
    x, y = next(ds.batches(3, torch.Generator().manual_seed(0), device="cpu"))
    assert x.device.type == "cpu" and y.dtype == torch.int64
    with pytest.raises(ValueError, match="batch_size=11"):
        ds.batches(11, None)
    with pytest.raises(ValueError, match="batch_size=0"):
        ds.batches(0, None)
    assert len(list(ds.batches(11, None, drop_last=False))) == 1


# ---------------------------------------------------------------- toy 2-D

@pytest.mark.parametrize("name", data.TOY_DATASETS)
def test_toy_2d_shape_determinism_and_scale(name):
    x = toy_2d(name, 4000, torch.Generator().manual_seed(0))
    assert x.shape == (4000, 2) and x.dtype == torch.float32
    assert torch.equal(x, toy_2d(name, 4000, torch.Generator().manual_seed(0)))
    assert not torch.equal(x, toy_2d(name, 4000, torch.Generator().manual_seed(1)))
    std = x.std(0)
    assert (std > 0.6).all() and (std < 1.4).all(), std
    assert x.mean(0).abs().max() < 0.4
    assert toy_2d(name, 3).shape == (3, 2)  # generator None uses the global RNG


def test_toy_2d_structure():
    g = torch.Generator().manual_seed(0)
    mix = toy_2d("gaussian_mixture", 2000, g)
    angles = torch.arange(8) * (2 * torch.pi / 8)
    centres = 2 ** 0.5 * torch.stack([angles.cos(), angles.sin()], 1)
    dist = torch.cdist(mix, centres).min(1).values
    assert dist.max() < 0.6
    board = toy_2d("checkerboard", 2000, g)
    assert (board.abs() <= 2).all()
    assert (torch.remainder(board.floor().sum(1), 2) == 0).all()  # only the "even" squares
    moons = toy_2d("moons", 2000, g)
    assert moons.abs().max() < 3


# ---------------------------------------------------------------- IDX parser

def _idx_bytes(code, fmt, shape, values):
    header = bytes([0, 0, code, len(shape)]) + struct.pack(f">{len(shape)}i", *shape)
    return header + struct.pack(f">{len(values)}{fmt}", *values)


def test_parse_idx_hand_written(tmp_path):
    raw = _idx_bytes(0x08, "B", (2, 2, 3), list(range(12)))
    arr = parse_idx(raw)
    assert arr.dtype == np.uint8 and arr.shape == (2, 2, 3)
    assert arr[1, 0, 2] == 8
    ints = parse_idx(_idx_bytes(0x0C, "i", (3,), [1, -2, 70000]))
    assert ints.dtype == np.int32 and ints.tolist() == [1, -2, 70000]
    (tmp_path / "a.gz").write_bytes(gzip.compress(raw))
    (tmp_path / "a").write_bytes(raw)
    assert np.array_equal(read_idx(tmp_path / "a.gz"), arr)
    assert np.array_equal(read_idx(tmp_path / "a"), arr)


def test_parse_idx_rejects_bad_input():
    with pytest.raises(ValueError, match="magic"):
        parse_idx(b"\x01\x00\x08\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match="dtype code"):
        parse_idx(bytes([0, 0, 0x07, 1]) + struct.pack(">i", 0))
    with pytest.raises(ValueError, match="does not match shape"):
        parse_idx(_idx_bytes(0x08, "B", (4,), [1, 2, 3, 4])[:-1])


# ---------------------------------------------------------------- missing data, validation, CLI

def test_data_dir_and_missing_data_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PDLIB_DATA", str(tmp_path))
    assert data.data_dir() == tmp_path.resolve()
    with pytest.raises(FileNotFoundError, match="python -m pdlib.data fetch fashion_mnist"):
        load_dataset("fashion_mnist")
    with pytest.raises(FileNotFoundError, match="python -m pdlib.data fetch emoji"):
        load_dataset("emoji")
    assert list(tmp_path.iterdir()) == []  # loading never creates or downloads anything


@pytest.mark.parametrize("kwargs, param", [
    (dict(name="mnist"), "name='mnist'"),
    (dict(name="moons"), "toy_2d"),
    (dict(name="digits", resolution=0), "resolution=0"),
    (dict(name="digits", resolution=8.0), "resolution=8.0"),
    (dict(name="digits", resolution=True), "resolution=True"),
    (dict(name="digits", n=0), "n=0"),
    (dict(name="digits", n=5000), "n=5000"),
    (dict(name="digits", seed=-1), "seed=-1"),
    (dict(name="digits", split="val"), "split='val'"),
    (dict(name="digits", channels=2), "channels=2"),
])
def test_load_dataset_validation(kwargs, param):
    with pytest.raises(ValueError, match=param.replace("(", r"\(")):
        load_dataset(**kwargs)


def test_toy_and_fetch_validation():
    with pytest.raises(ValueError, match="name='spiral'"):
        toy_2d("spiral", 10)
    with pytest.raises(ValueError, match="n=0"):
        toy_2d("moons", 0)
    with pytest.raises(ValueError, match="name='imagenet'"):
        data.fetch("imagenet")


def test_cli_list_and_fetch_digits(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("PDLIB_DATA", str(tmp_path))
    assert data.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "fashion_mnist" in out and "missing" in out and "fetch emoji" in out
    assert data.main(["fetch", "digits"]) == 0
    assert "nothing to fetch" in capsys.readouterr().out
    assert data.main(["fetch", "imagenet"]) == 2                         # one line, no usage text
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("pdlib.data: error: ") and "invalid choice: 'imagenet'" in err[0]


@needs_fashion
@needs_emoji
def test_cli_fetch_without_names_fetches_all_and_is_idempotent(capsys):
    assert data.main(["fetch"]) == 0
    out = capsys.readouterr().out
    assert out.count("nothing to do") == 2 and "nothing to fetch" in out


def test_composite_on_white():
    rgba = np.array([[[10, 20, 30, 0], [10, 20, 30, 255], [0, 0, 0, 128]]], np.uint8)
    out = data._composite_on_white(rgba)
    assert out.tolist() == [[[255, 255, 255], [10, 20, 30], [127, 127, 127]]]


# ---------------------------------------------------------------- fetched data (CI fetches)

@needs_fashion
def test_fashion_mnist_loads_padded_to_32():
    ds = load_dataset("fashion_mnist", split="test")
    assert ds.images.shape == (10000, 1, 32, 32) and ds.num_classes == 10
    assert torch.bincount(ds.labels).tolist() == [1000] * 10
    assert ds.class_names[9] == "Ankle boot"
    native = load_dataset("fashion_mnist", split="test", resolution=28)
    assert native.images.shape == (10000, 1, 28, 28)
    assert torch.equal(ds.images[:, :, 2:30, 2:30], native.images)  # padding is exact
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert (ds.images[:, 0][:, border] == -1).all()
    assert native.images.min() == -1 and native.images.max() == 1
    # an upright garment: a T-shirt is wider at the top (sleeves) than at the bottom
    tshirts = native.images[native.labels == 0].mean(0)[0]
    assert (tshirts[4] > 0).sum() > (tshirts[24] > 0).sum()


@needs_fashion
def test_fashion_mnist_train_subset_and_resize():
    ds = load_dataset("fashion_mnist", n=256, seed=1, resolution=14)
    assert ds.images.shape == (256, 1, 14, 14) and len(ds) == 256
    full = load_dataset("fashion_mnist", n=256, seed=1, resolution=28)
    torch.testing.assert_close(ds.images, full.images.reshape(256, 1, 14, 2, 14, 2).mean((3, 5)))


@needs_fashion
def test_fetch_is_idempotent(capsys):
    data.fetch("fashion_mnist")
    assert "nothing to do" in capsys.readouterr().out


@needs_emoji
def test_emoji_loads_on_white():
    train, test = load_dataset("emoji"), load_dataset("emoji", split="test")
    assert len(train) + len(test) == data.EMOJI_COUNT
    assert 0.08 < len(test) / data.EMOJI_COUNT < 0.12
    assert train.images.shape[1:] == (3, 64, 64) and train.num_classes == 10
    assert train.class_names == data.EMOJI_CLASSES
    assert set(train.labels.tolist()) == set(range(10))
    corners = train.images[:, :, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert (corners > 0.99).float().mean() > 0.9  # transparent corners composite to white
    small = load_dataset("emoji", resolution=16, n=32, seed=0, channels=1)
    assert small.images.shape == (32, 1, 16, 16)
    assert small.images.min() >= -1 and small.images.max() <= 1


@needs_emoji
@pytest.mark.skipif(not _emoji_raw_present(), reason="emoji PNGs not fetched")
def test_emoji_corrupt_cache_is_rebuilt(monkeypatch, tmp_path):
    src = data.data_dir() / "emoji"
    (tmp_path / "emoji").mkdir()
    (tmp_path / "emoji" / "node_modules").symlink_to(src / "node_modules")
    (tmp_path / "emoji" / data.EMOJI_NPZ).write_bytes(b"not a zip file")
    monkeypatch.setenv("PDLIB_DATA", str(tmp_path))
    ds = load_dataset("emoji", n=10, seed=0)
    ref = load_dataset("emoji", n=10, seed=0)  # now from the rebuilt cache
    assert ds.images.shape == (10, 3, 64, 64) and torch.equal(ds.images, ref.images)
    with np.load(tmp_path / "emoji" / data.EMOJI_NPZ) as z:
        assert z["images"].shape == (data.EMOJI_COUNT, 64, 64, 3)
