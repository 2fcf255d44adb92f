"""SNR splitting (Luhman & Luhman 2022, §3.4): interval methods, warm start, composite denoiser."""
import math

import pytest
import torch

from pdlib import splitting
from pdlib.methods import build_method
from pdlib.schedules import vp_schedule
from pdlib.train import TrainConfig


def _cfg(**kw):
    base = dict(method="patched", preset="tiny", dataset="digits", img_channels=1, resolution=8,
                steps=2, batch_size=16, sample_every=0, sample_n=4, sample_steps=4, log_every=1,
                out_dir=None)
    return TrainConfig(**{**base, **kw})


def test_names_round_trip_and_validate():
    name = splitting.split_method_name(math.inf, 0.25)
    assert name == "patched-snr:inf>0.25"
    assert splitting.parse_split_method_name(name) == ("patched", math.inf, 0.25)
    assert splitting.parse_split_method_name("patched") is None
    with pytest.raises(ValueError, match="snr_hi"):
        splitting.split_method_name(0.1, 0.25)
    with pytest.raises(ValueError, match="base"):
        splitting.register_split_method(1.0, 0.5, base="edm")


def test_snr_intervals():
    assert splitting.snr_intervals([1.0, 0.25]) == [(math.inf, 1.0), (1.0, 0.25), (0.25, 0.0)]
    for bad in ([], [0.25, 1.0], [0.0], [math.inf]):
        with pytest.raises(ValueError, match="snr_boundaries"):
            splitting.snr_intervals(bad)


def test_interval_methods_draw_t_only_in_their_interval():
    sched = vp_schedule("linear", 1000)
    g = torch.Generator().manual_seed(0)
    for (hi, lo), allowed in (((math.inf, 0.25), torch.arange(396)), ((0.25, 0.0), torch.arange(396, 1000))):
        m = build_method(_cfg(method=splitting.register_split_method(hi, lo)))
        assert torch.equal(m.loss_fn.t_sampler.allowed, allowed)
        t = m.loss_fn.t_sampler(4000, g)
        snr = sched.snr[t]
        assert bool(((snr < hi) & (snr >= lo)).all())
        assert t.min().item() == allowed[0].item() and t.max().item() == allowed[-1].item()


def test_warm_start_copies_the_high_snr_weights(tmp_path):
    warm = splitting.train_split(_cfg(out_dir=str(tmp_path / "warm")), [0.25], steps=[2, 0], progress=False)
    cold = splitting.train_split(_cfg(out_dir=str(tmp_path / "cold")), [0.25], steps=[2, 0],
                                 warm_start=False, progress=False)
    src = warm.results[0].method.state_dict()
    for name, w in warm.results[1].method.state_dict().items():
        assert torch.equal(w, src[name]), name
    assert any(not torch.equal(w, src[n]) for n, w in cold.results[1].method.state_dict().items())
    # the low-SNR model then trains on its own interval only
    assert warm.results[1].method.loss_fn.t_sampler.allowed[0].item() == 396


def test_train_split_checks_steps(tmp_path):
    with pytest.raises(ValueError, match="steps"):
        splitting.train_split(_cfg(out_dir=str(tmp_path)), [0.25], steps=[1, 2, 3], progress=False)


def _two_methods():
    torch.manual_seed(0)
    ms = [build_method(_cfg(method=splitting.register_split_method(h, l))) for h, l in ((math.inf, 0.25), (0.25, 0))]
    for j, m in enumerate(ms):                       # make the two nets' outputs differ
        torch.nn.init.constant_(m.net.conv_out.bias, 0.1 * (j + 1))
        m.denoiser.eval()
    return ms


def test_composite_picks_the_model_of_each_sigma():
    ms = _two_methods()
    comp = splitting.SplitMethod(ms, [0.25])
    sig = vp_schedule("linear", 1000).sigmas
    sigma = torch.stack([sig[395], sig[396], sig[10], sig[999]]).float()     # models 0, 1, 0, 1
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = comp.denoiser(x, sigma)
        ref = [m.denoiser(x, sigma) for m in ms]
    for i, j in enumerate([0, 1, 0, 1]):
        torch.testing.assert_close(out[i], ref[j][i])
        assert not torch.allclose(out[i], ref[1 - j][i])
    y = comp.sample(2, generator=torch.Generator().manual_seed(0), steps=5)
    assert y.shape == (2, 1, 8, 8) and bool(y.abs().le(1).all())


def test_split_method_from_checkpoints(tmp_path):
    r = splitting.train_split(_cfg(out_dir=str(tmp_path)), [0.25], steps=1, progress=False)
    comp = splitting.SplitMethod(r.checkpoints, [0.25])
    assert [m.name for m in comp.methods] == ["patched-snr:inf>0.25", "patched-snr:0.25>0"]
    x, s = torch.randn(2, 1, 8, 8), torch.tensor([0.5, 5.0])
    with torch.no_grad():
        torch.testing.assert_close(comp.denoiser(x, s), r.composite().denoiser(x, s))
    with pytest.raises(ValueError, match="methods"):
        splitting.SplitMethod(r.checkpoints, [1.0, 0.25])


def test_x0_mse_by_t_closed_forms():
    sched = vp_schedule("linear", 1000)
    x0 = torch.rand(512, 1, 8, 8) * 2 - 1
    ts = [0, 200, 396]
    g = torch.Generator().manual_seed(0)
    oracle = splitting.x0_mse_by_t(lambda x, s: x0[: len(x)] if len(x) == len(x0) else x, x0, sched, ts, g,
                                   batch_size=512)
    assert torch.allclose(oracle, torch.zeros(3, dtype=torch.float64))
    ident = splitting.x0_mse_by_t(lambda x, s: x, x0, sched, ts, g)        # E‖σε‖² = σ²
    torch.testing.assert_close(ident, sched.sigmas[ts] ** 2, rtol=0.03, atol=0)
    with pytest.raises(ValueError, match="ts"):
        splitting.x0_mse_by_t(lambda x, s: x, x0, sched, [1000])


def test_split_checkpoint_names_register_on_first_use():
    """A split method's name is known to TrainConfig/load_method without importing pdlib.splitting."""
    from pdlib.methods import METHODS, is_known
    name = "patched-snr:0.5>0.125"
    METHODS.pop(name, None)
    assert is_known(name) and name in METHODS
    assert not is_known("patched-snr:nonsense")


def test_evaluating_a_split_model_uses_each_model_on_its_interval(tmp_path):
    from pdlib.evaluation import evaluate_checkpoint
    split = splitting.train_split(_cfg(out_dir=str(tmp_path)), [0.25], steps=[2, 2], progress=False)
    paths = [str(p) for p in split.checkpoints]
    ts = [10, 900]                                    # SNR far above and far below the boundary
    comp, images = evaluate_checkpoint(paths, snr_boundaries=[0.25], n_samples=3, metrics=(),
                                       steps=4, x0_mse_t=ts, x0_mse_n=20, progress=False)
    single = [evaluate_checkpoint(p, n_samples=1, metrics=(), steps=2, x0_mse_t=ts, x0_mse_n=20,
                                  progress=False)[0] for p in paths]
    assert images.shape == (3, 1, 8, 8) and comp["snr_boundaries"] == [0.25]
    assert comp["x0_mse"][0] == pytest.approx(single[0]["x0_mse"][0], rel=1e-6)   # model 0 at high SNR
    assert comp["x0_mse"][1] == pytest.approx(single[1]["x0_mse"][1], rel=1e-6)   # model 1 at low SNR
    assert single[0]["x0_mse"][1] != pytest.approx(single[1]["x0_mse"][1], rel=1e-6)
    with pytest.raises(ValueError, match="snr_boundaries=None for 2 checkpoints"):
        evaluate_checkpoint(paths, n_samples=1, metrics=(), progress=False)
    with pytest.raises(FileNotFoundError, match="checkpoint='nope.pt' does not exist"):
        evaluate_checkpoint([paths[0], "nope.pt"], snr_boundaries=[0.25], metrics=(), progress=False)
