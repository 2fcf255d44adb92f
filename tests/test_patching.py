"""space_to_depth / depth_to_space layout and round trip; sincos_2d properties."""

import pytest
import torch

from pdlib.patching import depth_to_space, sincos_2d, space_to_depth


def test_space_to_depth_hand_made_layout():
    # One channel, 4×4 image with pixel value 10·row + col, P = 2.
    x = (10 * torch.arange(4)[:, None] + torch.arange(4)[None, :]).float()[None, None]
    y = space_to_depth(x, 2)
    assert y.shape == (1, 4, 2, 2)
    # Channel i·P + j holds pixel (2y + i, 2x + j).
    expected = torch.tensor([
        [[0, 2], [20, 22]],     # (i, j) = (0, 0)
        [[1, 3], [21, 23]],     # (0, 1)
        [[10, 12], [30, 32]],   # (1, 0)
        [[11, 13], [31, 33]],   # (1, 1)
    ]).float()
    assert torch.equal(y[0], expected)


def test_space_to_depth_channel_major_layout():
    # Channel c of the image occupies patched channels c·P² … c·P² + P² − 1.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 8, 12, generator=g)
    P = 4
    y = space_to_depth(x, P)
    assert y.shape == (2, 3 * P * P, 2, 3)
    for c, i, j, r, s in [(0, 0, 0, 0, 0), (1, 2, 3, 1, 2), (2, 3, 1, 0, 1)]:
        assert torch.equal(y[:, c * P * P + i * P + j, r, s], x[:, c, r * P + i, s * P + j])


@pytest.mark.parametrize("P", [1, 2, 4, 8])
def test_round_trip(P):
    g = torch.Generator().manual_seed(P)
    x = torch.randn(3, 2, 16, 24, generator=g)
    assert torch.equal(depth_to_space(space_to_depth(x, P), P), x)
    z = torch.randn(3, 2 * P * P, 3, 5, generator=g)
    assert torch.equal(space_to_depth(depth_to_space(z, P), P), z)


def test_patching_errors():
    x = torch.zeros(1, 3, 32, 32)
    with pytest.raises(ValueError, match="patch_size=3 does not divide"):
        space_to_depth(x, 3)
    with pytest.raises(ValueError, match="patch_size=0"):
        space_to_depth(x, 0)
    with pytest.raises(ValueError, match="4-D"):
        space_to_depth(x[0], 2)
    with pytest.raises(ValueError, match="not a multiple of patch_size"):
        depth_to_space(torch.zeros(1, 6, 4, 4), 2)


def test_sincos_2d_properties():
    dim, h, w = 16, 5, 7
    e = sincos_2d(dim, h, w)
    assert e.shape == (dim, h, w) and e.dtype == torch.float32
    assert e.abs().max() <= 1
    # Each of the dim/2 (sin, cos) pairs has unit norm: ‖e(p)‖² = dim/2 everywhere.
    torch.testing.assert_close((e ** 2).sum(0), torch.full((h, w), dim / 2))
    # First half depends on the row only, second half on the column only.
    assert torch.equal(e[: dim // 2], e[: dim // 2, :, :1].expand(-1, h, w))
    assert torch.equal(e[dim // 2:], e[dim // 2:, :1, :].expand(-1, h, w))
    # Row (0, 0) is [sin 0, cos 0] = [0…0, 1…1] in each half.
    q = dim // 4
    assert torch.equal(e[:, 0, 0], torch.tensor(([0.0] * q + [1.0] * q) * 2))
    # Distinct positions get distinct embeddings.
    flat = e.reshape(dim, -1).T
    assert torch.cdist(flat, flat).add(torch.eye(h * w)).min() > 1e-3
    # Translation invariance: <e(p), e(q)> depends only on p - q (here along rows).
    assert torch.allclose(e[:, 1, 0] @ e[:, 3, 0], e[:, 2, 0] @ e[:, 4, 0], atol=1e-5)
    # Closed form of one entry: row p = 3, k = 1 -> sin(3 · 10000^(-1/q)).
    assert torch.isclose(e[1, 3, 0], torch.tensor(3 * 10000.0 ** (-1 / q)).sin())


def test_sincos_2d_errors():
    with pytest.raises(ValueError, match="dim=6"):
        sincos_2d(6, 4, 4)
    with pytest.raises(ValueError, match="h=0"):
        sincos_2d(8, 0, 4)
