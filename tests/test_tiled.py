"""Patch-by-patch generation (Arakawa et al. 2023): the tile grid and its order, Global Content
Conditioning (the pooled x_t each tile sees, in sampling and in training), the positions, chunked
evaluation against the batched one, TileLoss against EDMLoss / VPLoss with one tile, the tiles of
a batch and the per-image loss, training on both net families, and option errors."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pdlib.denoisers import TiledDenoiser
from pdlib.evaluation import sampling_used
from pdlib.losses import EDMLoss, TileLoss, VPLoss
from pdlib.methods import build_method
from pdlib.nets import net_preset
from pdlib.nets.layers import PositionEmbedding
from pdlib.patching import check_grid, from_tiles, global_content, to_tiles
from pdlib.precond import EDMPrecond, VPPrecond
from pdlib.schedules import vp_schedule
from pdlib.train import TrainConfig, train

TINY = dict(dataset="digits", resolution=8, batch_size=16, log_every=1, sample_every=0,
            sample_n=4, sample_steps=2, ckpt_every=0, warmup_steps=0, lr=2e-3, out_dir=None)
SCHED = vp_schedule("cosine", 1000)


def _cfg(**kw):
    base = dict(method="tiled", preset="tiny", dataset="digits", img_channels=1, resolution=8,
                num_classes=10)
    return TrainConfig.flat(**{**base, **kw})


def _method(**kw):
    return build_method(_cfg(**kw))


def _randomise(m, seed=0, scale=0.3):
    """Perturb every weight (the U-Net zero-initialises its output conv), eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.net.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    m.denoiser.eval()
    return m


def _gen(seed):
    return torch.Generator().manual_seed(seed)


class Recorder(nn.Module):
    """A tile net that records (x_in, noise_labels, positions) and outputs zeros."""

    def __init__(self, C=1, extra=1, num_positions=4):
        super().__init__()
        self.in_channels, self.extra_in_channels, self.num_positions = C, extra, num_positions
        self.w = nn.Parameter(torch.zeros(()))
        self.seen = []

    def forward(self, x_in, noise_labels, class_labels=None, positions=None):
        self.seen.append((x_in.detach().clone(), noise_labels.detach().clone(), positions))
        return x_in[:, :self.in_channels] * self.w


# ----------------------------------------------------------------------------------------------
# The grid.

@pytest.mark.parametrize("shape", [(8, 8), (8, 12)])
@pytest.mark.parametrize("N", [1, 2, 4])
def test_tiles_round_trip_and_are_row_major(shape, N):
    H, W = shape
    h, w = H // N, W // N
    x = torch.randn(2, 3, H, W, generator=_gen(0))
    t = to_tiles(x, N)
    assert t.shape == (2, N * N, 3, h, w)
    assert torch.equal(from_tiles(t, N), x)
    for i in range(N):
        for j in range(N):
            assert torch.equal(t[:, i * N + j], x[..., i * h:(i + 1) * h, j * w:(j + 1) * w]), (i, j)


def test_global_content_is_the_mean_of_each_block():
    x = torch.randn(2, 3, 8, 12, generator=_gen(1), dtype=torch.float64)
    for N in (2, 4):
        h, w = 8 // N, 12 // N
        want = torch.empty(2, 3, h, w, dtype=torch.float64)
        for a in range(h):
            for b in range(w):
                want[..., a, b] = x[..., a * N:(a + 1) * N, b * N:(b + 1) * N].mean((-2, -1))
        torch.testing.assert_close(global_content(x, N), want)
    assert torch.equal(global_content(x, 1), x)


# ----------------------------------------------------------------------------------------------
# What the tile net sees when sampling: its tile, the pooled x_t, its position.

def _tile_rows(seen, B, N2):
    """Per-run records → (x_in [B, N², ...], positions [B, N²]) in tile order, from the runs'
    image-major layout (row b·c + j of a run starting at tile s is tile s + j of image b)."""
    xs, ps, start = [], [], 0
    for x_in, _, pos in seen:
        c = x_in.shape[0] // B
        xs.append(x_in.reshape(B, c, *x_in.shape[1:]))
        ps.append(pos.reshape(B, c))
        assert torch.equal(pos.reshape(B, c), torch.arange(start, start + c).expand(B, c))
        start += c
    assert start == N2
    return torch.cat(xs, 1), torch.cat(ps, 1)


@pytest.mark.parametrize("kind", ["vp", "edm"])
@pytest.mark.parametrize("chunk", [1, 3, 4])
def test_each_tile_sees_its_pixels_the_pooled_image_and_its_position(kind, chunk):
    N, B = 2, 2
    net = Recorder()
    tile = VPPrecond(net, SCHED) if kind == "vp" else EDMPrecond(net)
    D = TiledDenoiser(tile, N, chunk=chunk)
    x = torch.randn(B, 1, 8, 8, generator=_gen(2), dtype=torch.float64) * 3
    sigma = torch.tensor([0.5, 3.0], dtype=torch.float64)
    D(x, sigma)
    assert len(net.seen) == math.ceil(N * N / chunk)
    scale = 1 / (1 + sigma ** 2).sqrt() if kind == "vp" else 1 / (sigma ** 2 + 0.25).sqrt()
    x_scaled = x * scale.reshape(-1, 1, 1, 1)                    # VP: x_t; EDM: c_in·x
    rows, pos = _tile_rows(net.seen, B, N * N)
    assert rows.shape == (B, 4, 2, 4, 4)
    torch.testing.assert_close(rows[:, :, :1].double(), to_tiles(x_scaled, N), rtol=1e-5, atol=1e-6)
    pooled = global_content(x_scaled, N)[:, None].expand(B, 4, 1, 4, 4)
    torch.testing.assert_close(rows[:, :, 1:].double(), pooled, rtol=1e-5, atol=1e-6)
    assert torch.equal(pos, torch.arange(4).expand(B, 4))


def test_training_feeds_the_pooled_noisy_whole_image_vp():
    """TileLoss(kind='vp') draws t then ε with the generator: recompute both and check every input
    of the net (tile pixels of x_t, pool(x_t), the position, the original t) and the L1 loss."""
    N, m = 2, 3
    net = Recorder()
    loss_fn = TileLoss(N, kind="vp", schedule=SCHED, norm="l1")
    x0 = torch.rand(m, 1, 8, 8, generator=_gen(3)) * 2 - 1
    tiles = torch.tensor([[0, 3], [2, 1], [1, 2]])
    loss = loss_fn(VPPrecond(net, SCHED), x0, generator=_gen(5), tiles=tiles)
    g = _gen(5)
    t = torch.randint(0, 1000, (m,), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    abar = SCHED.alphas_cumprod[t].reshape(-1, 1, 1, 1).float()
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
    pick = lambda v: to_tiles(v, N)[torch.arange(m)[:, None], tiles].reshape(m * 2, 1, 4, 4)
    (x_in, labels, pos), = net.seen
    torch.testing.assert_close(x_in[:, :1], pick(x_t))
    torch.testing.assert_close(x_in[:, 1:], global_content(x_t, N).repeat_interleave(2, 0))
    assert torch.equal(pos, tiles.reshape(-1))
    torch.testing.assert_close(labels, SCHED.timesteps[t].repeat_interleave(2).float())
    torch.testing.assert_close(loss, pick(eps).abs().mean((1, 2, 3)))       # ε̂ = 0: |ε| per tile


@pytest.mark.parametrize("kind", ["vp", "edm"])
def test_training_gcc_is_the_pool_of_the_whole_noisy_image_of_the_tiles(kind):
    """tiles=None (all tiles): the extra channels are the same for all tiles of an image and equal
    the pooled image rebuilt from the net's own noisy tile inputs."""
    N, m = 2, 3
    net = Recorder()
    tile = VPPrecond(net, SCHED) if kind == "vp" else EDMPrecond(net)
    loss_fn = TileLoss(N, kind=kind, schedule=SCHED if kind == "vp" else None)
    loss = loss_fn(tile, torch.rand(m, 1, 8, 8, generator=_gen(4)) * 2 - 1, generator=_gen(6))
    assert loss.shape == (m * 4,) and torch.isfinite(loss).all()
    (x_in, _, pos), = net.seen
    x_in = x_in.reshape(m, 4, 2, 4, 4)
    assert torch.equal(pos, torch.arange(4).repeat(m))
    extra = x_in[:, :, 1:]
    assert torch.equal(extra, extra[:, :1].expand_as(extra))
    whole = from_tiles(x_in[:, :, :1].contiguous(), N)                    # (m, 1, 8, 8)
    torch.testing.assert_close(extra[:, 0], global_content(whole, N))
    assert not torch.allclose(extra[0, 0], extra[1, 0])                    # per image


# ----------------------------------------------------------------------------------------------
# Positions.

def test_position_embedding_is_a_projection_of_the_one_hot():
    torch.manual_seed(0)
    pe = PositionEmbedding(4, 8)
    k = torch.tensor([2, 0, 3, 1, 2])
    out = pe(k)
    assert out.shape == (5, 8)
    torch.testing.assert_close(out, pe.proj(F.one_hot(k, 4).float()))
    W1, b1 = pe.proj[0].weight, pe.proj[0].bias                          # (8, 4): column k = one-hot k
    torch.testing.assert_close(out, pe.proj[2](F.gelu(W1[:, k].T + b1)))
    e = pe(torch.arange(4))
    assert torch.cdist(e, e)[~torch.eye(4, dtype=torch.bool)].min() > 1e-3
    with pytest.raises(ValueError, match="num_positions=0 is invalid"):
        PositionEmbedding(0, 8)


@pytest.mark.parametrize("preset", ["tiny", "dit-tiny"])
def test_a_position_net_refuses_missing_or_out_of_range_positions(preset):
    net = _method(preset=preset).net
    x_in, t = torch.zeros(2, 2, 4, 4), torch.zeros(2)
    cases = [(None, "positions=None but the net has num_positions=4; allowed: the tile index of "
                    "each input, int64 [2] in [0, 4)"),
             (torch.tensor([0, 4]), "positions=tensor([0, 4]) is invalid; allowed: int64 [2] in [0, 4)"),
             (torch.tensor([-1, 0]), "is invalid; allowed: int64 [2] in [0, 4)")]
    for positions, message in cases:
        with pytest.raises(ValueError) as e:
            net(x_in, t, None, positions=positions)
        assert message in str(e.value) and "\n" not in str(e.value)
    assert net(x_in, t, None, positions=torch.tensor([0, 3])).shape == (2, 1, 4, 4)
    plain = _method(preset=preset, position=False).net
    with pytest.raises(ValueError, match="positions were given but the net has num_positions=None"):
        plain(x_in, t, None, positions=torch.tensor([0, 3]))


# ----------------------------------------------------------------------------------------------
# Chunked evaluation equals the batched one.

@pytest.mark.parametrize("precond", ["vp", "edm"])
def test_chunks_give_the_batched_output_and_each_tile_its_own_call(precond):
    m = _randomise(_method(precond=precond, class_cond=True))
    D = m.denoiser
    x = torch.randn(3, 1, 8, 8, generator=_gen(7)) * 2
    sigma, labels = torch.tensor([0.3, 1.0, 5.0]), torch.tensor([1, 4, 7])
    outs = {}
    with torch.no_grad():
        for c in (1, 2, 3, 4, 7):                # 3 does not divide N² = 4; 7 > N²
            D.chunk = c
            outs[c] = D(x, sigma, class_labels=labels)
        D.chunk = 1
        # the reference: the tile denoiser on each tile, with its position and the pooled image
        T = m.tile_denoiser
        extra = global_content(x, 2) * T.input_scale(sigma.double()).float().reshape(-1, 1, 1, 1)
        tiles = to_tiles(x, 2)
        ref = [T(tiles[:, k], sigma, class_labels=labels, extra=extra, position=torch.full((3,), k))
               for k in range(4)]
        wrong = T(tiles[:, 0], sigma, class_labels=labels, extra=extra, position=torch.full((3,), 1))
    for c, out in outs.items():
        assert torch.allclose(out, outs[4], atol=1e-5), c
    assert torch.allclose(outs[1], from_tiles(torch.stack(ref, 1), 2), atol=1e-5)
    assert (outs[1] - x).abs().max() > 1e-2                              # the net contributes
    assert (wrong - ref[0]).abs().max() > 1e-3                            # the position matters
    assert D.chunk == 1


def test_sample_gives_the_same_images_for_every_chunk_with_guidance():
    m = _randomise(_method(class_cond=True))
    kw = dict(steps=2, class_labels=torch.tensor([0, 5, 9]))
    out = {c: m.sample(3, generator=_gen(8), guidance=2.0, chunk=c, **kw) for c in (1, 2, 3, 4, 5)}
    for c, x in out.items():
        assert x.shape == (3, 1, 8, 8) and torch.allclose(x, out[4], atol=1e-5), c
    assert m.denoiser.chunk == 1                                          # restored
    plain = m.sample(3, generator=_gen(8), guidance=1.0, **kw)
    assert (plain - out[1]).abs().max() > 1e-3                            # guidance does something


# ----------------------------------------------------------------------------------------------
# One tile, no conditioning: EDM's and the VP loss exactly.

def test_one_tile_without_conditioning_is_edm_loss_and_vp_loss_exactly():
    x0 = torch.rand(4, 1, 8, 8, generator=_gen(9)) * 2 - 1
    off = dict(grid=1, gcc=False, position=False)
    edm = _randomise(_method(precond="edm", **off))
    T = edm.tile_denoiser
    with torch.no_grad():
        want = EDMLoss()(T, x0, generator=_gen(10))
        got = TileLoss(1, kind="edm", gcc=False, position=False)(T, x0, generator=_gen(10))
        batch = edm.prepare_batch(x0, None, _gen(0))
        via_method = edm.loss(batch, generator=_gen(10))
    assert torch.equal(got, want) and torch.equal(via_method, want)
    vp = _randomise(_method(precond="vp", loss="l2", **off))
    T = vp.tile_denoiser
    with torch.no_grad():
        want = VPLoss(SCHED, weighting="none")(T, x0, generator=_gen(11))
        got = TileLoss(1, kind="vp", gcc=False, position=False, schedule=SCHED, norm="l2")(
            T, x0, generator=_gen(11))
        via_method = vp.loss(vp.prepare_batch(x0, None, _gen(0)), generator=_gen(11))
    assert torch.equal(got, want) and torch.equal(via_method, want)
    assert want.std() > 0


# ----------------------------------------------------------------------------------------------
# The tiles of a batch and the per-image loss.

@pytest.mark.parametrize("k", [1, 2, 3])
def test_prepare_batch_draws_distinct_tiles_per_image_reproducibly(k):
    m = _method(tiles_per_image=k)
    x = torch.rand(5, 1, 8, 8)
    b = m.prepare_batch(x, None, _gen(11))
    t = b.cond["tiles"]
    assert t.shape == (5, k) and t.dtype == torch.int64 and b.n_images == 5 and b.x0 is x
    assert int(t.min()) >= 0 and int(t.max()) < 4
    assert all(len(set(row)) == k for row in t.tolist())
    assert torch.equal(t, torch.rand((5, 4), generator=_gen(11)).argsort(1)[:, :k])
    assert torch.equal(m.prepare_batch(x, None, _gen(11)).cond["tiles"], t)
    counts = torch.bincount(m.draw_tiles(4000, _gen(12)).reshape(-1), minlength=4)
    assert ((counts - 1000 * k).abs() < 150 * k).all(), counts            # uniform over tiles


def test_all_tiles_come_in_order_without_random_numbers():
    m = _method(tiles_per_image=4)
    g = _gen(13)
    state = g.get_state()
    b = m.prepare_batch(torch.rand(3, 1, 8, 8), None, g)
    assert torch.equal(b.cond["tiles"], torch.arange(4).expand(3, 4))
    assert torch.equal(g.get_state(), state)


@pytest.mark.parametrize("k", [1, 2, 4])
def test_the_loss_of_a_batch_is_the_mean_over_images_of_their_mean_tile_loss(k):
    m = _method(tiles_per_image=k)
    vals = torch.tensor([[0.1, 0.5, -0.3, 0.9], [0.7, -0.2, 0.4, 0.0]])  # tile constants
    x = from_tiles(vals.reshape(2, 4, 1, 1, 1).expand(2, 4, 1, 4, 4).contiguous(), 2)

    def square(D, x0, generator=None, tiles=None, **cond):               # per tile: its mean square
        return to_tiles(x0, 2)[torch.arange(len(x0))[:, None], tiles].pow(2).mean((2, 3, 4)).reshape(-1)
    m.loss_fn = square
    b = m.prepare_batch(x, None, _gen(14))
    tiles = b.cond["tiles"]
    per_image = vals.gather(1, tiles).pow(2).mean(1)
    got = m.loss(b)
    assert got.shape == (2 * k,)
    assert (got.sum() / b.n_images).item() == pytest.approx(per_image.mean().item())
    if k > 1:                                                             # what the division by k prevents
        assert (square(None, x, tiles=tiles).sum() / b.n_images).item() == \
            pytest.approx(k * per_image.mean().item())


# ----------------------------------------------------------------------------------------------
# Training and sampling, both families.

@pytest.mark.parametrize("preset", ["tiny", "dit-tiny"])
@pytest.mark.parametrize("precond", ["vp", "edm"])
def test_trains_a_few_steps_on_digits_and_samples(preset, precond):
    res = train(TrainConfig.flat(method="tiled", preset=preset, precond=precond, grid=2, steps=3,
                                 tiles_per_image=2, **TINY), progress=False)
    assert res.step == 3 and all(math.isfinite(r["loss"]) for r in res.history)
    ema = res.ema
    seen = []
    ema.net.register_forward_pre_hook(lambda mod, args: seen.append(tuple(args[0].shape)))
    x = ema.sample(2, generator=_gen(0), steps=2)
    assert x.shape == (2, 1, 8, 8) and torch.isfinite(x).all()
    assert set(seen) == {(2, 2, 4, 4)}                                    # one 4×4 tile per image per run
    size = (8, 12) if preset == "tiny" else (8, 16)                       # DiT: tile sides multiples of 4
    wide = ema.sample(2, generator=_gen(0), steps=2, size=size)
    assert wide.shape == (2, 1, *size) and torch.isfinite(wide).all()


# ----------------------------------------------------------------------------------------------
# Bad options: one line, naming the option, the value and what is allowed.

@pytest.mark.parametrize("kw,message", [
    (dict(grid=3), "method.grid=3 is invalid; allowed: an N dividing the 8x8 image into tiles whose "
                   "sides are multiples of the net's size_multiple 2: one of [1, 2, 4]"),
    (dict(grid=8), "method.grid=8 is invalid; allowed: an N dividing the 8x8 image into tiles whose "
                   "sides are multiples of the net's size_multiple 2: one of [1, 2, 4]"),
    (dict(preset="dit-tiny", grid=4), "method.grid=4 is invalid; allowed: an N dividing the 8x8 "
                                      "image into tiles whose sides are multiples of the net's "
                                      "size_multiple 4: one of [1, 2]"),
    (dict(chunk=0), "method.chunk=0 is invalid; allowed: an int >= 1"),
    (dict(tiles_per_image=0), "method.tiles_per_image=0 is invalid; allowed: an int in [1, N² = 4]"),
    (dict(tiles_per_image=5), "method.tiles_per_image=5 is invalid; allowed: an int in [1, N² = 4]"),
    (dict(precond="ve"), "method.precond='ve' is invalid; allowed: one of ('vp', 'edm')"),
    (dict(loss="huber"), "method.loss='huber' is invalid; allowed: 'l1' or 'l2'"),
])
def test_bad_options_are_one_line_errors(kw, message):
    with pytest.raises(ValueError) as e:
        _method(**kw)
    assert message in str(e.value) and "\n" not in str(e.value)


def _one_line(fn, message):
    with pytest.raises(ValueError) as e:
        fn()
    assert message in str(e.value) and "\n" not in str(e.value), str(e.value)
    return str(e.value)


def test_bad_arguments_are_one_line_errors():
    m = _method()
    _one_line(lambda: m.sample(1, steps=2, chunk=0), "chunk=0 is invalid; allowed: None or an int >= 1")
    assert m.denoiser.chunk == 1
    _one_line(lambda: m.sample(1, steps=2, sampler="euler"), "sampler='euler' is invalid; allowed: one of")
    m4 = _method(grid=4)
    _one_line(lambda: m4.sample(1, steps=2, size=(8, 10)),
              "size=(8, 10) is invalid; allowed: None or (H, W) that method.grid=4 divides into "
              "tiles whose sides are multiples of the net's size_multiple 2: H and W multiples of 8")
    _one_line(lambda: check_grid(3, 8, 12), "grid=3 is invalid; allowed: an int N >= 1 dividing both "
                                             "sides of the 8x12 image, one of [1, 2, 4]")
    no_extra = net_preset("tiny", in_channels=1, resolution=8, num_positions=4)
    _one_line(lambda: TiledDenoiser(VPPrecond(no_extra, SCHED), 2),
              "gcc=True is invalid; allowed: False, or a tile net with extra_in_channels = "
              "in_channels (the C global-content channels); this net has in_channels=1, "
              "extra_in_channels=0")
    nine = net_preset("tiny", in_channels=1, resolution=8, extra_in_channels=1, num_positions=9)
    _one_line(lambda: TiledDenoiser(EDMPrecond(nine), 2),
              "position=True is invalid; allowed: False, or a tile net with num_positions = N² = 4; "
              "this net has num_positions=9")
    _one_line(lambda: TiledDenoiser(EDMPrecond(nine), 3, chunk=0), "chunk=0 is invalid; allowed: an int >= 1")
    _one_line(lambda: m.denoiser(torch.zeros(1, 1, 8, 8), 1.0, extra=torch.zeros(1, 1, 4, 4)),
              "TiledDenoiser makes the tiles' extra= and position= itself")
    _one_line(lambda: TileLoss(2, kind="ve"), "kind='ve' is invalid; allowed: 'vp' or 'edm'")


def test_the_default_sampler_is_ddim_for_vp_and_heun_for_edm():
    vp, edm = _method(precond="vp"), _method(precond="edm")
    assert sampling_used(vp)["sampler"] == "ddim" and vp.samplers == ("ddim", "ddpm", "heun")
    assert sampling_used(edm)["sampler"] == "heun" and edm.samplers == ("heun", "euler")
    assert sampling_used(vp)["steps"] == 50 and sampling_used(edm)["steps"] == 18


def test_vp_sampling_clips_x0_as_the_release_does_and_edm_does_not():
    seen = {}

    def record(key):
        def cb(d):
            seen[key] = max(seen.get(key, 0.0), float(d["denoised"].abs().max()))
        return cb

    for precond in ("vp", "edm"):
        m = _method(precond=precond)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in m.net.parameters():
                p.add_(0.3 * torch.randn(p.shape, generator=g))
        for clip in (None, True, False):
            m.sample(2, generator=torch.Generator().manual_seed(0), steps=3, clip=clip,
                     callback=record((precond, clip)))
    assert seen["vp", None] <= 1.0 and seen["vp", True] <= 1.0 and seen["vp", False] > 1.0
    assert seen["edm", None] > 1.0 and seen["edm", True] <= 1.0
    with pytest.raises(ValueError, match=r"^clip='yes' is invalid; allowed: None"):
        _method().sample(1, steps=2, clip="yes")
