"""pdlib.corruptions: each deliberate failure does exactly what chapter 8 says it does."""
import numpy as np
import pytest
import torch

from pdlib.corruptions import add_noise, gaussian_blur, keep_classes, stitch


def _images(n=8, c=1, h=16, w=16, seed=0):
    return torch.rand((n, c, h, w), generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_blur_keeps_constants_and_matches_a_direct_convolution():
    flat = torch.full((2, 3, 12, 12), 0.3)
    assert torch.allclose(gaussian_blur(flat, 1.0), flat, atol=1e-6)
    x = _images(2, 1, 12, 12).double()
    sigma, r = 1.0, 3
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    k1 = torch.exp(-t ** 2 / 2)
    k2 = torch.outer(k1, k1) / k1.sum() ** 2                    # the 2-D kernel
    pad = torch.nn.functional.pad(x, (r, r, r, r), mode="reflect")
    ref = torch.nn.functional.conv2d(pad, k2.view(1, 1, 7, 7))
    assert torch.allclose(gaussian_blur(x, sigma), ref, atol=1e-12)
    # It removes high frequencies: a checkerboard loses almost all its energy.
    board = ((torch.arange(12)[:, None] + torch.arange(12)) % 2 * 2 - 1).double()
    assert gaussian_blur(board[None, None], 1.0).abs().max() < 0.01


def test_noise_is_seeded_and_clamped():
    x = _images()
    a = add_noise(x, 0.1, torch.Generator().manual_seed(1))
    b = add_noise(x, 0.1, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.min() >= -1 and a.max() <= 1
    inner = (x.abs() < 0.5)                                     # far from the clamp
    assert abs(float((a - x)[inner].std()) - 0.1) < 0.01
    assert torch.equal(add_noise(x, 0.0, torch.Generator()), x)


def test_keep_classes_drops_the_other_modes():
    labels = np.array([3, 0, 7, 1, 0, 9])
    assert keep_classes(labels, (0, 1)).tolist() == [1, 3, 4]
    with pytest.raises(ValueError, match="classes="):
        keep_classes(labels, (5,))


def test_stitch_keeps_every_tile_in_place_from_different_images():
    n, grid = 8, 2
    # Image k is constant k in every pixel: a tile's value names its source image.
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 8, 8).clone()
    y = stitch(x, grid)
    for k in range(n):
        src = [float(y[k, 0, r * 4, c * 4]) for r in range(2) for c in range(2)]
        assert len(set(src)) == grid ** 2                       # four different images
        assert src == [float((k + j * (n // 4)) % n) for j in range(4)]
        for r in range(2):
            for c in range(2):                                  # each tile is whole
                tile = y[k, 0, r * 4:(r + 1) * 4, c * 4:(c + 1) * 4]
                assert torch.all(tile == tile[0, 0])
    # A permutation of tiles: the multiset of tiles at each position is unchanged.
    assert torch.equal(y.sort(0).values, x.sort(0).values)


@pytest.mark.parametrize("call, match", [
    (lambda: gaussian_blur(_images(), 0.0), "sigma=0.0"),
    (lambda: gaussian_blur(_images(h=4, w=4), 2.0), "sigma=2.0"),
    (lambda: add_noise(_images(), -1.0, torch.Generator()), "std=-1.0"),
    (lambda: stitch(_images(h=15, w=15), 2), "grid=2"),
    (lambda: stitch(_images(n=3), 2), "at least 4"),
    (lambda: stitch(torch.zeros(4, 8, 8), 2), "images:"),
])
def test_bad_input_names_the_parameter(call, match):
    with pytest.raises(ValueError, match=match):
        call()
