"""A run's configuration in five sections: data / net / method / optim / run.

    cfg = TrainConfig.flat(method="patched", preset="small", weighting="p2", steps=2000)
    cfg = TrainConfig(net=NetConfig("DiT-S/4"), method=EDMOptions(), run=RunConfig(steps=500))
    python -m pdlib.train --method.name patched --method.weighting p2 --net.preset DiT-S/4

- `data`: which images (`DataConfig`); `net`: a preset of the one registry of U-Net and DiT
  presets plus keyword overrides (`NetConfig`); `method`: the options dataclass that the chosen
  method registered (`pdlib.methods`, e.g. `EDMOptions`, `PatchedOptions`); `optim`: the
  optimisation and the seed (`OptimConfig`); `run`: how long, where, on what, how often to log —
  exactly the fields that may change when a run resumes (`RunConfig`).
- Each section validates itself; an option that does not belong to the chosen method is an error
  that names it and lists the method's options.
- Dicts (saved configs, JSON files, a notebook's flat parameters) go through `migrate`, which also
  turns the flat configs of pdlib ≤ 0.1 (one list of ~40 fields, SNR-split methods named
  'patched-snr:inf>0.25') into sections; `TrainConfig.from_dict` always calls it, so every
  checkpoint and committed `results/**/*.config.json` loads.

dict → dataclass conversion is dacite's (typed, strict); the CLI is tyro's (`pdlib.train.cli`):
both read these dataclasses, and tyro shows each field's trailing comment as its help.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pdlib._checks import check, is_int, is_num
from pdlib.methods import METHODS, EDMOptions, MethodOptions, method_class

__all__ = ["DataConfig", "NetConfig", "OptimConfig", "RunConfig", "TrainConfig", "migrate",
           "resolve_config", "CONFIG_VERSION", "AMP_MODES", "SECTIONS"]

CONFIG_VERSION = 2
AMP_MODES = ("none", "bf16", "fp16", "auto")


@dataclass(frozen=True)
class DataConfig:
    """Which images: the data set, its resolution and subset, and whether labels condition."""
    dataset: str = "fashion_mnist"          # data set of pdlib.data.load_dataset ('fashion_mnist', 'emoji', 'digits')
    resolution: int | None = None           # image side in pixels; None = the data set's default (filled in when training)
    n_data: int | None = None               # train on a random subset of this many images (drawn with optim.seed); None = all
    class_cond: bool = False                # condition the network on the class labels
    img_channels: int | None = None         # image channels C; None = from the data set (filled in when training)
    num_classes: int | None = None          # number of classes; None = from the data set (filled in when training)

    def validate(self) -> None:
        from pdlib.data import IMAGE_DATASETS
        check(self.dataset in IMAGE_DATASETS, "data.dataset", self.dataset, f"one of {sorted(IMAGE_DATASETS)}")
        for name in ("resolution", "n_data", "img_channels", "num_classes"):
            v = getattr(self, name)
            check(v is None or (is_int(v) and v >= 1), f"data.{name}", v, "None or an int >= 1")
        check(isinstance(self.class_cond, bool), "data.class_cond", self.class_cond, "True or False")


@dataclass(frozen=True)
class NetConfig:
    """The network: a preset of pdlib.nets.NET_PRESETS (U-Net or DiT) plus overrides."""
    preset: str = "small"                   # U-Net ('tiny', 'small', 'base', 'luhman-p2/p4/p8') or DiT ('dit-tiny', 'dit-small', 'DiT-S/2' … 'DiT-XL/8') preset
    overrides: dict[str, Any] = field(default_factory=dict)   # constructor arguments over the preset, e.g. {"patch_size": 4, "dropout": 0.1}; the data and method fix channels, classes and learn_sigma

    FIXED: ClassVar[tuple[str, ...]] = ("in_channels", "resolution", "num_classes", "extra_in_channels",
                                        "learn_sigma")

    def __post_init__(self):
        if isinstance(self.overrides, dict):        # JSON lists and CLI tuples compare equal
            object.__setattr__(self, "overrides", {k: tuple(v) if isinstance(v, list) else v
                                                   for k, v in self.overrides.items()})

    def validate(self) -> None:
        from pdlib.nets import NET_PRESETS, net_arguments
        check(self.preset in NET_PRESETS, "net.preset", self.preset, f"one of {sorted(NET_PRESETS)}")
        check(isinstance(self.overrides, dict) and all(isinstance(k, str) for k in self.overrides),
              "net.overrides", self.overrides, "a dict of constructor arguments")
        allowed = sorted(net_arguments(self.preset) - set(self.FIXED))
        for k in self.overrides:
            if k in self.FIXED:
                raise ValueError(f"net.overrides[{k!r}]={self.overrides[k]!r}: the data and the "
                                 f"method set {k} (learn_sigma: method.learn_sigma of the VP "
                                 f"methods); allowed keys: {allowed}")
            check(k in allowed, "net.overrides", k, f"arguments of preset {self.preset!r}: {allowed}")
        for k in ("patch_size",):
            v = self.overrides.get(k)
            check(v is None or (is_int(v) and v >= 1), f"net.overrides[{k!r}]", v, "None or an int >= 1")
        v = self.overrides.get("dropout")
        check(v is None or (is_num(v) and 0 <= v < 1), "net.overrides['dropout']", v,
              "None or a float in [0, 1)")

    def with_overrides(self, **kw) -> "NetConfig":
        """This net with some overrides added (a value None removes that override)."""
        o = {**self.overrides, **kw}
        return dataclasses.replace(self, overrides={k: v for k, v in o.items() if v is not None})


@dataclass(frozen=True)
class OptimConfig:
    """Optimisation: batch, AdamW, warm-up, clipping, EMA, and the seed of all randomness."""
    batch_size: int = 64                    # GLOBAL images per optimizer step (all ranks × accumulation rounds)
    grad_accum: int = 1                     # accumulation rounds per step; micro-batch = batch_size/(world·grad_accum)
    lr: float = 5e-4                        # AdamW learning rate after warm-up
    weight_decay: float = 0.0               # AdamW decoupled weight decay
    warmup_steps: int = 100                 # linear lr warm-up: lr·min(1, (step+1)/warmup_steps); 0 = none
    grad_clip: float | None = 1.0           # clip the global gradient norm to this; None = no clipping
    ema_half_life_images: float = 500_000   # EMA half-life in images: β = 0.5^(batch_size/half_life); 0 = no EMA (copy)
    ema_rampup: float | None = 0.05         # EDM ramp-up: half-life ≤ ema_rampup·(images seen); None = off
    seed: int = 0                           # seeds the init, the data order and all noise

    def validate(self) -> None:
        for name in ("batch_size", "grad_accum"):
            v = getattr(self, name)
            check(is_int(v) and v >= 1, f"optim.{name}", v, "an int >= 1")
        for name in ("warmup_steps", "seed"):
            v = getattr(self, name)
            check(is_int(v) and v >= 0, f"optim.{name}", v, "an int >= 0")
        check(self.batch_size % self.grad_accum == 0, "optim.batch_size", self.batch_size,
              f"a multiple of optim.grad_accum={self.grad_accum} (batch_size is the global batch per step)")
        check(is_num(self.lr) and self.lr > 0, "optim.lr", self.lr, "a finite float > 0")
        check(is_num(self.weight_decay) and self.weight_decay >= 0, "optim.weight_decay",
              self.weight_decay, "a finite float >= 0")
        check(self.grad_clip is None or (is_num(self.grad_clip) and self.grad_clip > 0),
              "optim.grad_clip", self.grad_clip, "None or a float > 0")
        check(is_num(self.ema_half_life_images) and self.ema_half_life_images >= 0,
              "optim.ema_half_life_images", self.ema_half_life_images, "a float >= 0 (0: no EMA)")
        check(self.ema_rampup is None or (is_num(self.ema_rampup) and self.ema_rampup > 0),
              "optim.ema_rampup", self.ema_rampup, "None or a float > 0")


@dataclass(frozen=True)
class RunConfig:
    """How long, where and on what: exactly the fields that may change when a run resumes."""
    steps: int = 2000                       # optimizer steps to train (total, counting resumed ones)
    kimg: float | None = None               # train for this many thousand images instead (overrides steps)
    max_minutes: float | None = None        # also stop at the first log line past this many minutes of training (equal wall-clock runs); None = no limit
    init_from: str | None = None            # start a NEW run from this checkpoint's raw weights (model and EMA; fresh optimizer); unused when resuming
    log_every: int = 50                     # steps between metrics.jsonl lines (and progress-bar updates)
    sample_every: int = 500                 # steps between EMA sample grids in out_dir/samples/; 0 = only at the end
    sample_n: int = 36                      # images per sample grid (fixed noise seed)
    sample_steps: int | None = None         # sampler steps for the grids; None = the method's default
    ckpt_every: int = 500                   # steps between checkpoints; 0 = only at the end
    ckpt_keep: int | None = None            # keep only this many numbered checkpoints; None = all
    out_dir: str | None = "runs/default"    # run folder (metrics, samples, checkpoints); None = write nothing
    resume: str = "auto"                    # 'auto': continue from out_dir/latest.pt if present; 'never'; or a checkpoint path
    overwrite: bool = False                 # a new run into an out_dir holding another run's checkpoints/metrics/samples: move that run into out_dir/.old-<time>/ first (False: refuse)
    max_nonfinite_steps: int | None = 10    # stop (DivergenceError) after this many steps in a row with a NaN/inf loss or gradient norm (a lone one is zeroed and counted); None = never stop on them
    device: str = "auto"                    # 'auto' (cuda:LOCAL_RANK if available, else cpu), 'cpu', 'cuda', 'cuda:N', 'mps'
    compile: bool = False                   # torch.compile the network's forward
    amp: str = "auto"                       # autocast: 'none' | 'bf16' | 'fp16' (CUDA, GradScaler) | 'auto' (CUDA: bf16 if supported else fp16; CPU: none)

    def validate(self) -> None:
        for name in ("log_every", "sample_n"):
            v = getattr(self, name)
            check(is_int(v) and v >= 1, f"run.{name}", v, "an int >= 1")
        for name in ("steps", "sample_every", "ckpt_every"):
            v = getattr(self, name)
            check(is_int(v) and v >= 0, f"run.{name}", v, "an int >= 0")
        for name in ("sample_steps", "ckpt_keep"):
            v = getattr(self, name)
            check(v is None or (is_int(v) and v >= 1), f"run.{name}", v, "None or an int >= 1")
        check(self.kimg is None or (is_num(self.kimg) and self.kimg > 0), "run.kimg", self.kimg,
              "None or a number > 0")
        check(self.max_minutes is None or (is_num(self.max_minutes) and self.max_minutes > 0),
              "run.max_minutes", self.max_minutes, "None or a number > 0")
        check(self.init_from is None or (isinstance(self.init_from, str) and self.init_from != ""),
              "run.init_from", self.init_from, "None or a checkpoint path")
        check(self.out_dir is None or (isinstance(self.out_dir, str) and self.out_dir != ""),
              "run.out_dir", self.out_dir, "None or a folder path")
        check(isinstance(self.resume, str) and self.resume != "", "run.resume", self.resume,
              "'auto', 'never' or a checkpoint path")
        check(isinstance(self.device, str) and re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", self.device) is not None,
              "run.device", self.device, "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
        check(isinstance(self.compile, bool), "run.compile", self.compile, "True or False")
        check(isinstance(self.overwrite, bool), "run.overwrite", self.overwrite, "True or False")
        check(self.max_nonfinite_steps is None or (is_int(self.max_nonfinite_steps) and self.max_nonfinite_steps >= 1),
              "run.max_nonfinite_steps", self.max_nonfinite_steps, "None or an int >= 1")
        check(self.amp in AMP_MODES, "run.amp", self.amp, f"one of {AMP_MODES}")


SECTIONS: dict[str, type] = {"data": DataConfig, "net": NetConfig, "optim": OptimConfig, "run": RunConfig}


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run needs, in sections; saved (fully resolved, as `to_dict()`) with every
    checkpoint. Build one from sections, from a dict (`from_dict`, any saved version) or from
    flat keywords (`flat`)."""
    data: DataConfig = field(default_factory=DataConfig)        # which images
    net: NetConfig = field(default_factory=NetConfig)           # the network: a preset plus overrides
    method: MethodOptions = field(default_factory=EDMOptions)   # the method and its options (pdlib.methods)
    optim: OptimConfig = field(default_factory=OptimConfig)     # optimisation and the seed
    run: RunConfig = field(default_factory=RunConfig)           # may change on resume

    def __post_init__(self):
        for name, cls in SECTIONS.items():
            check(isinstance(getattr(self, name), cls), name, type(getattr(self, name)).__name__,
                  f"a {cls.__name__}")
            getattr(self, name).validate()
        m = self.method
        check(isinstance(m, MethodOptions), "method", type(m).__name__, "a method's options dataclass")
        cls = method_class(m.name)
        check(type(m) is cls.Options, "method", type(m).__name__,
              f"{cls.Options.__name__} for method.name={m.name!r}")
        check(m.label_dropout is None or (is_num(m.label_dropout) and 0 <= m.label_dropout < 1),
              "method.label_dropout", m.label_dropout, "None or a float in [0, 1)")
        if hasattr(m, "validate"):
            m.validate()
        cls.validate(self)

    # -- conversion ------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Plain JSON-ready data: {'version', 'data', 'net', 'method', 'optim', 'run'}; ±inf as strings."""
        d = {"version": CONFIG_VERSION}
        for name in ("data", "net", "method", "optim", "run"):
            d[name] = _jsonable(dataclasses.asdict(getattr(self, name)))
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """From a sectioned dict, a flat dict of fields, or a config of an earlier version."""
        import dacite
        s = migrate(d)
        conf = dacite.Config(strict=True, cast=[tuple], type_hooks={float: _to_float})
        kw = {}
        for name, sec in SECTIONS.items():
            try:
                kw[name] = dacite.from_dict(sec, s.get(name, {}), config=conf)
            except dacite.DaciteError as e:
                raise ValueError(f"config section {name!r}: {_dacite_message(e, name)}") from None
        mopts = dict(s.get("method", {}))
        name = mopts.setdefault("name", "edm")
        opts_cls = method_class(name).Options
        try:
            kw["method"] = dacite.from_dict(opts_cls, mopts, config=conf)
        except dacite.DaciteError as e:
            raise ValueError(f"config section 'method' ({name}): "
                             f"{_dacite_message(e, 'method', opts_cls)}") from None
        return cls(**kw)

    @classmethod
    def flat(cls, **kw) -> "TrainConfig":
        """From flat keywords, as a notebook's parameters cell writes them: every field name of
        the sections ('dataset', 'preset', 'lr', 'steps', ...), 'method' = the method's name, its
        options by name ('weighting', 'snr_interval', ...), and 'patch_size'/'dropout' as net
        overrides. A name no section and not the method has is an error listing the method's options."""
        return cls.from_dict(kw)

    def replace(self, **changes) -> "TrainConfig":
        """A copy with some fields changed: section objects by section name, or fields by their
        own (flat) names; method='name' switches to that method's default options."""
        secs = {n: getattr(self, n) for n in ("data", "net", "method", "optim", "run")}
        for key, value in changes.items():
            if key in secs and not (key == "method" and isinstance(value, str)):
                secs[key] = value
                continue
            if key == "method":
                if value != secs["method"].name:
                    secs["method"] = method_class(value).Options()
                    secs["net"] = _net_for(method_class(value), secs["net"], "preset" in changes)
                continue
            section = _flat_section(key, type(secs["method"]))
            if section == "net":
                if key == "preset":
                    secs["net"] = dataclasses.replace(secs["net"], preset=value)
                elif key == "overrides":
                    secs["net"] = dataclasses.replace(secs["net"], overrides=dict(value))
                else:
                    secs["net"] = secs["net"].with_overrides(**{key: value})
            else:
                secs[section] = dataclasses.replace(secs[section], **{key: value})
        return TrainConfig(**secs)

    def summary(self) -> str:
        """One line: method / net on data, e.g. 'patched / small on fashion_mnist 32²'."""
        res = f" {self.data.resolution}²" if self.data.resolution else ""
        return f"{self.method.name} / {self.net.preset} on {self.data.dataset}{res}"


def _net_for(cls, net: "NetConfig", preset_given: bool) -> "NetConfig":
    """The net section after switching to method `cls`: its default preset (without overrides)
    when the current preset is of a family the method cannot use and no preset was given."""
    from pdlib.nets import preset_family
    if preset_given or cls.net_families is None or preset_family(net.preset) in cls.net_families:
        return net
    return NetConfig(preset=cls.default_preset)


# ----------------------------------------------------------------------------------------------
# Flat names, old versions, JSON.

_NET_FLAT = ("preset", "overrides", "patch_size", "dropout")


def _names(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _flat_section(key: str, opts_cls: type) -> str:
    """The section of a flat field name (method options checked against the chosen method)."""
    for name, sec in SECTIONS.items():
        if name != "net" and key in _names(sec):
            return name
    if key in _NET_FLAT:
        return "net"
    if key in opts_cls.__dataclass_fields__:
        return "method"
    method = opts_cls.__dataclass_fields__["name"].default
    opts = sorted(k for k in opts_cls.__dataclass_fields__ if k != "name")
    others = sorted({k for s in SECTIONS.values() for k in _names(s) if k != "overrides"}
                    | set(_NET_FLAT))
    raise ValueError(f"option {key!r} does not belong to method {method!r}; its options: {opts} "
                     f"(other sections' fields: {others})")


_SPLIT_NAME = re.compile(r"(?P<base>[a-z0-9_]+)-snr:(?P<hi>inf|[0-9.eE+-]+)>(?P<lo>[0-9.eE+-]+)")
# pdlib ≤ 0.1 saved these VP fields for every method; for EDM they meant nothing at their defaults.
_OLD_VP_DEFAULTS = {"prediction": None, "weighting": None, "learn_sigma": None,
                    "schedule": "linear", "diffusion_steps": 1000}


def migrate(d: dict) -> dict:
    """Any saved or hand-written config → the sectioned dict of version CONFIG_VERSION.

    A dict with a 'version' (or with section dicts) is sectioned already: checked and returned.
    Otherwise it is flat: pdlib ≤ 0.1's saved TrainConfig, or a notebook's keywords. Its fields
    go to their sections; an SNR-split method name 'BASE-snr:HI>LO' becomes method BASE with
    snr_interval (HI, LO); method fields saved as None ('None = the method's default') take
    the method's default; EDM configs drop the VP fields old versions saved at their defaults."""
    if not isinstance(d, dict):
        raise ValueError(f"config={type(d).__name__}: allowed a dict (a JSON object) of config fields")
    if "version" in d or any(isinstance(d.get(k), dict) for k in ("data", "net", "optim", "run")) \
            or isinstance(d.get("method"), dict):
        v = d.get("version", CONFIG_VERSION)
        check(v == CONFIG_VERSION, "config version", v, f"{CONFIG_VERSION} (or a flat config of pdlib ≤ 0.1)")
        unknown = sorted(set(d) - {"version", "data", "net", "method", "optim", "run"})
        if unknown:
            raise ValueError(f"config keys {unknown} are unknown; allowed: version, data, net, "
                             "method, optim, run")
        return {k: v for k, v in d.items() if k != "version"}
    d = dict(d)
    name = d.pop("method", "edm")
    check(isinstance(name, str), "method", name, f"a method name, one of {sorted(METHODS)}")
    out: dict[str, dict] = {s: {} for s in ("data", "net", "method", "optim", "run")}
    m = _SPLIT_NAME.fullmatch(name)
    if m is not None:
        name = m["base"]
        out["method"]["snr_interval"] = (float(m["hi"]), float(m["lo"]))
    opts_cls = method_class(name).Options
    out["method"]["name"] = name
    is_vp = "prediction" in opts_cls.__dataclass_fields__
    for key, value in d.items():
        if not is_vp and key in _OLD_VP_DEFAULTS and value == _OLD_VP_DEFAULTS[key]:
            continue                                    # an old EDM config's meaningless VP fields
        if key == "learn_sigma" and value is False and not is_vp:
            continue
        if value is None and key not in opts_cls.__dataclass_fields__ and key not in _NET_FLAT \
                and not any(key in _names(sec) for sec in SECTIONS.values()):
            continue                                    # None = "not set": an option this method lacks
        section = _flat_section(key, opts_cls)
        if section == "net":
            if key == "preset":
                out["net"]["preset"] = value
            elif key == "overrides":
                out["net"].setdefault("overrides", {}).update(value or {})
            elif value is not None:
                out["net"].setdefault("overrides", {})[key] = value
        elif section == "method" and value is None and \
                opts_cls.__dataclass_fields__[key].default is not None:
            continue                                    # None meant "the method's default"
        else:
            out[section][key] = value
    return out


def _to_float(v):
    if isinstance(v, str) and v.strip().lower() in ("inf", "+inf", "-inf", "infinity", "-infinity"):
        return float(v)
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    return v


def _jsonable(obj):
    """Replace ±inf by the strings 'inf'/'-inf' (strict JSON has no infinity); tuples → lists."""
    if isinstance(obj, float) and math.isinf(obj):
        return "inf" if obj > 0 else "-inf"
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def _dacite_message(e, section: str, cls: type | None = None) -> str:
    import dacite
    cls = cls or SECTIONS.get(section)
    if isinstance(e, dacite.UnexpectedDataError):
        what = "options of this method" if section == "method" else "allowed"
        return (f"keys {sorted(e.keys)} do not belong here; {what}: "
                f"{sorted(k for k in cls.__dataclass_fields__ if k != 'name')}")
    if isinstance(e, dacite.WrongTypeError):
        return f"{section}.{e.field_path}={e.value!r} has the wrong type; allowed: {_type_name(e.field_type)}"
    return str(e)


def _type_name(t) -> str:
    return getattr(t, "__name__", None) or str(t).replace("typing.", "")


def resolve_config(cfg: TrainConfig, data) -> TrainConfig:
    """Fill the data-dependent fields (resolution, channels, classes) from a loaded data set, then
    the fields the method decides (its `resolve`): the config a run saves."""
    cfg = cfg.replace(data=dataclasses.replace(cfg.data, resolution=data.resolution,
                                               img_channels=data.channels,
                                               num_classes=data.num_classes or None))
    return method_class(cfg.method.name).resolve(cfg)
