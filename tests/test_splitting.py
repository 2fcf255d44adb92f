"""SNR splitting (Luhman & Luhman 2022, §3.4): the snr_interval option of VP methods, old
split-method names, train_split's warm start, the composite SplitMethod, x0-MSE by t."""
import json
import math

import pytest
import torch

from pdlib.checkpoint import LATEST, atomic_save, load_checkpoint
from pdlib.config import TrainConfig, migrate
from pdlib.evaluation import x0_mse_by_t
from pdlib.methods import EDMMethod, SplitMethod, VPMethod, build_method, snr_intervals
from pdlib.pretrained import load_method
from pdlib.schedules import vp_schedule
from pdlib.train import train, train_split

BASE = dict(method="patched", preset="tiny", dataset="digits", img_channels=1, resolution=8,
            steps=2, batch_size=16, sample_every=0, sample_n=4, sample_steps=4, log_every=1,
            out_dir=None)


def _cfg(**kw):
    return TrainConfig.flat(**{**BASE, **kw})


# ----------------------------------------------------------------------------------------------
# The option and the old names.

def test_snr_interval_is_an_option_of_vp_methods():
    for name in ("vp", "patched"):
        cfg = _cfg(method=name, snr_interval=(math.inf, 0.25))
        assert cfg.method.name == name and cfg.method.snr_interval == (math.inf, 0.25)
    assert _cfg().method.snr_interval is None                    # default: every t
    with pytest.raises(ValueError, match="'snr_interval' does not belong to method 'edm'"):
        _cfg(method="edm", snr_interval=(math.inf, 0.25))


@pytest.mark.parametrize("bad", [(0.1, 0.25), (0.25, 0.25), (1.0, -0.5), (math.nan, 0.25), (True, 0.0)])
def test_snr_interval_is_validated(bad):
    with pytest.raises(ValueError, match=r"method\.snr_interval=.*hi > lo >= 0"):
        _cfg(snr_interval=bad)


def test_old_split_method_names_migrate_to_snr_interval():
    assert migrate({"method": "patched-snr:inf>0.25"})["method"] == {
        "name": "patched", "snr_interval": (math.inf, 0.25)}
    assert migrate({"method": "vp-snr:0.5>0.125"})["method"] == {
        "name": "vp", "snr_interval": (0.5, 0.125)}
    cfg = TrainConfig.from_dict({**BASE, "method": "patched-snr:0.25>0"})
    assert type(cfg.method).__name__ == "PatchedOptions" and cfg.method.snr_interval == (0.25, 0.0)
    # the saved form is the new one: name and option, strict JSON
    d = cfg.to_dict()
    assert d["method"]["name"] == "patched" and d["method"]["snr_interval"] == [0.25, 0.0]
    hi = TrainConfig.from_dict({**BASE, "method": "patched-snr:inf>0.25"}).to_dict()
    assert hi["method"]["snr_interval"] == ["inf", 0.25]
    assert TrainConfig.from_dict(json.loads(json.dumps(hi, allow_nan=False))).method.snr_interval == (math.inf, 0.25)
    with pytest.raises(ValueError, match="snr_interval"):
        TrainConfig.from_dict({"method": "edm-snr:inf>0.25"})           # EDM has no SNR interval
    with pytest.raises(ValueError, match=r"method\.snr_interval=\(1\.0, 2\.0\)"):
        TrainConfig.from_dict({"method": "vp-snr:1>2"})
    with pytest.raises(ValueError, match="method.name='patched-snr:nonsense' is unknown"):
        TrainConfig.from_dict({"method": "patched-snr:nonsense"})


def test_snr_intervals():
    assert snr_intervals([1.0, 0.25]) == [(math.inf, 1.0), (1.0, 0.25), (0.25, 0.0)]
    for bad in ([], [0.25, 1.0], [0.0], [math.inf], [0.5, 0.5]):
        with pytest.raises(ValueError, match="snr_boundaries"):
            snr_intervals(bad)


def test_interval_methods_draw_t_only_in_their_interval():
    sched = vp_schedule("linear", 1000)
    g = torch.Generator().manual_seed(0)
    for (hi, lo), allowed in (((math.inf, 0.25), torch.arange(396)), ((0.25, 0.0), torch.arange(396, 1000))):
        m = build_method(_cfg(snr_interval=(hi, lo)))
        assert torch.equal(m.loss_fn.t_sampler.allowed, allowed)
        t = m.loss_fn.t_sampler(4000, g)
        snr = sched.snr[t]
        assert bool(((snr < hi) & (snr >= lo)).all())
        assert t.min().item() == allowed[0].item() and t.max().item() == allowed[-1].item()
    every = build_method(_cfg()).loss_fn.t_sampler(4000, g)          # no interval: every t
    assert every.min().item() < 5 and every.max().item() > 994


def test_an_interval_without_steps_is_refused():
    with pytest.raises(ValueError, match="no step has"):
        build_method(_cfg(snr_interval=(1e9, 1e8)))


# ----------------------------------------------------------------------------------------------
# Training a split.

def test_warm_start_copies_the_high_snr_weights(tmp_path):
    warm = train_split(_cfg(out_dir=str(tmp_path / "warm")), [0.25], steps=[2, 0], progress=False)
    cold = train_split(_cfg(out_dir=str(tmp_path / "cold")), [0.25], steps=[2, 0],
                       warm_start=False, progress=False)
    src = warm.results[0].method.state_dict()
    for name, w in warm.results[1].method.state_dict().items():
        assert torch.equal(w, src[name]), name
    assert any(not torch.equal(w, src[n]) for n, w in cold.results[1].method.state_dict().items())
    # the low-SNR model then trains on its own interval only
    assert warm.results[1].method.loss_fn.t_sampler.allowed[0].item() == 396
    # each model's run: its folder, its interval, the warm start recorded in its config
    assert warm.checkpoints == [tmp_path / "warm" / f"model{j}" / LATEST for j in (0, 1)]
    c0, c1 = (r.config for r in warm.results)
    assert (c0.method.snr_interval, c1.method.snr_interval) == ((math.inf, 0.25), (0.25, 0.0))
    assert c0.run.init_from is None and c1.run.init_from == str(warm.checkpoints[0])
    assert cold.results[1].config.run.init_from is None
    assert warm.snr_boundaries == (0.25,) and len(warm.methods) == 2


def test_train_split_checks_its_arguments(tmp_path):
    with pytest.raises(ValueError, match="steps"):
        train_split(_cfg(out_dir=str(tmp_path)), [0.25], steps=[1, 2, 3], progress=False)
    with pytest.raises(ValueError, match="steps"):
        train_split(_cfg(out_dir=str(tmp_path)), [0.25], steps=-1, progress=False)
    with pytest.raises(ValueError, match="run.out_dir=None"):
        train_split(_cfg(out_dir=None), [0.25], progress=False)
    with pytest.raises(ValueError, match="SNR splitting needs a VP method"):
        train_split(_cfg(method="edm", out_dir=str(tmp_path)), [0.25], progress=False)
    with pytest.raises(ValueError, match="snr_boundaries"):
        train_split(_cfg(out_dir=str(tmp_path)), [0.25, 1.0], progress=False)


# ----------------------------------------------------------------------------------------------
# The composite.

def _two_methods():
    torch.manual_seed(0)
    ms = [build_method(_cfg(snr_interval=iv)) for iv in ((math.inf, 0.25), (0.25, 0.0))]
    for j, m in enumerate(ms):                       # make the two nets' outputs differ
        torch.nn.init.constant_(m.net.conv_out.bias, 0.1 * (j + 1))
        m.denoiser.eval()
    return ms


def test_composite_picks_the_model_of_each_sigma():
    ms = _two_methods()
    comp = SplitMethod(ms, [0.25])
    assert isinstance(comp, VPMethod) and comp.threshold_guided and comp.img_shape == (1, 8, 8)
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
    with pytest.raises(NotImplementedError, match="train_split"):
        comp.loss(None)


def test_composite_checks_its_members():
    ms = _two_methods()
    with pytest.raises(ValueError, match="methods"):
        SplitMethod(ms, [1.0, 0.25])
    with pytest.raises(ValueError, match="snr_boundaries"):
        SplitMethod(ms, [0.0])
    edm = build_method(_cfg(method="edm"))
    assert isinstance(edm, EDMMethod)
    with pytest.raises(ValueError, match=r"methods\[1\] is a EDMMethod; allowed: VP methods"):
        SplitMethod([ms[0], edm], [0.25])
    with pytest.raises(ValueError, match="another noise schedule"):
        SplitMethod([ms[0], build_method(_cfg(schedule="cosine"))], [0.25])
    with pytest.raises(ValueError, match="img_shape"):
        SplitMethod([ms[0], build_method(_cfg(resolution=16))], [0.25])
    with pytest.raises(ValueError, match="guide alike"):
        SplitMethod([ms[0], build_method(_cfg(method="vp"))], [0.25])   # patched thresholds, vp not


def test_split_method_from_checkpoints(tmp_path):
    from pdlib.evaluation import load_for_evaluation
    r = train_split(_cfg(out_dir=str(tmp_path)), [0.25], steps=1, progress=False)
    members = [load_method(p) for p in r.checkpoints]
    comp = SplitMethod(members, [0.25])
    assert [m.name for m in comp.methods] == ["patched", "patched"]
    assert [m.cfg.method.snr_interval for m in comp.methods] == [(math.inf, 0.25), (0.25, 0.0)]
    x, s = torch.randn(2, 1, 8, 8), torch.tensor([0.5, 5.0])
    with torch.no_grad():
        torch.testing.assert_close(comp.denoiser(x, s), r.composite().denoiser(x, s))
        torch.testing.assert_close(load_for_evaluation(r.checkpoints, [0.25]).denoiser(x, s),
                                   comp.denoiser(x, s))
    with pytest.raises(ValueError, match="methods"):
        SplitMethod(members, [1.0, 0.25])


def test_an_old_split_checkpoint_loads_and_resumes(tmp_path):
    """A pdlib ≤ 0.1 checkpoint saved its config flat, with a split method name: it still loads
    (migrate), and a run with the equivalent new config resumes it."""
    cfg = _cfg(snr_interval=(math.inf, 0.25), out_dir=str(tmp_path), ckpt_every=1)
    first = train(cfg.replace(steps=1), progress=False)
    state = load_checkpoint(tmp_path / LATEST)
    new = json.loads(state["config"])
    old = {"method": "patched-snr:inf>0.25", "preset": "tiny", "patch_size": 2,
           **{k: v for k, v in new["method"].items() if k not in ("name", "snr_interval")},
           **new["data"], **new["optim"], **new["run"],
           "learn_sigma": None, "dropout": None}     # as pdlib 0.1 saved them: unresolved
    state["config"] = json.dumps(old)
    atomic_save(state, tmp_path / LATEST)
    m = load_method(tmp_path / LATEST)
    assert m.cfg.method.name == "patched" and m.cfg.method.snr_interval == (math.inf, 0.25)
    assert torch.equal(m.loss_fn.t_sampler.allowed, torch.arange(396))
    for k, v in m.state_dict().items():
        assert torch.equal(v, first.ema.state_dict()[k])
    resumed = train(cfg.replace(steps=2), progress=False)
    assert resumed.step == 2 and [r["step"] for r in resumed.history] == [1, 2]


# ----------------------------------------------------------------------------------------------
# Evaluation by t.

def test_x0_mse_by_t_closed_forms():
    sched = vp_schedule("linear", 1000)
    x0 = torch.rand(512, 1, 8, 8) * 2 - 1
    ts = [0, 200, 396]
    g = torch.Generator().manual_seed(0)
    oracle = x0_mse_by_t(lambda x, s: x0[: len(x)] if len(x) == len(x0) else x, x0, sched, ts, g,
                         batch_size=512)
    assert torch.allclose(oracle, torch.zeros(3, dtype=torch.float64))
    ident = x0_mse_by_t(lambda x, s: x, x0, sched, ts, g)        # E‖σε‖² = σ²
    torch.testing.assert_close(ident, sched.sigmas[ts] ** 2, rtol=0.03, atol=0)
    with pytest.raises(ValueError, match="ts"):
        x0_mse_by_t(lambda x, s: x, x0, sched, [1000])


def test_evaluating_a_split_model_uses_each_model_on_its_interval(tmp_path):
    from pdlib.evaluation import evaluate_checkpoint
    split = train_split(_cfg(out_dir=str(tmp_path)), [0.25], steps=[2, 2], progress=False)
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


def test_guided_split_model_thresholds_like_its_members():
    """A guided sample of a class-conditional split patched model goes through dynamic
    thresholding, as each member's does (the old composite skipped it), and samples equal the
    members' own guided samples where every σ falls in one member's interval."""
    from pdlib.denoisers import CFGDenoiser, DynamicThreshold
    torch.manual_seed(0)
    ms = [build_method(_cfg(snr_interval=iv, class_cond=True, num_classes=10))
          for iv in ((math.inf, 0.25), (0.25, 0.0))]
    comp = SplitMethod(ms, [0.25])
    for m in (*ms, comp):
        D, cond, _ = m._sample_setup(4, None, None, 1.5, "cpu")
        assert isinstance(D, DynamicThreshold) and isinstance(D.denoiser, CFGDenoiser)
        D, _, _ = m._sample_setup(4, None, None, 1.0, "cpu")
        assert not isinstance(D, (DynamicThreshold, CFGDenoiser))
    vp = [build_method(_cfg(method="vp", snr_interval=iv, class_cond=True, num_classes=10))
          for iv in ((math.inf, 0.25), (0.25, 0.0))]
    D, _, _ = SplitMethod(vp, [0.25])._sample_setup(4, None, None, 1.5, "cpu")
    assert isinstance(D, CFGDenoiser)                     # vp does not threshold, nor does its split


def test_split_of_learn_sigma_models_keeps_learned_variances():
    """SNRSplitDenoiser passes learn_sigma and forward_with_variance through, so DDPM sampling of a
    split learn_sigma model uses the learned variances (it used to fall back to the posterior)."""
    from pdlib.denoisers import learns_variance
    torch.manual_seed(0)
    ms = [build_method(_cfg(snr_interval=iv, learn_sigma=True)) for iv in ((math.inf, 0.25), (0.25, 0.0))]
    comp = SplitMethod(ms, [0.25])
    assert learns_variance(comp.denoiser)
    sig = vp_schedule("linear", 1000).sigmas
    sigma = torch.stack([sig[10], sig[900]]).float()
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        x0, v = comp.denoiser.forward_with_variance(x, sigma)
        for i, j in enumerate([0, 1]):
            x0_j, v_j = ms[j].denoiser.forward_with_variance(x[i:i + 1], sigma[i:i + 1])
            torch.testing.assert_close(v[i:i + 1], v_j)
            torch.testing.assert_close(x0[i:i + 1], x0_j)
