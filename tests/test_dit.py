"""pdlib.nets.DiT: shapes over presets × patch sizes × options, adaLN-Zero init, conditioning, the paper's
parameter counts, gradients, the net_preset registry, errors."""

import inspect

import pytest
import torch

from pdlib.nets import (DIT_PAPER_CONFIG, DIT_PAPER_PARAMS, DIT_PRESETS, NET_PRESETS, UNET_PRESETS, DiT,
                        UNet, count_params, dit_preset, net_preset, preset_family, unet_preset)
from pdlib.nets.dit import DiTBlock, modulate
from pdlib.patching import sincos_2d

TINY = dict(hidden_size=32, depth=2, num_heads=2)
COMMON = ("in_channels", "resolution", "num_classes", "learn_sigma", "extra_in_channels", "dropout",
          "out_channels", "patch_size")


def zero_layers(net: DiT) -> list[torch.nn.Linear]:
    return [b.adaLN_modulation[-1] for b in net.blocks] + \
           [net.final_layer.adaLN_modulation[-1], net.final_layer.linear]


def randomize_zero_init(net: DiT, seed: int = 0, std: float = 0.05) -> DiT:
    """Give the zero-initialised layers small random weights, so outputs depend on the inputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in zero_layers(net):
            for p in layer.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return net


def inputs(net: DiT, B: int = 2, H: int | None = None, W: int | None = None, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    H = H or net.resolution
    W = W or H
    x = torch.randn(B, net.in_channels + net.extra_in_channels, H, W, generator=g)
    t = torch.rand(B, generator=g) * 999
    return x, t


# ---------------------------------------------------------------------------------------------- shapes

@pytest.mark.parametrize("name", sorted(DIT_PRESETS))
def test_preset_shapes_over_patch_sizes(name):
    """Every preset (shrunk to a tiny width and depth) maps [B, C, H, W] -> [B, out, H, W] for P = 2, 4, 8."""
    for P in (2, 4, 8):
        torch.manual_seed(0)
        net = randomize_zero_init(dit_preset(name, **TINY, patch_size=P)).eval()
        x, t = inputs(net, B=1)
        with torch.no_grad():
            y = net(x, t)
        assert y.shape == (1, 3, 32, 32), (name, P)
        assert net.grid == 32 // P and net.pos_embed.shape == (1, (32 // P) ** 2, 32)
        assert torch.isfinite(y).all()


@pytest.mark.parametrize("opts, out_ch", [
    (dict(), 3),
    (dict(learn_sigma=True), 6),
    (dict(num_classes=10), 3),
    (dict(extra_in_channels=2), 3),
    (dict(extra_in_channels=3, learn_sigma=True, in_channels=1), 2),
    (dict(out_channels=2), 2),
    (dict(out_channels=2, learn_sigma=True), 4),
    (dict(dropout=0.1, num_classes=3), 3),
    (dict(mlp_ratio=2.0, frequency_embedding_size=64), 3),
])
@pytest.mark.parametrize("P", [1, 2, 4])
def test_option_shapes(opts, out_ch, P):
    torch.manual_seed(0)
    net = randomize_zero_init(DiT(resolution=16, patch_size=P, **{**TINY, **opts})).train()
    x, t = inputs(net)
    labels = torch.tensor([0, net.num_classes]) if net.num_classes else None
    y = net(x, t, labels)
    assert y.shape == (2, out_ch, 16, 16)
    assert net.out_channels == out_ch
    assert torch.isfinite(y).all()
    if net.num_classes:                                          # None = every label null
        assert net(x, t).shape == y.shape


@pytest.mark.parametrize("P, H, W", [(2, 8, 8), (2, 16, 24), (4, 12, 32), (4, 64, 64), (8, 8, 16)])
def test_crop_and_non_square_inputs(P, H, W):
    """Inputs of another size than `resolution` (sides divisible by P) get positions for their own grid."""
    torch.manual_seed(0)
    net = randomize_zero_init(DiT(resolution=32, patch_size=P, extra_in_channels=2, **TINY)).eval()
    x, t = inputs(net, H=H, W=W)
    with torch.no_grad():
        y = net(x, t)
    assert y.shape == (2, 3, H, W)
    assert torch.isfinite(y).all()


def test_pos_embed_is_fixed_sincos_buffer():
    net = DiT(resolution=16, patch_size=2, **TINY)
    names = {n for n, _ in net.named_parameters()}
    assert not any("pos" in n for n in names)
    assert "pos_embed" in dict(net.named_buffers())
    assert "pos_embed" not in net.state_dict()                   # recomputed, never checkpointed
    want = sincos_2d(32, 8, 8).flatten(1).T                     # (T, D), tokens row-major
    assert torch.equal(net.pos_embed[0], want)
    assert torch.equal(net._pos_embed(3, 5)[0], sincos_2d(32, 3, 5).flatten(1).T)


def test_unpatchify_token_layout():
    """Output token (r, c) fills pixels [rP:(r+1)P, cP:(c+1)P]: a one-hot final bias is one pixel per patch."""
    P, C = 4, 2
    net = DiT(in_channels=C, resolution=16, patch_size=P, **TINY)
    with torch.no_grad():
        net.final_layer.linear.bias[1 * P * P + 2 * P + 3] = 1.0   # channel 1, row 2, column 3 inside a patch
    y = net(*inputs(net, B=1))
    want = torch.zeros(1, C, 16, 16)
    want[0, 1, 2::P, 3::P] = 1.0
    assert torch.equal(y, want)


# ---------------------------------------------------------------------------------------------- init

@pytest.mark.parametrize("opts", [dict(), dict(num_classes=10, learn_sigma=True, extra_in_channels=2)])
def test_fresh_dit_outputs_zeros(opts):
    torch.manual_seed(0)
    net = DiT(resolution=16, patch_size=2, **TINY, **opts)
    x, t = inputs(net)
    labels = torch.tensor([3, 10]) if net.num_classes else None
    assert torch.equal(net(x, t, labels), torch.zeros(2, net.out_channels, 16, 16))
    for layer in zero_layers(net):
        assert not layer.weight.any() and not layer.bias.any()
    # The rest follows DiT: N(0, 0.02) label table and timestep MLP, zero biases elsewhere.
    if net.num_classes:
        assert net.y_embedder.weight.std().item() == pytest.approx(0.02, rel=0.1)
    else:
        assert net.y_embedder is None
    assert net.t_embedder[0].weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert not net.x_embedder.bias.any() and not net.blocks[0].attn.qkv.bias.any()
    fan_in, fan_out = net.blocks[0].mlp.fc1.in_features, net.blocks[0].mlp.fc1.out_features
    bound = (6 / (fan_in + fan_out)) ** 0.5                       # xavier-uniform
    assert net.blocks[0].mlp.fc1.weight.abs().max().item() <= bound


def test_fresh_block_is_identity():
    block = DiTBlock(32, 2)
    torch.nn.init.zeros_(block.adaLN_modulation[-1].weight)
    torch.nn.init.zeros_(block.adaLN_modulation[-1].bias)
    x, c = torch.randn(2, 5, 32), torch.randn(2, 32)
    assert torch.equal(block(x, c), x)
    assert torch.equal(modulate(x, torch.zeros(2, 32), torch.zeros(2, 32)), x)


def test_output_depends_on_t_and_class_after_perturbation():
    torch.manual_seed(0)
    net = randomize_zero_init(DiT(resolution=16, patch_size=2, num_classes=4, **TINY)).eval()
    x, _ = inputs(net, B=2)
    t = torch.tensor([10.0, 10.0])
    with torch.no_grad():
        y = net(x, t, torch.tensor([1, 1]))
        assert not torch.allclose(y, net(x, t * 50, torch.tensor([1, 1])))        # depends on t
        assert not torch.allclose(y, net(x, t, torch.tensor([2, 2])))            # depends on the label
        assert torch.equal(net(x, t), net(x, t, torch.tensor([4, 4])))           # None = null label
        assert not torch.allclose(net(x, t), y)
        # c_noise-sized labels (EDM) also change the output.
        assert not torch.allclose(net(x, torch.tensor([-1.0, -1.0])), net(x, torch.tensor([1.0, 1.0])))
        # Per-sample: sample 0 does not depend on sample 1's inputs (no batch mixing).
        y2 = net(torch.stack([x[0], -x[1]]), torch.tensor([10.0, 500.0]), torch.tensor([1, 3]))
        assert torch.allclose(y[0], y2[0], atol=1e-6)
        # A scalar noise label broadcasts.
        assert torch.equal(net(x, torch.tensor(10.0), torch.tensor([1, 1])), y)


def test_noise_labels_embedded_like_the_unet(monkeypatch):
    """Both families feed noise_labels to layers.timestep_embedding unscaled."""
    from pdlib.nets import dit as dit_module, unet as unet_module
    from pdlib.nets.layers import timestep_embedding
    calls = []

    def spy(noise_labels, dim, *a, **k):
        calls.append(noise_labels.clone())
        return timestep_embedding(noise_labels, dim, *a, **k)
    monkeypatch.setattr(dit_module, "timestep_embedding", spy)
    monkeypatch.setattr(unet_module, "timestep_embedding", spy)
    t = torch.tensor([-1.25, 0.5])
    DiT(resolution=8, patch_size=2, **TINY)(torch.randn(2, 3, 8, 8), t)
    unet_preset("tiny", resolution=8)(torch.randn(2, 3, 8, 8), t)
    assert len(calls) == 2 and all(torch.equal(c, t) for c in calls)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    net = randomize_zero_init(DiT(resolution=16, patch_size=2, num_classes=3, learn_sigma=True,
                                  extra_in_channels=1, **TINY)).train()
    x, t = inputs(net)
    net(x, t, torch.tensor([0, 3])).square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert set(net.y_embedder.weight.grad.abs().sum(1).nonzero().flatten().tolist()) == {0, 3}


def test_fresh_dit_has_gradient_only_at_the_zero_layers_output():
    """adaLN-Zero: at initialisation only the final Linear (and final modulation) get a gradient."""
    net = DiT(resolution=16, patch_size=2, **TINY)
    x, t = inputs(net)
    (net(x, t) - 1).square().mean().backward()
    assert net.final_layer.linear.weight.grad.abs().sum() > 0
    assert net.blocks[0].mlp.fc1.weight.grad is None or not net.blocks[0].mlp.fc1.weight.grad.any()


# ---------------------------------------------------------------------------------------------- counts

@pytest.mark.parametrize("name", [n for n in DIT_PRESETS if n.startswith("DiT-")])
def test_paper_parameter_counts(name):
    """Table 1 of the DiT paper (S 33M, B 130M, L 458M, XL 675M) at DiT's latent configuration, within 1%."""
    with torch.device("meta"):
        net = dit_preset(name, **DIT_PAPER_CONFIG)
    size = name[len("DiT-"):].split("/")[0]
    n = count_params(net)
    assert abs(n - DIT_PAPER_PARAMS[size]) / DIT_PAPER_PARAMS[size] < 0.01, (name, n)
    if name == "DiT-XL/2":
        assert round(n / 1e5) == 6748                            # 674.8M
    assert len([n for n in DIT_PRESETS if n.startswith("DiT-")]) == 12


def test_cpu_preset_sizes():
    assert count_params(dit_preset("dit-tiny")) < 100_000
    assert count_params(dit_preset("dit-tiny", in_channels=1, num_classes=10, learn_sigma=True)) < 100_000
    with torch.device("meta"):
        n = count_params(dit_preset("dit-small", in_channels=1, num_classes=10))
    assert 1_000_000 <= n <= 2_000_000
    assert DIT_PRESETS["dit-small"]["patch_size"] in (2, 4)


# ---------------------------------------------------------------------------------------------- registry

def test_registry_covers_the_families():
    from pdlib.nets import FPDM_PRESETS
    assert set(NET_PRESETS) == set(UNET_PRESETS) | set(DIT_PRESETS) | set(FPDM_PRESETS)
    assert not set(UNET_PRESETS) & set(DIT_PRESETS)
    for name in FPDM_PRESETS:
        assert preset_family(name) == "fpdm"
    for name in UNET_PRESETS:
        assert preset_family(name) == "unet" and NET_PRESETS[name][0] == "unet"
    for name in DIT_PRESETS:
        assert preset_family(name) == "dit" and NET_PRESETS[name][0] == "dit"


def test_net_preset_dispatches():
    torch.manual_seed(0)
    a = net_preset("tiny", num_classes=3)
    torch.manual_seed(0)
    b = unet_preset("tiny", num_classes=3)
    assert isinstance(a, UNet)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    d = net_preset("dit-tiny", learn_sigma=True)
    assert isinstance(d, DiT) and d.out_channels == 6
    with torch.device("meta"):
        assert isinstance(net_preset("DiT-XL/2"), DiT)


@pytest.mark.parametrize("name", ["tiny", "dit-tiny"])
def test_common_arguments_both_families(name):
    """Both families take the common keyword arguments and expose the attributes the rest of pdlib reads."""
    cls = UNet if preset_family(name) == "unet" else DiT
    params = inspect.signature(cls.__init__).parameters
    assert all(a in params for a in COMMON), [a for a in COMMON if a not in params]
    net = net_preset(name, in_channels=1, resolution=16, num_classes=5, learn_sigma=True,
                     extra_in_channels=2, dropout=0.1, patch_size=2)
    assert (net.in_channels, net.extra_in_channels, net.out_channels, net.learn_sigma, net.resolution,
            net.num_classes, net.patch_size) == (1, 2, 2, True, 16, 5, 2)
    x = torch.randn(2, 3, 16, 16)
    assert net(x, torch.rand(2), torch.tensor([0, 5])).shape == (2, 2, 16, 16)


def test_registry_rejects_unknown_names_and_overrides():
    with pytest.raises(ValueError, match=r"preset='x' is unknown; allowed: \[.*'DiT-XL/2'.*'tiny'"):
        net_preset("x")
    with pytest.raises(ValueError, match="preset='nope' is unknown"):
        preset_family("nope")
    with pytest.raises(ValueError, match=r"\['model_channels'\].*allowed: .*hidden_size"):
        net_preset("dit-tiny", model_channels=8)
    with pytest.raises(ValueError, match=r"\['hidden_size'\].*allowed: .*model_channels"):
        net_preset("tiny", hidden_size=8)
    with pytest.raises(ValueError, match="is not a DiT preset"):
        dit_preset("tiny")


# ---------------------------------------------------------------------------------------------- errors

@pytest.mark.parametrize("kwargs, match", [
    (dict(resolution=30, patch_size=4), r"patch_size=4 does not divide resolution=30.*allowed"),
    (dict(hidden_size=36, num_heads=5), r"num_heads=5 does not divide hidden_size=36.*allowed"),
    (dict(hidden_size=34, num_heads=2), r"hidden_size=34 .*multiple of 4"),
    (dict(in_channels=0), r"in_channels=0 .*positive integer"),
    (dict(depth=0), r"depth=0"),
    (dict(num_classes=0), r"num_classes=0"),
    (dict(extra_in_channels=-1), r"extra_in_channels=-1"),
    (dict(dropout=1.0), r"dropout=1.0"),
    (dict(mlp_ratio=0.0), r"mlp_ratio=0.0"),
    (dict(out_channels=0), r"out_channels=0"),
])
def test_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DiT(**{**TINY, "resolution": 16, **kwargs})


def test_input_errors():
    net = DiT(resolution=16, patch_size=4, **TINY)
    t = torch.rand(2)
    with pytest.raises(ValueError, match="spatial size 16x18.*multiples of patch_size = 4"):
        net(torch.randn(2, 3, 16, 18), t)
    with pytest.raises(ValueError, match="x_in has 4 channels"):
        net(torch.randn(2, 4, 16, 16), t)
    with pytest.raises(ValueError, match="noise_labels has shape"):
        net(torch.randn(2, 3, 16, 16), torch.rand(3))
    with pytest.raises(ValueError, match="num_classes=None"):
        net(torch.randn(2, 3, 16, 16), t, torch.tensor([0, 1]))
    cond = DiT(resolution=16, patch_size=4, num_classes=3, **TINY)
    with pytest.raises(ValueError, match="class_labels has shape"):
        cond(torch.randn(2, 3, 16, 16), t, torch.tensor([0.0, 1.0]))


def test_bf16_autocast():
    net = randomize_zero_init(DiT(resolution=16, patch_size=2, num_classes=2, **TINY))
    x, t = inputs(net)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = net(x, t, torch.tensor([0, 2]))
    assert y.shape == (2, 3, 16, 16) and torch.isfinite(y).all()
