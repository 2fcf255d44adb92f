"""pdlib.train: config checks, the loop's files, loss, resume, EMA, lr, accumulation, the CLI run."""
import json
import math
from dataclasses import dataclass

import pytest
import torch

from pdlib.checkpoint import LATEST, CheckpointError, load_checkpoint
from pdlib.methods import METHODS, EDMMethod, EDMOptions, build_method, register
from pdlib.pretrained import load_method
from pdlib.train import (BatchStream, TrainConfig, config_from_args, ema_beta, lr_at, main,
                         micro_batch_size, total_steps, train)

# A tiny run: sklearn digits at 8×8 (1617 training images), the 'tiny' U-Net, a few steps.
# out_dir=None unless a test sets one: nothing is written under runs/.
TINY = dict(dataset="digits", preset="tiny", resolution=8, batch_size=16, log_every=1,
            sample_every=0, sample_n=4, sample_steps=2, ckpt_every=0, warmup_steps=0, lr=2e-3,
            out_dir=None)


def tiny(**kw) -> TrainConfig:
    return TrainConfig.flat(**{**TINY, **kw})


def _equal_states(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _equal_optim(a: dict, b: dict) -> bool:
    sa, sb = a["state"], b["state"]
    return sa.keys() == sb.keys() and all(
        sa[i].keys() == sb[i].keys() and all(torch.equal(sa[i][j], sb[i][j]) for j in sa[i])
        for i in sa) and a["param_groups"] == b["param_groups"]


# ----------------------------------------------------------------------------------------------
# Config validation (the flat keywords of a notebook; the sections are tested in test_config.py).

@pytest.mark.parametrize("kw, match", [
    (dict(method="ddpm++"), r"method.name='ddpm\+\+'.*allowed"),
    (dict(dataset="cifar10"), r"data.dataset='cifar10'.*allowed"),
    (dict(preset="huge"), r"net.preset='huge'.*allowed"),
    (dict(method="vp", prediction="score"), r"method.prediction='score'"),
    (dict(method="vp", weighting="cubic"), r"method.weighting='cubic'"),
    (dict(amp="fp8"), r"run.amp='fp8'"),
    (dict(batch_size=0), r"optim.batch_size=0"),
    (dict(lr=-1.0), r"optim.lr=-1.0"),
    (dict(grad_clip=0.0), r"optim.grad_clip=0.0"),
    (dict(label_dropout=1.5), r"method.label_dropout=1.5"),
    (dict(device="gpu"), r"run.device='gpu'"),
    (dict(steps=2.5), r"run.steps=2.5"),
    (dict(max_minutes=0), r"run.max_minutes=0"),
    (dict(init_from=""), r"run.init_from=''"),
    (dict(dropout=1.0), r"net.overrides\['dropout'\]=1.0"),
    (dict(patch_size=0), r"net.overrides\['patch_size'\]=0"),
])
def test_config_rejects_bad_values(kw, match):
    with pytest.raises(ValueError, match=match):
        tiny(**kw)


def test_config_rejects_inconsistent_values():
    with pytest.raises(ValueError, match=r"optim.batch_size=10.*multiple of optim.grad_accum=4"):
        tiny(batch_size=10, grad_accum=4)
    with pytest.raises(ValueError, match=r"option 'prediction' does not belong to method 'edm'"):
        tiny(method="edm", prediction="x0")
    with pytest.raises(ValueError, match=r"run.amp='fp16'.*CUDA"):
        train(tiny(amp="fp16", device="cpu", steps=1), progress=False)
    with pytest.raises(ValueError, match="batch_size=2000 is larger than the data set"):
        train(tiny(batch_size=2000, steps=1), progress=False)
    with pytest.raises(ValueError, match="cfg is a dict.*TrainConfig.flat"):
        train(dict(TINY), progress=False)


def test_batch_must_divide_over_ranks_and_rounds():
    cfg = tiny(batch_size=12, grad_accum=2)
    assert micro_batch_size(cfg, 1) == 6 and micro_batch_size(cfg, 3) == 2
    with pytest.raises(ValueError, match="batch_size=12 is not divisible by world_size·grad_accum = 4·2"):
        micro_batch_size(cfg, 4)


def test_kimg_sets_the_step_count():
    assert total_steps(tiny(steps=7)) == 7
    assert total_steps(tiny(kimg=0.1, batch_size=16)) == math.ceil(100 / 16)


def test_flat_keywords_land_in_their_sections():
    cfg = tiny(method="patched", weighting="p2", patch_size=2, dropout=0.1, lr=1e-3, steps=5,
               seed=3, class_cond=True)
    assert cfg.data.dataset == "digits" and cfg.data.class_cond is True
    assert cfg.net.preset == "tiny" and cfg.net.overrides == {"patch_size": 2, "dropout": 0.1}
    assert cfg.method.name == "patched" and cfg.method.weighting == "p2"
    assert (cfg.optim.lr, cfg.optim.seed, cfg.run.steps) == (1e-3, 3, 5)
    # replace takes flat names or whole sections; None removes a net override
    assert cfg.replace(lr=2e-3).optim.lr == 2e-3
    assert cfg.replace(patch_size=None).net.overrides == {"dropout": 0.1}
    assert cfg.replace(run=cfg.run.__class__(steps=9)).run.steps == 9
    assert cfg.replace(method="vp").method.prediction == "eps"      # the method's defaults


# ----------------------------------------------------------------------------------------------
# Schedules of the loop.

def test_lr_warmup_is_linear_then_constant():
    cfg = tiny(lr=1e-3, warmup_steps=4)
    assert [lr_at(cfg, s) for s in range(6)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])
    assert lr_at(tiny(lr=1e-3, warmup_steps=0), 0) == 1e-3


def test_logged_lr_follows_the_warmup():
    res = train(tiny(steps=3, lr=1e-3, warmup_steps=2), progress=False)
    assert [r["lr"] for r in res.history] == pytest.approx([5e-4, 1e-3, 1e-3])


def test_ema_half_life_in_images():
    cfg = tiny(batch_size=64, ema_half_life_images=6400, ema_rampup=None)
    beta = ema_beta(cfg, 10)
    assert beta == pytest.approx(0.5 ** (64 / 6400), rel=1e-12)
    assert beta ** (6400 / 64) == pytest.approx(0.5, rel=1e-12)   # weight halves every half-life
    # EDM ramp-up: the half-life is at most ema_rampup × images seen (β = 0 at the first step).
    ramp = tiny(batch_size=64, ema_half_life_images=6400, ema_rampup=0.5)
    assert ema_beta(ramp, 0) == 0.0
    assert ema_beta(ramp, 10) == pytest.approx(0.5 ** (64 / (0.5 * 640)), rel=1e-12)
    assert ema_beta(ramp, 1000) == pytest.approx(beta, rel=1e-12)
    assert ema_beta(tiny(ema_half_life_images=0), 10) == 0.0


def test_ema_weights_follow_the_formula():
    """After the run, θ_ema = Σ_s (1−β_s)·Π_{r>s} β_r·θ_s: check it against the raw weights."""
    cfg = tiny(method="vp", steps=3, ema_half_life_images=32, ema_rampup=None)
    thetas = []
    result = train(cfg, progress=False, callback=lambda r: thetas.append(
        {k: v.clone() for k, v in r["method"].state_dict().items()}))
    betas = [ema_beta(cfg, s) for s in range(3)]
    init = train(cfg.replace(steps=0), progress=False).method.state_dict()   # same initial weights
    for name, ema_value in result.ema.state_dict().items():
        expected = init[name].clone()
        for s in range(3):
            expected = betas[s] * expected + (1 - betas[s]) * thetas[s][name]
        torch.testing.assert_close(ema_value, expected, rtol=1e-5, atol=1e-6)


def test_batch_stream_is_random_access_and_covers_each_epoch():
    images = torch.arange(10.0).reshape(10, 1, 1, 1)
    labels = torch.arange(10)
    s = BatchStream(images, labels, batch_size=3, seed=5)
    assert s.per_epoch == 3 and s.position(7) == (2, 1)
    epoch0 = torch.cat([s.batch(k)[1] for k in range(3)])
    assert len(set(epoch0.tolist())) == 9                          # drop_last: 9 of 10, no repeats
    later = BatchStream(images, labels, batch_size=3, seed=5).batch(7)   # jump straight to batch 7
    for k in range(8):
        x, y = s.batch(k)
    assert torch.equal(later[1], y) and torch.equal(later[0].flatten(), y.float())
    assert not torch.equal(epoch0, torch.cat([s.batch(k)[1] for k in range(3, 6)]))  # reshuffled


# ----------------------------------------------------------------------------------------------
# Methods (every method × net family: test_methods.py).

@pytest.mark.parametrize("method, extra, sampler", [
    ("edm", {}, "heun"),
    ("edm", {}, "euler"),
    ("vp", dict(prediction="v", class_cond=True), "ddim"),
    ("vp", dict(learn_sigma=True, weighting="snr"), "ddpm"),
    ("patched", {}, "ddim"),
])
def test_methods_build_train_loss_and_sample(method, extra, sampler):
    cfg = tiny(method=method, img_channels=1, num_classes=10, **extra)
    torch.manual_seed(0)
    m = build_method(cfg)
    x0 = torch.rand(4, 1, 8, 8) * 2 - 1
    labels = torch.arange(4) if m.class_cond else None
    g = torch.Generator().manual_seed(0)
    batch = m.prepare_batch(x0, labels, g)
    assert batch.n_images == 4 and batch.x0.shape == x0.shape
    losses = m.loss(batch, g)
    assert losses.shape == (4,) and torch.isfinite(losses).all()
    D = m.denoiser(x0, torch.full((4,), 0.5), **({"class_labels": labels} if labels is not None else {}))
    assert D.shape == x0.shape
    a = m.sample(3, generator=torch.Generator().manual_seed(1), steps=3, sampler=sampler)
    b = m.sample(3, generator=torch.Generator().manual_seed(1), steps=3, sampler=sampler)
    assert a.shape == (3, 1, 8, 8) and torch.equal(a, b) and a.abs().max() <= 1
    if method == "patched":
        assert m.net.patch_size == 2 and m.net.pos_emb == "sincos"
        assert (m.cfg.method.prediction, m.cfg.method.weighting) == ("x0", "sqrt_snr")
        assert m.cfg.net.overrides == {"patch_size": 2}          # resolved into the saved config
    if extra.get("learn_sigma"):
        assert m.net.out_channels == 2
    with pytest.raises(ValueError, match="sampler='nope'"):
        m.sample(1, steps=2, sampler="nope")


def test_label_dropout_uses_the_null_label():
    cfg = tiny(method="vp", class_cond=True, img_channels=1, num_classes=10)
    m = build_method(cfg)
    assert m.label_dropout == pytest.approx(0.1) and m.null_label == 10
    assert m.cfg.method.label_dropout == pytest.approx(0.1)          # resolved: None → 0.1
    m = build_method(cfg.replace(label_dropout=0.5))
    labels = torch.arange(400) % 10
    batch = m.prepare_batch(torch.zeros(400, 1, 8, 8), labels, torch.Generator().manual_seed(0))
    got = batch.cond["class_labels"]
    dropped = got == 10
    assert 0.4 < dropped.float().mean() < 0.6                      # ≈ p = 0.5
    assert torch.equal(got[~dropped], labels[~dropped])             # the others are unchanged
    # the loss sees the prepared batch's labels
    seen = []
    m.loss_fn = lambda D, x0, generator=None, class_labels=None: seen.append(class_labels) or x0.sum((1, 2, 3))
    m.loss(batch, torch.Generator().manual_seed(0))
    assert seen[0] is got
    assert build_method(tiny(method="vp", img_channels=1, num_classes=10)).label_dropout == 0.0
    with pytest.raises(ValueError, match="labels=None but the method is class-conditional"):
        m.prepare_batch(torch.zeros(2, 1, 8, 8), None)


# ----------------------------------------------------------------------------------------------
# The loop.

def test_tiny_run_writes_metrics_samples_and_checkpoints(tmp_path):
    from PIL import Image
    cfg = tiny(method="edm", steps=4, ckpt_every=2, sample_every=2, out_dir=str(tmp_path))
    result = train(cfg, progress=False)
    assert result.step == 4
    lines = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3, 4]
    assert set(lines[0]) == {"step", "kimg", "loss", "lr", "img_per_s", "time", "nonfinite_grad_steps"}
    assert all(r["nonfinite_grad_steps"] == 0 for r in lines)
    assert lines[-1]["kimg"] == pytest.approx(4 * 16 / 1000) and math.isfinite(lines[-1]["loss"])
    assert result.history == lines and result.metrics == lines[-1]
    grids = sorted((tmp_path / "samples").glob("*.png"))
    assert [g.name for g in grids] == ["0000002.png", "0000004.png"] and result.samples == grids
    assert Image.open(grids[-1]).size == (2 * 9 + 1, 2 * 9 + 1)      # 2×2 tiles of 8 px, 1 px gaps
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["ckpt-0000002.pt", "ckpt-0000004.pt", LATEST]
    # the saved config is sectioned, resolved against the data, and loads back as the run's config
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["version"] == 2 and set(saved) == {"version", "data", "net", "method", "optim", "run"}
    assert (saved["data"]["img_channels"], saved["data"]["resolution"], saved["data"]["num_classes"]) == (1, 8, 10)
    assert saved["method"]["label_dropout"] == 0.0
    assert TrainConfig.from_dict(saved) == result.config
    assert json.loads(load_checkpoint(tmp_path / LATEST)["config"]) == saved
    # The checkpoint alone rebuilds the method, with the EMA weights (or the raw ones).
    m = load_method(tmp_path / LATEST)
    assert _equal_states(m.state_dict(), result.ema.state_dict())
    assert _equal_states(load_method(tmp_path / LATEST, ema=False).state_dict(), result.method.state_dict())
    assert m.sample(2, generator=torch.Generator().manual_seed(0), steps=2).shape == (2, 1, 8, 8)


def test_loss_decreases_on_a_short_run():
    result = train(tiny(method="vp", steps=30, batch_size=32), progress=False)
    losses = [r["loss"] for r in result.history]
    first, last = sum(losses[:6]) / 6, sum(losses[-6:]) / 6
    assert last < 0.6 * first, (first, last)


@pytest.mark.parametrize("extra", [
    dict(method="vp", class_cond=True, dropout=0.1, learn_sigma=True),   # every source of randomness
    dict(method="edm", grad_accum=2, n_data=40),                        # accumulation, epochs wrap
    dict(method="patched", snr_interval=(0.25, 0.0), class_cond=True),  # a split model's interval
    dict(method="patch_diffusion", real_p=0.25, grad_accum=2, class_cond=True),  # more images per step
])
def test_resume_is_bit_for_bit(tmp_path, extra):
    cfg = tiny(steps=6, ckpt_every=3, ema_half_life_images=100, **extra)
    straight = train(cfg.replace(out_dir=str(tmp_path / "a")), progress=False)

    def crash(record):
        if record["step"] == 4:                                     # after the checkpoint at 3
            raise KeyboardInterrupt("simulated crash")

    with pytest.raises(KeyboardInterrupt):
        train(cfg.replace(out_dir=str(tmp_path / "b")), progress=False, callback=crash)
    assert load_checkpoint(tmp_path / "b" / LATEST)["step"] == 3
    resumed = train(cfg.replace(out_dir=str(tmp_path / "b")), progress=False, resume=True)
    # the history is the whole run's: the crashed run's records up to its checkpoint, then 4, 5, 6
    assert resumed.step == 6 and [r["step"] for r in resumed.history] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in straight.history]
    assert [r["kimg"] for r in resumed.history] == [r["kimg"] for r in straight.history]
    a, b = load_checkpoint(tmp_path / "a" / LATEST), load_checkpoint(tmp_path / "b" / LATEST)
    assert _equal_states(a["model"], b["model"])
    assert _equal_states(a["ema"], b["ema"])
    assert _equal_optim(a["optimizer"], b["optimizer"])
    assert _equal_states(straight.ema.state_dict(), resumed.ema.state_dict())
    # the resumed run's metrics log continues the interrupted one: steps 1..6 once each
    steps = [json.loads(s)["step"] for s in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    # and the weights did move (the comparison above is not between two untouched nets)
    assert not _equal_states(a["model"], a["ema"])


@pytest.mark.parametrize("change, named", [
    (dict(lr=1e-3), r"optim\.lr: 0\.002 → 0\.001"),
    (dict(seed=1), r"optim\.seed: 0 → 1"),
    (dict(dropout=0.1), r"net\.overrides: \{\} → \{'dropout': 0\.1\}"),
    (dict(n_data=100), r"data\.n_data: None → 100"),
    (dict(sigma_data=0.6), r"method\.sigma_data: 0\.5 → 0\.6"),
])
def test_resume_rejects_a_change_outside_the_run_section(tmp_path, change, named):
    train(tiny(steps=1, out_dir=str(tmp_path)), progress=False)
    with pytest.raises(ValueError, match=named) as e:
        train(tiny(steps=2, out_dir=str(tmp_path), **change), progress=False)
    assert "only the run section may change on resume" in str(e.value)
    assert "run." not in str(e.value).split("(")[1].split(")")[0]    # steps 1 → 2 is not a difference


def test_resume_allows_changes_in_the_run_section(tmp_path):
    first = train(tiny(steps=1, out_dir=str(tmp_path)), progress=False)
    # longer, logged and checkpointed differently, other sample grids: all run.* fields
    more = train(tiny(steps=3, log_every=2, ckpt_every=1, sample_n=9, amp="none",
                      out_dir=str(tmp_path)), progress=False)
    assert more.step == 3 and [r["step"] for r in more.history] == [1, 2, 3]
    assert more.history[0] == first.history[0]
    assert more.config.run.steps == 3
    saved = json.loads(load_checkpoint(tmp_path / LATEST)["config"])
    assert saved["run"]["steps"] == 3 and saved["run"]["log_every"] == 2   # the new run section is saved


def test_max_minutes_stops_at_the_first_log_line_past_the_budget(tmp_path):
    # a budget this small is past after the first step: the run stops there, with a checkpoint
    res = train(tiny(steps=50, max_minutes=1e-9, out_dir=str(tmp_path)), progress=False)
    assert res.step == 1 and load_checkpoint(tmp_path / LATEST)["step"] == 1
    # the budget may change on resume (equal-time runs extended later)
    more = train(tiny(steps=3, max_minutes=None, out_dir=str(tmp_path)), progress=False)
    assert more.step == 3


def test_a_spent_time_budget_trains_nothing_on_rerun(tmp_path, capsys):
    # the rerun of a finished time-budgeted run is a cache hit, not one more log interval
    first = train(tiny(steps=50, max_minutes=1e-9, out_dir=str(tmp_path)), progress=False)
    again = train(tiny(steps=50, max_minutes=1e-9, out_dir=str(tmp_path)), progress=True)
    assert first.trained_steps == 1 and not first.cached
    assert again.step == 1 and again.trained_steps == 0 and again.cached
    out = capsys.readouterr()
    assert "finished run loaded from cache (step 1)" in out.out and "it/s" not in out.err


def test_progress_of_a_budget_run_counts_seconds_of_the_budget(capsys):
    from pdlib.train.progress import Progress

    bar = Progress("edm/tiny", step=0, n_steps=100_000, max_minutes=0.5, t_done=12.0)
    assert not bar.cached and bar.bar.total == 30 and bar.bar.unit == "s" and bar.bar.n == 12
    bar.update(7)
    assert bar.bar.postfix == "step=7"
    bar.close()
    err = capsys.readouterr().err
    assert "/30 s" in err and "(0.5 min budget)" in err and "100000" not in err
    steps = Progress("edm/tiny", step=3, n_steps=10, max_minutes=None, t_done=0.0)
    assert steps.bar.total == 10 and steps.bar.n == 3
    steps.close()
    assert Progress("x", step=10, n_steps=10, max_minutes=None, t_done=5.0, enabled=False).cached


def test_a_callback_returning_true_stops_the_run_with_a_checkpoint(tmp_path):
    res = train(tiny(steps=10, out_dir=str(tmp_path)), progress=False,
                callback=lambda r: r["step"] == 2)
    assert res.step == 2 and load_checkpoint(tmp_path / LATEST)["step"] == 2


def test_init_from_starts_a_new_run_from_other_weights(tmp_path):
    src = train(tiny(steps=2, out_dir=str(tmp_path / "src")), progress=False)
    cfg = tiny(steps=0, init_from=str(tmp_path / "src" / LATEST), out_dir=str(tmp_path / "dst"))
    dst = train(cfg, progress=False)
    assert _equal_states(dst.method.state_dict(), src.method.state_dict())
    assert _equal_states(dst.ema.state_dict(), src.method.state_dict())    # EMA starts at the raw weights
    fresh = train(cfg.replace(init_from=None, out_dir=None), progress=False)
    assert not _equal_states(fresh.method.state_dict(), src.method.state_dict())
    # the optimizer starts fresh: after one more step its Adam step count is 1, not 3
    train(cfg.replace(steps=1), progress=False)
    opt = load_checkpoint(tmp_path / "dst" / LATEST)["optimizer"]["state"]
    assert {float(v["step"]) for v in opt.values()} == {1.0}
    # resuming takes the checkpoint's weights, whatever init_from says now (run.init_from may change)
    assert train(cfg.replace(steps=2, init_from=None), progress=False).step == 2
    with pytest.raises(FileNotFoundError, match="init_from='nope.pt' does not exist"):
        train(cfg.replace(init_from="nope.pt", out_dir=None), progress=False)
    with pytest.raises(ValueError, match="init_from=.*another network"):
        train(cfg.replace(preset="small", out_dir=None), progress=False)


def test_resume_from_a_corrupt_checkpoint_names_the_file(tmp_path):
    train(tiny(steps=1, out_dir=str(tmp_path)), progress=False)
    latest = tmp_path / LATEST
    latest.write_bytes(latest.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"latest\.pt.*corrupt or truncated"):
        train(tiny(steps=2, out_dir=str(tmp_path)), progress=False)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(tiny(steps=2, out_dir=str(tmp_path / "empty")), progress=False, resume=True)
    with pytest.raises(FileNotFoundError, match="run.resume='nope.pt': no such checkpoint"):
        train(tiny(steps=2, resume="nope.pt"), progress=False)


def test_resume_never_starts_over_only_with_overwrite(tmp_path):
    train(tiny(steps=2, out_dir=str(tmp_path)), progress=False)
    with pytest.raises(ValueError, match=r"holds another run .*run.overwrite=True"):
        train(tiny(steps=1, resume="never", out_dir=str(tmp_path)), progress=False)
    with pytest.warns(RuntimeWarning, match=r"moved the old run"):
        again = train(tiny(steps=1, resume="never", overwrite=True, out_dir=str(tmp_path)),
                      progress=False)
    assert again.step == 1 and [r["step"] for r in again.history] == [1]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(s)["step"] for s in lines] == [1]                 # a new run's log
    old, = tmp_path.glob(".old-*")                                       # the old run, whole
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["ckpt-0000001.pt", LATEST]
    assert load_checkpoint(old / LATEST)["step"] == 2 and (old / "ckpt-0000002.pt").is_file()


@dataclass(frozen=True)
class _DeterministicOptions(EDMOptions):
    name: str = "test-deterministic"


@pytest.fixture
def deterministic_method():
    """A test method whose loss draws no randomness (fixed σ, fixed 'noise'); registered for the
    test only."""

    class Deterministic(EDMMethod):
        def build_loss(self):
            def loss_fn(D, x0, generator=None, **cond):
                sigma = torch.full((x0.shape[0],), 0.7)
                noisy = x0 + 0.7 * x0.flip(-1).roll(1, -2)
                return ((D(noisy, sigma, **cond) - x0) ** 2).mean((1, 2, 3))
            return loss_fn

    register("test-deterministic", _DeterministicOptions)(Deterministic)
    try:
        yield "test-deterministic"
    finally:
        METHODS.pop("test-deterministic", None)


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_gradient_accumulation_matches_one_big_batch(deterministic_method, optimizer, monkeypatch):
    """batch 8 in one round == batch 8 as 2 rounds of 4 (same images per step), up to float error.
    Adam is blind to a wrong gradient scale, so the check is repeated with plain SGD."""
    if optimizer == "sgd":
        monkeypatch.setattr(torch.optim, "AdamW", lambda params, lr, **kw: torch.optim.SGD(params, lr=lr))
    cfg = tiny(method=deterministic_method, batch_size=8, steps=3, dropout=0.0, grad_clip=None,
               lr=2e-3 if optimizer == "adamw" else 0.5)
    one = train(cfg, progress=False)
    two = train(cfg.replace(grad_accum=2), progress=False)
    a, b = one.method.state_dict(), two.method.state_dict()
    for k in a:   # Adam divides by √v: rounding of near-zero gradients moves weights ~1e-6
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=2e-5)
    # the logged loss is per image whatever the rounds (the first step: identical weights)
    assert two.history[0]["loss"] == pytest.approx(one.history[0]["loss"], rel=1e-6)
    init = train(cfg.replace(steps=0), progress=False).method.state_dict()
    assert max((a[k] - init[k]).abs().max() for k in init) > 1e-3   # the steps changed the net


def test_train_leaves_the_global_rng_alone():
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    train(tiny(steps=2, dropout=0.1), progress=False)
    assert torch.equal(torch.rand(3), expected)


def test_bf16_autocast_runs_on_cpu():
    result = train(tiny(steps=2, amp="bf16"), progress=False)
    assert result.step == 2 and math.isfinite(result.metrics["loss"])
    assert all(p.dtype == torch.float32 for p in result.method.parameters())   # master weights


def test_make_grid_places_tiles_row_major():
    from pdlib.viz import make_grid, to_uint8
    images = torch.stack([torch.full((1, 2, 3), v) for v in (-1.0, 0.0, 1.0)])   # (3, 1, 2, 3)
    grid = make_grid(images, nrow=2, padding=1, pad_value=0.5)
    assert grid.shape == (1, 2 * 3 + 1, 2 * 4 + 1)
    assert (grid[:, 1:3, 1:4] == -1).all() and (grid[:, 1:3, 5:8] == 0).all()
    assert (grid[:, 4:6, 1:4] == 1).all() and (grid[:, 4:6, 5:8] == 0.5).all()   # empty slot
    assert (grid[:, 0] == 0.5).all() and (grid[:, :, 4] == 0.5).all()           # padding
    assert to_uint8(grid[:, 1:3, 1:4]).max() == 0 and to_uint8(grid[:, 4:6, 1:4]).min() == 255


def test_finished_run_resumes_as_a_no_op(tmp_path):
    first = train(tiny(steps=2, out_dir=str(tmp_path)), progress=False)
    again = train(tiny(steps=2, out_dir=str(tmp_path)), progress=False)
    assert again.step == 2 and again.history == first.history and again.checkpoint == tmp_path / LATEST
    assert _equal_states(first.ema.state_dict(), again.ema.state_dict())


def test_same_seed_same_run_other_seed_other_run():
    a = train(tiny(steps=2), progress=False).method.state_dict()
    b = train(tiny(steps=2), progress=False).method.state_dict()
    c = train(tiny(steps=2, seed=1), progress=False).method.state_dict()
    assert _equal_states(a, b) and not _equal_states(a, c)


def test_nonfinite_gradients_are_counted_and_warned(monkeypatch):
    real = EDMMethod.loss
    calls = {"n": 0}

    def nan_on_odd_calls(self, batch, generator=None, denoiser=None):
        loss = real(self, batch, generator, denoiser=denoiser)
        odd = calls["n"] % 2
        calls["n"] += 1
        return loss * torch.tensor(float("nan")) if odd else loss

    monkeypatch.setattr(EDMMethod, "loss", nan_on_odd_calls)
    with pytest.warns(RuntimeWarning, match="NaN/inf gradients"):
        res = train(tiny(method="edm", steps=4, log_every=4), progress=False)
    assert res.history[-1]["nonfinite_grad_steps"] == 2
    assert all(torch.isfinite(p).all() for p in res.method.parameters())   # zeroed, not applied


# ----------------------------------------------------------------------------------------------
# CLI (parsing, --help and errors in detail: test_config.py).

def test_cli_parses_fields_and_config_file(tmp_path):
    cfg_file = tmp_path / "c.json"
    cfg_file.write_text(json.dumps({"method": "vp", "lr": 1e-3, "steps": 9}))    # a flat config
    cfg, flags = config_from_args(["--config", str(cfg_file), "--run.steps", "3",
                                   "--run.out-dir", "runs/x", "--data.class-cond", "True",
                                   "--optim.grad-clip", "None", "--method.learn-sigma", "True",
                                   "--optim.ema-half-life-images", "1000", "--run.compile", "False",
                                   "--no-progress"])
    assert (cfg.method.name, cfg.optim.lr, cfg.run.steps, cfg.run.out_dir) == ("vp", 1e-3, 3, "runs/x")
    assert cfg.data.class_cond is True and cfg.optim.grad_clip is None and cfg.method.learn_sigma is True
    assert cfg.optim.ema_half_life_images == 1000.0 and cfg.run.compile is False
    assert flags.no_progress and flags.config == str(cfg_file)


def test_cli_runs_and_reports_bad_values(tmp_path, capsys):
    assert main(["--data.dataset", "digits", "--net.preset", "tiny", "--data.resolution", "8",
                 "--run.steps", "2", "--optim.batch-size", "8", "--run.log-every", "1",
                 "--run.sample-every", "0", "--run.sample-n", "4", "--run.sample-steps", "2",
                 "--run.out-dir", str(tmp_path), "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step"] == 2 and (tmp_path / LATEST).is_file()
    assert summary["checkpoint"] == str(tmp_path / "ckpt-0000002.pt")
    assert summary["out_dir"] == str(tmp_path) and math.isfinite(summary["loss"])
    assert main(["--method.name", "nope"]) == 2
    assert "method.name='nope'" in capsys.readouterr().err
