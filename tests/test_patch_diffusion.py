"""Patch Diffusion (Wang et al. 2023) end to end: the patch-size draw (χ² against the release's
probabilities), crops and their coordinate channels, the batch multiplier (R/s)², the per-image
loss, the coordinate ablation, option errors, larger canvases, the progressive schedule, and
training on both net families."""
import math
import re

import pytest
import torch

from pdlib.methods import build_method
from pdlib.methods.patch_diffusion import (batch_multiplier, default_patch_sizes, draw_patch_size,
                                           patch_probabilities, progressive_patch_size)
from pdlib.patching import coord_grid, random_crops
from pdlib.train import TrainConfig, train

TINY = dict(dataset="digits", resolution=8, batch_size=16, log_every=1, sample_every=0,
            sample_n=4, sample_steps=2, ckpt_every=0, warmup_steps=0, lr=2e-3, out_dir=None)


def _cfg(**kw):
    base = dict(method="patch_diffusion", preset="tiny", dataset="digits", img_channels=1,
                resolution=8, num_classes=10)
    return TrainConfig.flat(**{**base, **kw})


def _method(**kw):
    return build_method(_cfg(**kw))


def test_defaults_are_the_papers():
    m = _method()
    assert m.name == "patch_diffusion" and type(m).__name__ == "PatchDiffusionMethod"
    assert m.patch_sizes == (2, 4, 8) and m.cfg.method.patch_sizes == (2, 4, 8)   # saved resolved
    assert m.patch_probs == pytest.approx((0.2, 0.3, 0.5))          # (1−p)·2/5, (1−p)·3/5, p
    assert patch_probabilities((16, 32, 64), 64, 0.25) == pytest.approx((0.3, 0.45, 0.25))
    assert m.net.in_channels == 1 and m.net.extra_in_channels == 2 and m.net.out_channels == 1
    assert m.label_dropout == 0.0 and _method(class_cond=True).label_dropout == pytest.approx(0.1)
    assert default_patch_sizes(64) == (16, 32, 64) and default_patch_sizes(6) == (3, 6)
    # the net decides which of R/4, R/2, R it accepts: DiT-tiny has P = 4 (no 2-pixel patches);
    # the smaller size left then gets all of 1 − p
    d = _method(preset="dit-tiny")
    assert d.patch_sizes == (4, 8) and d.patch_probs == pytest.approx((0.5, 0.5))
    assert d.net.extra_in_channels == 2


# ----------------------------------------------------------------------------------------------
# The patch-size draw.

CHI2_2DOF_999 = 13.816          # the 0.999 quantile of χ² with 2 degrees of freedom


def _chi2(counts, probs, n):
    return sum((c - n * p) ** 2 / (n * p) for c, p in zip(counts, probs))


@pytest.mark.parametrize("real_p", [0.5, 0.25])
def test_the_patch_size_draw_has_the_papers_probabilities(real_p):
    """20 000 draws with a fixed generator through the method's own draw: χ² against
    ((1−p)·2/5, (1−p)·3/5, p) below its 0.999 quantile. The test has the power to see a swap:
    with the R/4 and R/2 probabilities exchanged the expected χ² is N·Σ(p−q)²/q ≈ 1 670
    (p = 0.5: 0.2 ↔ 0.3) and 2 500 (p = 0.25: 0.3 ↔ 0.45), > 100× the threshold (asserted below)."""
    m = _method(real_p=real_p)
    g = torch.Generator().manual_seed(1234)
    n = 20_000
    draws = [m.step_patch_size(g) for _ in range(n)]
    counts = [draws.count(s) for s in m.patch_sizes]
    want = ((1 - real_p) * 2 / 5, (1 - real_p) * 3 / 5, real_p)
    assert m.patch_probs == pytest.approx(want)
    assert _chi2(counts, want, n) < CHI2_2DOF_999, counts
    swapped = (want[1], want[0], want[2])
    assert _chi2(counts, swapped, n) > 100 * CHI2_2DOF_999, counts
    # reproducible: the same generator seed gives the same sizes
    g2 = torch.Generator().manual_seed(1234)
    assert [m.step_patch_size(g2) for _ in range(200)] == draws[:200]


def test_explicit_probabilities_and_zero_probability_sizes():
    g = torch.Generator().manual_seed(0)
    assert {draw_patch_size((2, 4, 8), (0.0, 1.0, 0.0), g) for _ in range(200)} == {4}
    m = _method(patch_sizes=(2, 4, 8), patch_probs=(0.5, 0.0, 0.5))
    draws = {m.step_patch_size(g) for _ in range(200)}
    assert draws == {2, 8}
    assert {_method(real_p=1.0).step_patch_size(g) for _ in range(100)} == {8}
    assert {_method(real_p=0.0).step_patch_size(g) for _ in range(100)} == {2, 4}


def test_the_progressive_schedule_goes_from_small_to_large_by_training_fraction():
    sizes, probs = (2, 4, 8), (0.2, 0.3, 0.5)
    got = [progressive_patch_size(sizes, probs, f) for f in (0, 0.19, 0.2, 0.49, 0.5, 0.99, 1.0)]
    assert got == [2, 2, 4, 4, 8, 8, 8]
    m = _method(progressive=True)
    with pytest.raises(ValueError, match=r"method\.progressive=True needs the training progress.*begin_step"):
        m.prepare_batch(torch.zeros(2, 1, 8, 8), None, torch.Generator().manual_seed(0))
    m.begin_step(30, 100)                          # 30 % of the run: R/2
    assert m.prepare_batch(torch.zeros(2, 1, 8, 8), None).x0.shape[-1] == 4
    m.begin_step(99, 100)
    assert m.prepare_batch(torch.zeros(2, 1, 8, 8), None).x0.shape[-1] == 8


def test_begin_step_fixes_one_patch_size_for_all_micro_batches_of_a_step():
    """With the step's generator (a loop's begin_step hook), every micro-batch of the step, whatever
    its own generator, gets the step's size; the sizes of the steps follow the draw."""
    m = _method()
    x = torch.rand(2, 1, 8, 8)
    sizes = []
    for step in range(60):
        m.begin_step(step, 60, torch.Generator().manual_seed(1000 + step))
        got = {m.prepare_batch(x, None, torch.Generator().manual_seed(k)).x0.shape[-1] for k in range(4)}
        assert len(got) == 1
        sizes.append(got.pop())
    want = [draw_patch_size(m.patch_sizes, m.patch_probs, torch.Generator().manual_seed(1000 + step))
            for step in range(60)]
    assert sizes == want and set(sizes) == {2, 4, 8}


# ----------------------------------------------------------------------------------------------
# Crops and coordinates.

def test_coord_grid_is_the_papers_normalisation():
    R = 32
    g = coord_grid(R, R, R)                                            # (2, R, R)
    assert g.shape == (2, R, R)
    j = torch.arange(R, dtype=torch.float32)
    torch.testing.assert_close(g[0, 5], (j / (R - 1) - 0.5) * 2)       # x = the column
    torch.testing.assert_close(g[1, :, 7], (j / (R - 1) - 0.5) * 2)    # y = the row
    assert g.min() == -1 and g.max() == 1
    big = coord_grid(R, 2 * R, 2 * R)                                  # a larger canvas continues it
    torch.testing.assert_close(big[:, :R, :R], g)
    assert big.max().item() == pytest.approx((2 * R - 1) / (R - 1) * 2 - 1)
    shifted = coord_grid(R, R, R, top=-3, left=5)
    torch.testing.assert_close(shifted[:, 3:, :R - 5], g[:, :R - 3, 5:])


def test_the_coordinates_of_a_crop_are_the_crop_of_the_full_grid():
    R, s = 16, 4
    images = torch.randn(3, 1, R, R)
    full = coord_grid(R, R, R).expand(3, 2, R, R)
    crops, top, left = random_crops(torch.cat([images, full], 1), s, n=5,
                                    generator=torch.Generator().manual_seed(0))
    assert crops.shape == (15, 3, s, s) and top.max() <= R - s and left.max() <= R - s
    torch.testing.assert_close(crops[:, 1:], coord_grid(R, s, s, top, left))
    for i in range(15):                                    # crop i comes from image i // 5
        t, l_ = int(top[i]), int(left[i])
        torch.testing.assert_close(crops[i, :1], images[i // 5, :, t:t + s, l_:l_ + s])


@pytest.mark.parametrize("channel", [0, 1], ids=["x", "y"])
def test_prepare_batch_gives_each_crop_its_own_coordinates(channel):
    """Images whose pixels hold their own x (or y) coordinate: every crop equals its coordinate
    channel, so crops and coordinates can only have been cut at the same place."""
    m = _method()
    images = coord_grid(8, 8, 8)[channel].expand(4, 1, 8, 8).contiguous()
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(20):
        b = m.prepare_batch(images, None, g)
        seen.add(b.x0.shape[-1])
        torch.testing.assert_close(b.x0[:, 0], b.cond["extra"][:, channel])
    assert seen == {2, 4, 8}


def test_a_batch_has_one_patch_size_and_is_reproducible():
    m = _method(class_cond=True)
    x, y = torch.rand(6, 1, 8, 8) * 2 - 1, torch.arange(6)
    b1 = m.prepare_batch(x, y, torch.Generator().manual_seed(7))
    b2 = m.prepare_batch(x, y, torch.Generator().manual_seed(7))
    torch.testing.assert_close(b1.x0, b2.x0)
    torch.testing.assert_close(b1.cond["extra"], b2.cond["extra"])
    assert torch.equal(b1.cond["class_labels"], b2.cond["class_labels"])
    k = len(b1.x0) // 6
    assert b1.n_images == 6 and len(b1.x0) == 6 * k and b1.x0.shape[-1] == b1.x0.shape[-2]
    # each crop carries its image's label (dropped or not: the drop is per image)
    labels = b1.cond["class_labels"].reshape(6, k)
    assert (labels == labels[:, :1]).all()


# ----------------------------------------------------------------------------------------------
# The batch multiplier.

def test_the_batch_multiplier_is_r_over_s_squared_capped():
    assert [batch_multiplier(32, s, 16) for s in (8, 16, 32)] == [16, 4, 1]   # 8 px at R = 32: the release's KeyError
    assert [batch_multiplier(64, s, 16) for s in (16, 32, 64)] == [16, 4, 1]
    assert [batch_multiplier(256, s, 16) for s in (64, 128, 256)] == [16, 4, 1]   # release: ×8 for 64 px
    assert [batch_multiplier(256, s, 8) for s in (64, 128, 256)] == [8, 4, 1]     # the cap
    assert batch_multiplier(32, 8, 1) == 1 and batch_multiplier(256, 16, 64) == 64
    with pytest.raises(ValueError, match=r"patch_size=12 is invalid; allowed: a divisor of the resolution 32"):
        batch_multiplier(32, 12, 16)


@pytest.mark.parametrize("cap,want", [(16, {8: 16, 16: 4, 32: 1}), (4, {8: 4, 16: 4, 32: 1})])
def test_at_r32_a_step_holds_k_crops_per_batch_image(cap, want):
    """distinct_images (default): the step draws k times the images (step_multiplier), one crop
    each; distinct_images=False: k crops of each of the step's images. Both: k·m crops."""
    x = torch.rand(3, 1, 32, 32)
    for distinct in (True, False):
        m = _method(resolution=32, max_batch_multiplier=cap, distinct_images=distinct, real_p=0.0)
        assert m.patch_sizes == (8, 16, 32)
        for s, k in want.items():
            m.step_size = s                                          # what begin_step fixes
            mult = m.step_multiplier()
            assert mult == (k if distinct else 1)
            images = x.repeat(mult, 1, 1, 1)                         # the loop gives mult·m images
            b = m.prepare_batch(images, None, torch.Generator().manual_seed(0))
            assert b.x0.shape == (3 * k, 1, s, s) and b.cond["extra"].shape == (3 * k, 2, s, s)
            assert b.n_images == 3 * mult                            # images it represents


def test_the_loop_gives_small_patch_steps_k_times_the_images_and_counts_them():
    """real_p = 0 at R = 8 (sizes 2, 4 and 8 with probabilities 0.4, 0.6, 0): each step sees
    16 or 4 times batch_size images, which the loop hands to prepare_batch, counts in kimg and
    images/s, and which distinct_images=False does not draw."""
    from pdlib.methods.patch_diffusion import PatchDiffusionMethod
    seen, original = [], PatchDiffusionMethod.prepare_batch

    def spy(self, images, labels, generator=None, patch_size=None):
        batch = original(self, images, labels, generator, patch_size)
        seen.append((len(images), batch.x0.shape[-1], batch.n_images))
        return batch

    PatchDiffusionMethod.prepare_batch = spy
    try:
        for distinct in (True, False):
            seen.clear()
            res = train(TrainConfig.flat(method="patch_diffusion", preset="tiny", steps=5,
                                         real_p=0.0, distinct_images=distinct, **TINY),
                        progress=False)
            k = {2: 16, 4: 4}
            assert {s for _, s, _ in seen} <= {2, 4} and len(seen) == 5
            want = [16 * (k[s] if distinct else 1) for _, s, _ in seen]
            assert [n for n, _, _ in seen] == want
            assert [n for _, _, n in seen] == want
            kimg = [r["kimg"] for r in res.history]
            assert kimg == pytest.approx([sum(want[:i + 1]) / 1000 for i in range(5)])
    finally:
        PatchDiffusionMethod.prepare_batch = original


def test_extra_images_are_reproducible_by_step_and_differ_between_steps():
    from pdlib.train import BatchStream
    images = torch.arange(100.0).reshape(100, 1, 1, 1)
    s = BatchStream(images, torch.arange(100), batch_size=10, seed=3)
    a, la = s.extra(7, 30)
    b, lb = s.extra(7, 30)
    assert torch.equal(a, b) and torch.equal(la, lb) and len(a) == 30
    assert len(set(a.flatten().tolist())) == 30                     # without replacement
    assert not torch.equal(a, s.extra(8, 30)[0])
    assert len(s.extra(0, 250)[0]) == 250                           # more than N: with replacement


# ----------------------------------------------------------------------------------------------
# The loss per image.

def _square_loss(D, x0, generator=None, **cond):
    """A deterministic per-item loss: the mean square of the item's pixels."""
    return x0.pow(2).mean((1, 2, 3))


def test_the_loss_is_normalised_per_image():
    """One constant image: its loss is c² as a whole image and as 4 crops of R/2 (normalised),
    where an un-normalised sum over the 4 crops would give 4·c²; two images of different constants
    weigh one each, whatever the patch size."""
    m = _method(distinct_images=False)                             # 4 crops of one image
    m.loss_fn = _square_loss
    c = 0.6
    img = torch.full((1, 1, 8, 8), c)
    g = torch.Generator().manual_seed(0)
    whole = m.prepare_batch(img, None, g, patch_size=8)
    quarters = m.prepare_batch(img, None, g, patch_size=4)
    assert len(whole.x0) == 1 and len(quarters.x0) == 4 and quarters.n_images == 1
    per_image = {b.x0.shape[-1]: (m.loss(b).sum() / b.n_images).item() for b in (whole, quarters)}
    assert per_image == pytest.approx({8: c * c, 4: c * c})
    unnormalised = (_square_loss(None, quarters.x0).sum() / quarters.n_images).item()
    assert unnormalised == pytest.approx(4 * c * c)                    # what the division prevents
    two = torch.cat([img, torch.full((1, 1, 8, 8), -0.2)])
    for s in (2, 4, 8):
        b = m.prepare_batch(two, None, g, patch_size=s)
        assert (m.loss(b).sum() / b.n_images).item() == pytest.approx((c * c + 0.04) / 2)


def test_one_full_size_patch_without_coordinates_is_edm_exactly():
    """patch_sizes=(R,) and coords=False: the same net, batches and random numbers as EDM, so
    two training steps give the same losses and weights."""
    kw = dict(preset="tiny", steps=2, grad_clip=None, dropout=0.0, **TINY)
    edm = train(TrainConfig.flat(method="edm", **kw), progress=False)
    pd = train(TrainConfig.flat(method="patch_diffusion", patch_sizes=(8,), coords=False, **kw),
               progress=False)
    assert [r["loss"] for r in pd.history] == [r["loss"] for r in edm.history]
    for k, v in edm.method.state_dict().items():
        assert torch.equal(pd.method.state_dict()[k], v), k


# ----------------------------------------------------------------------------------------------
# The coordinate ablation.

@pytest.mark.parametrize("preset", ["tiny", "dit-tiny"])
def test_coords_off_gives_a_c_input_net_and_no_extra(preset):
    on, off = _method(preset=preset), _method(preset=preset, coords=False)
    assert on.net.in_channels + on.net.extra_in_channels == 3
    assert off.net.in_channels + off.net.extra_in_channels == 1
    b = off.prepare_batch(torch.rand(2, 1, 8, 8), None, torch.Generator().manual_seed(0))
    assert "extra" not in b.cond and torch.isfinite(off.loss(b)).all()
    assert off.sample(2, generator=torch.Generator().manual_seed(0), steps=2, resolution=16).shape == (2, 1, 16, 16)


# ----------------------------------------------------------------------------------------------
# Bad options: one line, naming the option, the value and what is allowed.

@pytest.mark.parametrize("kw,message", [
    (dict(real_p=1.5), "method.real_p=1.5 is invalid; allowed: a number in [0, 1]"),
    (dict(real_p=-0.1), "method.real_p=-0.1 is invalid; allowed: a number in [0, 1]"),
    (dict(patch_sizes=(3, 8)), "method.patch_sizes=(3, 8) is invalid; allowed: divisors of "
                               "data.resolution=8 (at most 8): [1, 2, 4, 8]"),
    (dict(patch_sizes=(4, 16)), "method.patch_sizes=(4, 16) is invalid; allowed: divisors of "
                                "data.resolution=8 (at most 8)"),
    (dict(patch_sizes=(8, 4)), "method.patch_sizes=(8, 4) is invalid; allowed: None or a tuple of "
                               "increasing ints >= 1"),
    (dict(patch_sizes=(2, 4), ), "method.patch_sizes=(2, 4) is invalid; allowed: sizes ending in "
                                 "data.resolution=8 while method.patch_probs is None"),
    (dict(patch_sizes=(1, 2, 4, 8)), "method.patch_probs=None is invalid; allowed: 4 probabilities "
                                     "summing to 1 for the patch_sizes (1, 2, 4, 8)"),
    (dict(patch_sizes=(4, 8), patch_probs=(0.5, 0.6)),
     "method.patch_probs=(0.5, 0.6) is invalid; allowed: None or 2 numbers >= 0 (one per patch "
     "size (4, 8)) summing to 1"),
    (dict(patch_sizes=(2, 4, 8), patch_probs=(0.5, 0.5)),
     "method.patch_probs=(0.5, 0.5) is invalid; allowed: None or 3 numbers >= 0 (one per patch "
     "size (2, 4, 8)) summing to 1"),
    (dict(patch_probs=(0.2, 0.3, 0.5)), "method.patch_probs=(0.2, 0.3, 0.5) is invalid; allowed: "
                                        "None unless method.patch_sizes is given"),
    (dict(max_batch_multiplier=0), "method.max_batch_multiplier=0 is invalid; allowed: an int >= 1"),
    (dict(coords=1), "method.coords=1 has the wrong type; allowed: bool"),    # dacite, first
    (dict(preset="dit-tiny", patch_sizes=(2, 8)),
     "method.patch_sizes=(2, 8) is invalid; allowed: sizes net 'dit-tiny' accepts: divisors of 8 "
     "that are multiples of its size_multiple 4, [4, 8]"),
])
def test_bad_options_are_one_line_errors(kw, message):
    with pytest.raises(ValueError) as e:
        _method(**kw)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_bad_sampling_arguments_are_one_line_errors():
    m = _method(preset="dit-tiny")                                   # size_multiple 4
    with pytest.raises(ValueError, match=re.escape("resolution=10 is invalid; allowed: None (= 8) "
                                                   "or a canvas side that is a multiple of the net's "
                                                   "size_multiple 4")):
        m.sample(1, steps=2, resolution=10)
    with pytest.raises(ValueError, match=re.escape("offset=(1,) is invalid; allowed: (rows, columns)")):
        m.sample(1, steps=2, offset=(1,))
    with pytest.raises(ValueError, match=re.escape("patch_size=3 is invalid; allowed: one of "
                                                   "method.patch_sizes (4, 8)")):
        m.prepare_batch(torch.zeros(1, 1, 8, 8), None, patch_size=3)


# ----------------------------------------------------------------------------------------------
# Sampling: the full grid, larger canvases, shifted grids.

def _inputs_seen(m):
    """Record every x_in the net sees."""
    seen = []
    m.net.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach().clone()))
    return seen


@pytest.mark.parametrize("preset", ["tiny", "dit-tiny"])
def test_sampling_uses_the_full_grid_and_a_larger_canvas_continues_it(preset):
    m = _method(preset=preset, class_cond=True)
    m.denoiser.eval()
    seen = _inputs_seen(m)
    out = m.sample(3, generator=torch.Generator().manual_seed(0), steps=2)
    assert out.shape == (3, 1, 8, 8) and seen[0].shape == (3, 3, 8, 8)
    torch.testing.assert_close(seen[0][:, 1:], coord_grid(8, 8, 8).expand(3, 2, 8, 8))
    seen.clear()
    big = m.sample(2, generator=torch.Generator().manual_seed(0), steps=2, resolution=16, guidance=2.0)
    assert big.shape == (2, 1, 16, 16) and torch.isfinite(big).all()
    assert seen[0].shape == (4, 3, 16, 16)                           # CFG: conditional + unconditional
    torch.testing.assert_close(seen[0][:, 1:], coord_grid(8, 16, 16).expand(4, 2, 16, 16))
    assert seen[0][:, 1:].max() > 1                                  # beyond the training grid
    seen.clear()
    m.sample(1, generator=torch.Generator().manual_seed(0), steps=2, offset=(-4, 4))
    torch.testing.assert_close(seen[0][0, 1:], coord_grid(8, 8, 8, top=-4, left=4))


def test_the_default_canvas_samples_what_edm_samples_with_the_same_net():
    """EDMMethod.sample and the canvas path draw the same noise: with coords off and the same
    weights, Patch Diffusion's samples are EDM's."""
    pd = _method(coords=False)
    edm = build_method(TrainConfig.flat(method="edm", preset="tiny", dataset="digits", img_channels=1,
                                        resolution=8))
    edm.load_state_dict(pd.state_dict())
    for m in (pd, edm):
        m.denoiser.eval()
    a = pd.sample(2, generator=torch.Generator().manual_seed(3), steps=3)
    b = edm.sample(2, generator=torch.Generator().manual_seed(3), steps=3)
    assert torch.equal(a, b)


# ----------------------------------------------------------------------------------------------
# Training on both families (tests/test_methods.py runs the defaults too).

@pytest.mark.parametrize("preset", ["tiny", "dit-tiny"])
def test_trains_a_few_steps_on_digits(preset):
    res = train(TrainConfig.flat(method="patch_diffusion", preset=preset, steps=3, class_cond=True,
                                 max_batch_multiplier=4, **TINY), progress=False)
    assert res.step == 3 and all(math.isfinite(r["loss"]) for r in res.history)
    assert res.config.method.patch_sizes == ((2, 4, 8) if preset == "tiny" else (4, 8))
    assert res.ema.sample(2, generator=torch.Generator().manual_seed(0), steps=2).shape == (2, 1, 8, 8)


def test_progressive_needs_the_training_progress_outside_the_loop():
    # pdlib.train gives it (test below); a bare prepare_batch without begin_step cannot know it
    m = _method(progressive=True)
    with pytest.raises(ValueError, match=r"method\.progressive=True needs the training progress"):
        m.prepare_batch(torch.zeros(2, 1, 8, 8), None, torch.Generator().manual_seed(0))


def test_the_training_loop_fixes_one_patch_size_per_step_and_drives_the_progressive_schedule(tmp_path):
    # pdlib.train calls begin_step before each step: with gradient accumulation, every micro-batch
    # of a step gets the same size, and progressive=True runs (it needs the training fraction)
    from pdlib.train import TrainConfig, train

    seen = []
    from pdlib.methods.patch_diffusion import PatchDiffusionMethod
    original = PatchDiffusionMethod.prepare_batch

    def spy(self, images, labels, generator=None, patch_size=None):
        batch = original(self, images, labels, generator, patch_size)
        seen.append((self.progress, batch.x0.shape[-1]))
        return batch

    PatchDiffusionMethod.prepare_batch = spy
    try:
        for progressive in (False, True):
            seen.clear()
            cfg = TrainConfig.flat(method="patch_diffusion", dataset="digits", resolution=8,
                                   preset="tiny", batch_size=8, grad_accum=2, steps=6,
                                   progressive=progressive, log_every=3, sample_every=0,
                                   ckpt_every=0, out_dir=None)
            train(cfg, progress=False)
            sizes = [s for _, s in seen]
            assert len(sizes) == 12
            assert all(sizes[2 * i] == sizes[2 * i + 1] for i in range(6)), sizes
            if progressive:                    # smallest first, never shrinking
                assert sizes == sorted(sizes) and sizes[0] < sizes[-1], sizes
    finally:
        PatchDiffusionMethod.prepare_batch = original
