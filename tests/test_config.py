"""pdlib.config: every committed config loads (migrate), round-trips and builds; each section
validates itself; strict JSON; the tyro CLI of pdlib.train (help, tuples, dicts, --config, errors)
and one `python -m pdlib.train` run with a DiT."""
import dataclasses
import json
import math
import re
from pathlib import Path

import pytest
import torch

from pdlib.config import (CONFIG_VERSION, DataConfig, NetConfig, OptimConfig, RunConfig,
                          TrainConfig, migrate)
from pdlib.methods import EDMOptions, PatchedOptions, VPOptions, build_method
from pdlib.train import config_from_args, main

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = sorted(set(ROOT.glob("results/**/*.config.json")) | set(ROOT.glob("results/**/config.json")))


def _load(rel: str) -> dict:
    return json.loads((ROOT / rel).read_text())


# ----------------------------------------------------------------------------------------------
# Every committed config.

def test_there_are_committed_configs():
    assert len(COMMITTED) >= 10, COMMITTED


@pytest.mark.parametrize("path", COMMITTED, ids=[str(p.relative_to(ROOT)) for p in COMMITTED])
def test_every_committed_config_loads_round_trips_and_builds(path):
    d = json.loads(path.read_text())
    cfg = TrainConfig.from_dict(d)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict(), allow_nan=False))) == cfg
    assert migrate(cfg.to_dict()) == {k: v for k, v in cfg.to_dict().items() if k != "version"}
    torch.manual_seed(0)
    m = build_method(cfg)                    # the saved config alone rebuilds the method
    assert m.name == cfg.method.name and m.img_shape[1] == cfg.data.resolution


def test_an_old_edm_config_drops_the_vp_fields():
    d = _load("results/baseline/config.json")
    assert d["method"] == "edm" and d["schedule"] == "linear" and d["diffusion_steps"] == 1000
    cfg = TrainConfig.from_dict(d)
    assert type(cfg.method) is EDMOptions
    saved = cfg.to_dict()
    for key in ("schedule", "diffusion_steps", "prediction", "weighting", "learn_sigma"):
        assert key not in saved["method"]
    assert saved["net"] == {"preset": "small", "overrides": {}}       # patch_size/dropout null: none
    assert (cfg.run.amp, cfg.run.ckpt_every, cfg.optim.lr) == ("bf16", 250, 5e-4)
    assert cfg.method.label_dropout == 0.0
    # an EDM config with a VP field at a non-default value is refused, naming it
    with pytest.raises(ValueError, match="'schedule' does not belong to method 'edm'"):
        TrainConfig.from_dict({**d, "schedule": "cosine"})


def test_learn_sigma_true_survives_the_migration():
    cfg = TrainConfig.from_dict(_load("results/ch03_full/ls-s0.config.json"))
    assert type(cfg.method) is PatchedOptions and cfg.method.learn_sigma is True
    assert build_method(cfg).net.learn_sigma
    other = TrainConfig.from_dict(_load("results/ch03_full/w-p2-s0.config.json"))
    assert other.method.learn_sigma is None and other.method.weighting == "p2"


def test_old_split_configs_become_snr_intervals():
    m1 = TrainConfig.from_dict(_load("results/ch03_full/split-s0-model1.config.json"))
    assert m1.method.name == "patched" and m1.method.snr_interval == (0.25, 0.0)
    assert m1.run.init_from == "runs/ch03_full/split-s0/model0/latest.pt"
    m0 = TrainConfig.from_dict(_load("results/ch03_full/split-s0-model0.config.json"))
    assert m0.method.snr_interval == (math.inf, 0.25)
    assert m0.to_dict()["method"]["snr_interval"] == ["inf", 0.25]


def test_old_patch_size_goes_to_net_overrides():
    d = _load("results/patching_equal_time/P4.config.json")
    assert d["patch_size"] == 4
    cfg = TrainConfig.from_dict(d)
    assert cfg.net == NetConfig("small", {"patch_size": 4})
    assert build_method(cfg).net.patch_size == 4
    assert TrainConfig.flat(patch_size=2, dropout=0.1).net.overrides == {"patch_size": 2, "dropout": 0.1}


def test_migrate_accepts_sectioned_dicts_as_they_are():
    cfg = TrainConfig.flat(method="vp", preset="tiny", lr=1e-3)
    d = cfg.to_dict()
    assert d["version"] == CONFIG_VERSION
    assert migrate(d) == {k: v for k, v in d.items() if k != "version"}
    # sections may be partial; the version may be left out when sections are dicts
    part = TrainConfig.from_dict({"method": {"name": "vp", "weighting": "p2"}, "optim": {"lr": 1e-3}})
    assert (part.method.name, part.method.weighting, part.optim.lr) == ("vp", "p2", 1e-3)
    assert part.run == RunConfig() and part.data == DataConfig()
    assert TrainConfig.from_dict({"net": {"preset": "tiny"}}).net == NetConfig("tiny")   # net alone


def test_flat_method_fields_saved_as_none_take_the_methods_default():
    cfg = TrainConfig.from_dict({"method": "patched", "prediction": None, "weighting": None})
    assert (cfg.method.prediction, cfg.method.weighting) == ("x0", "sqrt_snr")


# ----------------------------------------------------------------------------------------------
# Options that do not belong; sections that validate themselves; unknown keys.

def test_an_option_of_another_method_is_an_error_listing_the_methods_options():
    edm_opts = ["P_mean", "P_std", "rho", "sigma_data", "sigma_max", "sigma_min"]
    with pytest.raises(ValueError, match="'weighting' does not belong to method 'edm'") as e:
        TrainConfig.flat(method="edm", weighting="p2")                       # flat
    assert all(k in str(e.value) for k in edm_opts)
    with pytest.raises(ValueError, match=r"method.*\['weighting'\] do not belong") as e:
        TrainConfig.from_dict({"version": 2, "method": {"name": "edm", "weighting": "p2"}})   # sectioned
    assert all(k in str(e.value) for k in edm_opts)
    with pytest.raises(ValueError, match="'sigma_data' does not belong to method 'vp'") as e:
        TrainConfig.flat(method="vp", sigma_data=0.5)
    assert all(k in str(e.value) for k in ("prediction", "weighting", "snr_interval", "schedule"))
    with pytest.raises(ValueError, match="'weighting' does not belong to method 'edm'"):
        TrainConfig.flat(method="vp").replace(method="edm").replace(weighting="p2")
    with pytest.raises(ValueError, match="'nonsense' does not belong"):
        TrainConfig.flat(nonsense=1)


def _bad(section: str, **changes) -> TrainConfig:
    cfg = TrainConfig.flat(method="vp")
    return dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section), **changes)})


@pytest.mark.parametrize("section, field, value", [
    ("data", "dataset", "cifar10"),
    ("data", "resolution", 0),
    ("data", "class_cond", "yes"),
    ("net", "preset", "huge"),
    ("net", "overrides", {"bogus": 1}),
    ("method", "prediction", "score"),
    ("method", "diffusion_steps", 1),
    ("method", "snr_interval", (0.1, 0.2)),
    ("method", "label_dropout", 1.0),
    ("optim", "lr", 0.0),
    ("optim", "grad_accum", 0),
    ("optim", "ema_rampup", -1.0),
    ("run", "amp", "fp8"),
    ("run", "device", "tpu"),
    ("run", "sample_n", 0),
])
def test_each_section_validates_itself(section, field, value):
    with pytest.raises(ValueError, match=re.escape(f"{section}.{field}")):
        _bad(section, **{field: value})
    if section != "method":                 # the section object alone knows what is wrong with it
        sec = dataclasses.replace(getattr(TrainConfig(), section), **{field: value})
        with pytest.raises(ValueError, match=re.escape(f"{section}.{field}")):
            sec.validate()


def test_edm_options_validate_themselves():
    with pytest.raises(ValueError, match=r"method\.sigma_data=-1"):
        TrainConfig(method=EDMOptions(sigma_data=-1.0))
    with pytest.raises(ValueError, match=r"method\.sigma_max=.*method\.sigma_min"):
        TrainConfig(method=EDMOptions(sigma_min=100.0))
    with pytest.raises(ValueError, match=r"VPOptions for method.name='vp'"):
        TrainConfig(method=EDMOptions(name="vp"))       # options of another method under its name
    with pytest.raises(ValueError, match=r"data.*a DataConfig"):
        TrainConfig(data={"dataset": "digits"})


def test_net_overrides_that_the_data_or_the_method_fix_are_refused():
    with pytest.raises(ValueError, match=r"net\.overrides\['in_channels'\].*the data and the method"):
        TrainConfig.from_dict({"net": {"preset": "tiny", "overrides": {"in_channels": 3}}})
    with pytest.raises(ValueError, match=r"net\.overrides\['learn_sigma'\].*method\.learn_sigma"):
        TrainConfig.from_dict({"net": {"preset": "tiny", "overrides": {"learn_sigma": True}},
                               "method": {"name": "vp"}})
    # a DiT's own arguments are allowed for a DiT preset, not for a U-Net
    TrainConfig.from_dict({"net": {"preset": "dit-tiny", "overrides": {"depth": 1}}})
    with pytest.raises(ValueError, match=r"net\.overrides.*'depth'.*arguments of preset 'tiny'"):
        TrainConfig.from_dict({"net": {"preset": "tiny", "overrides": {"depth": 1}}})


def test_unknown_keys_and_versions_are_refused():
    with pytest.raises(ValueError, match=r"section 'data'.*\['foo'\].*allowed.*'dataset'"):
        TrainConfig.from_dict({"version": 2, "data": {"foo": 1}})
    with pytest.raises(ValueError, match=r"section 'run'.*\['stepz'\].*'steps'"):
        TrainConfig.from_dict({"version": 2, "run": {"stepz": 3}})
    with pytest.raises(ValueError, match=r"config keys \['extras'\] are unknown"):
        TrainConfig.from_dict({"version": 2, "extras": {}})
    with pytest.raises(ValueError, match="config version=3"):
        TrainConfig.from_dict({"version": 3})
    with pytest.raises(ValueError, match=r"optim\.lr='fast' has the wrong type"):
        TrainConfig.from_dict({"version": 2, "optim": {"lr": "fast"}})
    with pytest.raises(ValueError, match="allowed a dict"):
        TrainConfig.from_dict(["not", "a", "dict"])


def test_to_dict_is_strict_json_with_inf_as_a_string():
    cfg = TrainConfig.flat(method="patched", snr_interval=(math.inf, 0.25), patch_size=2,
                           grad_clip=None, kimg=1.5)
    d = cfg.to_dict()
    text = json.dumps(d, allow_nan=False)
    assert d["method"]["snr_interval"] == ["inf", 0.25] and "Infinity" not in text
    back = TrainConfig.from_dict(json.loads(text))
    assert back == cfg and back.method.snr_interval == (math.inf, 0.25)
    assert set(d) == {"version", "data", "net", "method", "optim", "run"}


def test_run_is_exactly_the_section_that_may_change_on_resume():
    assert set(TrainConfig.__dataclass_fields__) == {"data", "net", "method", "optim", "run"}
    assert {f.name for f in dataclasses.fields(RunConfig)} >= {"steps", "out_dir", "resume", "device", "amp"}
    assert "seed" in {f.name for f in dataclasses.fields(OptimConfig)}


def test_tuple_valued_net_overrides_round_trip():
    cfg, _ = config_from_args(["--net.preset", "tiny", "--net.overrides", "channel_mult", "[1, 2]"])
    assert cfg.net.overrides == {"channel_mult": (1, 2)}
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


# ----------------------------------------------------------------------------------------------
# The CLI.

@pytest.fixture
def wide(monkeypatch):
    """A wide terminal, so that help lines do not wrap inside the phrases looked for."""
    monkeypatch.setenv("COLUMNS", "400")


def test_cli_help_exits_0_and_shows_every_section_with_comments(capsys, wide):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--data.dataset", "--net.preset", "--net.overrides", "--method.name",
                 "--method.sigma-data", "--optim.batch-size", "--optim.ema-half-life-images",
                 "--run.steps", "--run.out-dir", "--run.resume"):
        assert flag in text, flag
    for comment in ("GLOBAL images per optimizer step", "expected standard deviation of the data",
                    "optimizer steps to train", "data set of pdlib.data.load_dataset"):
        assert comment in text, comment
    assert "--method.prediction" not in text                      # EDM's options only
    assert "dit-tiny" in text and "vp" in text                    # the presets and methods


def test_cli_help_of_a_method_lists_its_options(capsys, wide):
    with pytest.raises(SystemExit) as e:
        main(["--method.name", "vp", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--method.prediction", "--method.snr-interval", "--method.weighting",
                 "--method.learn-sigma"):
        assert flag in text, flag
    assert "--method.sigma-data" not in text
    assert "SNR splitting" in text


def test_cli_parses_tuples_none_and_dicts():
    cfg, _ = config_from_args(["--method.name", "vp", "--method.snr-interval", "inf", "0.25"])
    assert type(cfg.method) is VPOptions and cfg.method.snr_interval == (math.inf, 0.25)
    cfg, _ = config_from_args(["--method.name", "vp", "--method.snr-interval", "None"])
    assert cfg.method.snr_interval is None
    cfg, _ = config_from_args(["--net.overrides", "patch_size", "2", "dropout", "0.1"])
    assert cfg.net.overrides == {"patch_size": 2, "dropout": 0.1}
    assert isinstance(cfg.net.overrides["patch_size"], int)
    cfg, _ = config_from_args(["--net.preset", "dit-tiny", "--net.overrides", "depth", "1",
                               "--optim.grad-clip", "None", "--run.kimg", "2.5"])
    assert cfg.net == NetConfig("dit-tiny", {"depth": 1})
    assert cfg.optim.grad_clip is None and cfg.run.kimg == 2.5
    cfg, flags = config_from_args([])
    assert cfg == TrainConfig() and not flags.no_progress and flags.config is None


def test_cli_config_file_then_flags_win(tmp_path):
    f = tmp_path / "c.json"
    f.write_text(json.dumps(TrainConfig.flat(method="vp", weighting="p2", lr=1e-3, steps=9,
                                             preset="tiny", patch_size=2).to_dict()))
    cfg, _ = config_from_args(["--config", str(f), "--run.steps", "3", "--optim.lr", "0.002",
                               "--net.overrides", "dropout", "0.1"])
    assert (cfg.method.name, cfg.method.weighting) == ("vp", "p2")        # from the file
    assert (cfg.run.steps, cfg.optim.lr) == (3, 0.002)                     # the flags win
    assert cfg.net == NetConfig("tiny", {"patch_size": 2, "dropout": 0.1})  # overrides are merged
    # a committed flat (pdlib 0.1) config works as --config too
    old = ROOT / "results/ch03_full/split-s0-model1.config.json"
    cfg, _ = config_from_args(["--config", str(old), "--method.weighting", "p2"])
    assert cfg.method.snr_interval == (0.25, 0.0) and cfg.method.weighting == "p2"
    # naming another method than the file's starts from that method's defaults
    cfg, _ = config_from_args(["--config", str(f), "--method.name", "edm"])
    assert cfg.method == EDMOptions() and cfg.optim.lr == 1e-3


@pytest.mark.parametrize("argv, named", [
    (["--optim.lr", "-1"], "optim.lr=-1"),
    (["--method.name", "nope"], "method.name='nope'"),
    (["--method.name", "vp", "--method.weighting", "cubic"], "method.weighting='cubic'"),
    (["--net.preset", "huge"], "net.preset='huge'"),
    (["--net.overrides", "patch_size"], "--net.overrides"),
    (["--run.amp", "fp8"], "run.amp='fp8'"),
    (["--config", "/nonexistent/c.json"], "--config="),
])
def test_cli_bad_value_is_one_error_line_and_code_2(argv, named, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = [ln for ln in captured.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("pdlib.train: error: "), captured.err
    assert named in lines[0]
    assert captured.out == ""


def test_cli_unparsable_value_exits_2_naming_the_flag(capsys, wide):
    """A value tyro cannot parse (or a flag the method does not have): exit status 2."""
    for argv, flag in ((["--run.steps", "abc"], "--run.steps"),
                       (["--method.weighting", "p2"], "--method.weighting")):   # EDM has no weighting
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code
        assert code == 2
        assert flag in capsys.readouterr().err


def test_cli_unparsable_value_is_one_error_line(capsys):
    assert main(["--run.steps", "abc"]) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("pdlib.train: error: ") and "run.steps" in lines[0]


def test_python_m_pdlib_train_trains_edm_on_a_dit(tmp_path, capsys):
    from pdlib.pretrained import load_method
    assert main(["--net.preset", "dit-tiny", "--data.dataset", "digits", "--data.resolution", "8",
                 "--optim.batch-size", "16", "--run.steps", "2", "--run.out-dir", str(tmp_path),
                 "--run.sample-n", "4", "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step"] == 2 and math.isfinite(summary["loss"])
    latest = tmp_path / "latest.pt"
    assert latest.is_file() and (tmp_path / "samples" / "0000002.png").is_file()
    m = load_method(latest)
    assert m.name == "edm" and type(m.net).__name__ == "DiT" and m.cfg.net.preset == "dit-tiny"
    x = m.sample(3, generator=torch.Generator().manual_seed(0), steps=3)
    assert x.shape == (3, 1, 8, 8) and torch.isfinite(x).all()
