"""pdlib.nets.UNet: shapes over presets × patch sizes × options, zero init, errors, bf16, gradients."""

import math

import pytest
import torch
import torch.nn.functional as F

from pdlib.nets import UNET_PRESETS, UNet, count_params, unet_preset
from pdlib.nets.layers import AttentionBlock, ResBlock, num_groups, timestep_embedding

TINY = dict(model_channels=16, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(8,),
            head_channels=16)


def randomize_zero_init(net: UNet, seed: int = 0) -> UNet:
    """Give the zero-initialised layers small random weights, so outputs depend on the input."""
    g = torch.Generator().manual_seed(seed)
    layers = [m.out_proj for m in net.modules() if isinstance(m, (ResBlock, AttentionBlock))] + [net.conv_out]
    with torch.no_grad():
        for layer in layers:
            for p in layer.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return net


def inputs(net: UNet, B: int = 2, size: int | None = None, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    size = size or net.resolution
    x = torch.randn(B, net.in_channels + net.extra_in_channels, size, size, generator=g)
    t = torch.rand(B, generator=g) * 999
    return x, t


def valid_patch_sizes(resolution: int, levels: int) -> list[int]:
    return [p for p in (1, 2, 4, 8) if resolution % p == 0 and (resolution // p) % 2 ** (levels - 1) == 0]


# ---------------------------------------------------------------------------------------------- shapes

@pytest.mark.parametrize("name", sorted(UNET_PRESETS))
def test_preset_shapes_over_patch_sizes(name):
    cfg = UNET_PRESETS[name]
    levels = len(cfg["channel_mult"])
    Ps = valid_patch_sizes(cfg["resolution"], levels)
    assert Ps, name
    for P in Ps:
        torch.manual_seed(0)
        net = unet_preset(name, model_channels=8, head_channels=8, patch_size=P).eval()
        x, t = inputs(net, B=1)
        with torch.no_grad():
            y = net(x, t)
        C = net.in_channels * (2 if cfg.get("learn_sigma") else 1)
        assert y.shape == (1, C, cfg["resolution"], cfg["resolution"]), (name, P)
        assert net.grid == cfg["resolution"] // P


@pytest.mark.parametrize("opts, out_ch", [
    (dict(learn_sigma=True), 6),
    (dict(num_classes=10), 3),
    (dict(extra_in_channels=2), 3),
    (dict(extra_in_channels=3, learn_sigma=True, in_channels=1), 2),
    (dict(out_channels=2), 2),
    (dict(dropout=0.1), 3),
    (dict(channel_mult=(1, 1.5, 2)), 3),
    (dict(attention_resolutions=(), mid_attention=False), 3),
    (dict(use_scale_shift_norm=False, resblock_updown=False), 3),
    (dict(pos_emb="sincos"), 3),
    (dict(num_heads=2), 3),
])
@pytest.mark.parametrize("P", [1, 2, 4])
def test_option_shapes(opts, out_ch, P):
    torch.manual_seed(0)
    net = UNet(resolution=16, patch_size=P, **{**TINY, **opts}).train()
    x, t = inputs(net)
    labels = torch.tensor([0, net.num_classes]) if net.num_classes else None
    y = net(x, t, labels)
    assert y.shape == (2, out_ch, 16, 16)
    assert net.out_channels == out_ch
    assert torch.isfinite(y).all()


def test_out_channels_contract():
    assert UNet(**TINY, resolution=16).out_channels == 3
    assert UNet(**TINY, resolution=16, learn_sigma=True).out_channels == 6
    assert UNet(**TINY, resolution=16, in_channels=1, extra_in_channels=2).out_channels == 1


def test_preset_sizes():
    assert count_params(unet_preset("tiny")) < 100_000
    assert 700_000 <= count_params(unet_preset("small")) <= 2_000_000
    for name in ("luhman-p2", "luhman-p4", "luhman-p8"):
        assert 3e6 <= count_params(unet_preset(name)) <= 12e6, name


@pytest.mark.slow
def test_base_preset_size():
    assert 30e6 <= count_params(unet_preset("base")) <= 60e6


def test_count_params_trainable_only():
    net = UNet(**TINY, resolution=16)
    n = count_params(net)
    net.conv_in.weight.requires_grad_(False)
    assert count_params(net, trainable_only=True) == n - net.conv_in.weight.numel()


# ---------------------------------------------------------------------------------------------- structure

def test_fractional_multipliers_round_channels():
    assert UNet(resolution=16, model_channels=16, channel_mult=(1, 1.5, 2)).level_channels == (16, 24, 32)
    # A non-integer product is rounded to a multiple of 8 (16·1.3 = 20.8 -> 24); integer ones are kept.
    assert UNet(resolution=16, model_channels=16, channel_mult=(1, 1.3)).level_channels == (16, 24)
    assert UNet(resolution=16, model_channels=20, channel_mult=(1, 1.3)).level_channels == (20, 26)


@pytest.mark.parametrize("C", [8, 16, 24, 48, 64, 96, 128, 192, 384])
def test_group_count_divides_channels(C):
    g = num_groups(C)
    assert C % g == 0 and 1 <= g <= 32 and C // g >= min(4, C)
    assert num_groups(256) == 32 and num_groups(128) == 32


def test_attention_counted_on_patched_grid():
    # attention_resolutions=(16,) at 32×32: level 1 (16×16) without patching, level 0 with P = 2.
    kw = dict(resolution=32, model_channels=16, channel_mult=(1, 2), num_res_blocks=1,
              attention_resolutions=(16,), head_channels=16, mid_attention=False)
    assert UNet(patch_size=1, **kw).attention_levels == (1,)
    assert UNet(patch_size=2, **kw).attention_levels == (0,)
    assert UNet(patch_size=8, **kw).attention_levels == ()
    n_attn = lambda net: sum(isinstance(m, AttentionBlock) for m in net.modules())
    assert n_attn(UNet(patch_size=2, **kw)) == 1 + 2             # one encoder block, two decoder blocks
    assert n_attn(UNet(patch_size=8, **kw)) == 0
    assert n_attn(UNet(patch_size=8, **{**kw, "mid_attention": True})) == 1


def test_pos_emb_default_and_values():
    assert UNet(**TINY, resolution=16, patch_size=1).pos is None
    net = UNet(**TINY, resolution=16, patch_size=2)
    assert net.pos_emb == "sincos" and net.pos.shape == (1, 16, 8, 8)
    assert UNet(**TINY, resolution=16, patch_size=2, pos_emb="none").pos is None
    assert "pos" not in net.state_dict()                          # fixed, not saved


def test_patching_changes_only_the_ends():
    # P only changes conv_in / conv_out widths: every other parameter has the same shape.
    a = UNet(**{**TINY, "attention_resolutions": ()}, resolution=32, patch_size=1)
    b = UNet(**{**TINY, "attention_resolutions": ()}, resolution=32, patch_size=4)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    diff = {k for k in sa if sa[k].shape != sb[k].shape}
    assert diff == {"conv_in.weight", "conv_out.weight", "conv_out.bias"}
    assert sb["conv_in.weight"].shape[1] == 3 * 16 and sb["conv_out.weight"].shape[0] == 3 * 16


# ---------------------------------------------------------------------------------------------- behaviour

def test_zero_init_output_is_zero():
    net = UNet(**TINY, resolution=16, patch_size=2, num_classes=5, learn_sigma=True)
    x, t = inputs(net)
    assert torch.equal(net(x, t, torch.tensor([1, 5])), torch.zeros(2, 6, 16, 16))


def test_output_depends_on_inputs_noise_and_labels():
    torch.manual_seed(0)
    net = randomize_zero_init(UNet(**TINY, resolution=16, patch_size=2, num_classes=3, extra_in_channels=2)).eval()
    x, t = inputs(net)
    c = torch.tensor([0, 1])
    y = net(x, t, c)
    assert not torch.allclose(y, net(x, t + 100, c))
    assert not torch.allclose(y, net(x, t, torch.tensor([2, 2])))
    x2 = x.clone()
    x2[:, 3:] += 1                                                # extra conditioning channels matter
    assert not torch.allclose(y, net(x2, t, c))
    # Per-sample independence (no batch mixing in eval mode).
    torch.testing.assert_close(net(x[:1], t[:1], c[:1]), y[:1], atol=1e-5, rtol=1e-4)


def test_null_label_and_none_are_the_same():
    torch.manual_seed(0)
    net = randomize_zero_init(UNet(**TINY, resolution=16, num_classes=4)).eval()
    x, t = inputs(net)
    null = torch.full((2,), 4, dtype=torch.long)
    torch.testing.assert_close(net(x, t, None), net(x, t, null))
    assert net.label_embed.num_embeddings == 5


def test_scalar_noise_label_broadcasts():
    torch.manual_seed(0)
    net = randomize_zero_init(UNet(**TINY, resolution=16)).eval()
    x, _ = inputs(net)
    torch.testing.assert_close(net(x, torch.tensor(7.0)), net(x, torch.full((2,), 7.0)))


def test_dropout_active_in_train_only():
    torch.manual_seed(0)
    net = randomize_zero_init(UNet(**TINY, resolution=16, dropout=0.5))
    x, t = inputs(net)
    net.train()
    assert not torch.allclose(net(x, t), net(x, t))
    net.eval()
    assert torch.equal(net(x, t), net(x, t))


def test_smaller_inputs_accepted_for_patch_training():
    # Patch Diffusion trains on crops: any multiple of P·2^(levels-1) works, position embedding follows.
    torch.manual_seed(0)
    net = randomize_zero_init(UNet(**TINY, resolution=32, patch_size=2)).eval()
    x, t = inputs(net, size=16)
    assert net(x, t).shape == (2, 3, 16, 16)
    assert net(*inputs(net, size=48)).shape == (2, 3, 48, 48)


def test_channels_last_input_gives_same_output():
    torch.manual_seed(0)
    net = randomize_zero_init(UNet(**TINY, resolution=16, patch_size=2)).eval()
    x, t = inputs(net)
    y = net(x, t)
    torch.testing.assert_close(net(x.contiguous(memory_format=torch.channels_last), t), y, atol=1e-5, rtol=1e-4)


def test_bf16_autocast_close_to_fp32():
    torch.manual_seed(0)
    net = randomize_zero_init(UNet(**TINY, resolution=16, patch_size=2, num_classes=3)).eval()
    x, t = inputs(net)
    c = torch.tensor([0, 3])
    y32 = net(x, t, c)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y16 = net(x, t, c)
    assert torch.isfinite(y16).all()
    rel = (y16.float() - y32).norm() / y32.norm()
    assert rel < 0.05, rel
    # Backward works under autocast too.
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = net(x, t, c).float().square().mean()
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def test_every_parameter_gets_gradient():
    # Zero init blocks gradients behind the zeroed layers for a step or two; after at most three AdamW
    # steps every parameter (class table rows used included) must have received a non-zero gradient.
    torch.manual_seed(0)
    net = UNet(**TINY, resolution=16, patch_size=2, num_classes=2, learn_sigma=True, extra_in_channels=1,
               dropout=0.1)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    x, t = inputs(net, B=3)
    c = torch.tensor([0, 1, 2])
    target = torch.randn(3, 6, 16, 16, generator=torch.Generator().manual_seed(1))
    seen = {n: False for n, _ in net.named_parameters()}
    for _ in range(3):
        opt.zero_grad()
        F.mse_loss(net(x, t, c), target).backward()
        for n, p in net.named_parameters():
            seen[n] |= bool(p.grad is not None and p.grad.abs().sum() > 0)
        opt.step()
    assert all(seen.values()), [n for n, s in seen.items() if not s]


def test_attention_matches_reference():
    # AttentionBlock = x + proj(softmax(q·kᵀ/√d)·v) per head, q/k/v from a 1×1 conv of GN(x).
    torch.manual_seed(0)
    blk = AttentionBlock(16, num_heads=2)
    torch.nn.init.normal_(blk.out_proj.weight)
    x = torch.randn(2, 16, 3, 4)
    qkv = blk.qkv(blk.norm(x)).reshape(2, 3, 2, 8, 12)          # (B, 3, heads, d, L)
    q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]                    # (B, heads, d, L)
    w = torch.softmax(torch.einsum("bhdi,bhdj->bhij", q, k) / math.sqrt(8), dim=-1)
    h = torch.einsum("bhij,bhdj->bhdi", w, v).reshape(2, 16, 3, 4)
    torch.testing.assert_close(blk(x), x + blk.out_proj(h), atol=1e-5, rtol=1e-4)


def test_timestep_embedding_closed_form():
    e = timestep_embedding(torch.tensor([0.0, 2.0]), 8)
    torch.testing.assert_close(e[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    omega = 10000.0 ** (-torch.arange(4) / 4)
    torch.testing.assert_close(e[1], torch.cat([(2 * omega).cos(), (2 * omega).sin()]))
    assert timestep_embedding(torch.zeros(3), 7).shape == (3, 7)


# ---------------------------------------------------------------------------------------------- errors

@pytest.mark.parametrize("kwargs, match", [
    (dict(resolution=32, patch_size=3), r"patch_size=3 does not divide resolution=32; allowed: divisors \[1, 2, 4, 8, 16\]"),
    (dict(resolution=32, patch_size=16, channel_mult=(1, 2, 2)), r"patched resolution .*=2 is not divisible by 2\^\(len\(channel_mult\)-1\)=4"),
    (dict(resolution=20, channel_mult=(1, 2, 2, 2)), r"patched resolution .*=20 is not divisible by .*=8 .*allowed: no patch size"),
    (dict(patch_size=0), r"patch_size=0 is invalid"),
    (dict(channel_mult=()), r"channel_mult=\(\) is invalid"),
    (dict(channel_mult=(1, 0)), r"channel_mult=\(1, 0\) is invalid"),
    (dict(dropout=1.0), r"dropout=1.0 is invalid"),
    (dict(num_classes=0), r"num_classes=0 is invalid"),
    (dict(extra_in_channels=-1), r"extra_in_channels=-1 is invalid"),
    (dict(pos_emb="learned"), r"pos_emb='learned' is invalid; allowed: None, 'none', 'sincos'"),
    (dict(num_heads=3, attention_resolutions=(16,)), r"num_heads=3 does not divide the attention width 32"),
    (dict(model_channels=18, channel_mult=(1,), patch_size=2), r"pos_emb='sincos' needs first-level channels divisible by 4"),
])
def test_constructor_errors(kwargs, match):
    base = dict(resolution=32, model_channels=16, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=())
    with pytest.raises(ValueError, match=match):
        UNet(**{**base, **kwargs})


def test_forward_errors():
    net = UNet(**TINY, resolution=16, patch_size=2)
    x, t = inputs(net)
    with pytest.raises(ValueError, match=r"x_in has 4 channels; allowed: in_channels \+ extra_in_channels = 3 \+ 0 = 3"):
        net(torch.zeros(2, 4, 16, 16), t)
    with pytest.raises(ValueError, match=r"x_in has spatial size 18x16; allowed: H and W multiples of .* = 4"):
        net(torch.zeros(2, 3, 18, 16), t)
    with pytest.raises(ValueError, match=r"x_in has shape \(3, 16, 16\)"):
        net(x[0], t)
    with pytest.raises(ValueError, match=r"class_labels were given but the net has num_classes=None"):
        net(x, t, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"noise_labels has shape \(3,\)"):
        net(x, torch.zeros(3))
    cond = UNet(**TINY, resolution=16, num_classes=3)
    with pytest.raises(ValueError, match=r"class_labels has shape \(2,\) and dtype torch.float32"):
        cond(x, t, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"class_labels has shape \(3,\)"):
        cond(x, t, torch.tensor([0, 1, 2]))


def test_preset_errors():
    with pytest.raises(ValueError, match=r"name='huge' is not a U-Net preset; allowed: \["):
        unet_preset("huge")
    with pytest.raises(ValueError, match=r"overrides \['widht'\] are not UNet arguments"):
        unet_preset("tiny", widht=3)
