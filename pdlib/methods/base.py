"""The Method base class: a network F, its denoiser D(x, σ, **cond), a loss and a sampler.

A method is one file of this package: a frozen options dataclass (a subclass of `MethodOptions`,
a comment on every field) and a `Method` subclass registered under a name with
`@register("name", Options)`. Everything a method needs comes from a resolved
`pdlib.config.TrainConfig` (its `data`, `net` and `method` sections), so a checkpoint's saved
config alone rebuilds it. The hooks a method may override:

- `resolve(cfg)`: fill the config fields this method decides (saved explicitly with the run);
- `net_kwargs()`: the network arguments the method and the data fix (channels, classes, σ output);
- `build_denoiser(net)`, `build_loss()`: F → D and the per-item loss;
- `prepare_batch(images, labels, generator)`: a data batch → what the loss sees (`Batch`), e.g.
  random crops plus coordinates, many small patches, tiles, blurred targets; it says how many
  images the batch holds, which is the loss's per-image normaliser;
- `sample(n, ...)`: images from noise (`samples_alone = False` for a method that cannot);
- `begin_step(step, n_steps, generator)`: the training progress and a generator of the step, for
  batches that depend on them (Patch Diffusion: one patch size per step, the progressive schedule).
  The default ignores them; pdlib.train does not call it yet.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

__all__ = ["MethodOptions", "Method", "Batch", "METHODS", "register", "method_class"]

METHODS: dict[str, type["Method"]] = {}


@dataclass(frozen=True)
class MethodOptions:
    """Options every method has; a method's own options dataclass subclasses this one."""
    name: str = ""                          # the method: a key of pdlib.methods.METHODS ('edm', 'vp', 'patched', ...)
    label_dropout: float | None = None      # P(label → null label) for classifier-free guidance; None = 0.1 if data.class_cond else 0


def register(name: str, options: type[MethodOptions]):
    """Class decorator: make a Method subclass (with its options dataclass) a method `name`."""
    if not (dataclasses.is_dataclass(options) and issubclass(options, MethodOptions)):
        raise TypeError(f"options={options!r}: allowed a frozen dataclass subclassing MethodOptions")
    if options.__dataclass_fields__["name"].default != name:
        raise TypeError(f"{options.__name__}.name defaults to "
                        f"{options.__dataclass_fields__['name'].default!r}; it must default to {name!r}")

    def deco(cls):
        cls.name, cls.Options = name, options
        METHODS[name] = cls
        return cls
    return deco


def method_class(name) -> type["Method"]:
    """The registered Method class of `name` (ValueError naming the allowed ones)."""
    if name not in METHODS:
        raise ValueError(f"method.name={name!r} is unknown; allowed: {sorted(METHODS)}")
    return METHODS[name]


@dataclass
class Batch:
    """What one micro-batch gives the loss (the output of `Method.prepare_batch`)."""
    x0: torch.Tensor                        # (b, C, h, w) clean targets the loss denoises
    cond: dict = field(default_factory=dict)   # keyword conditioning of D (class_labels, extra, ...)
    n_images: int = 0                       # images this batch holds: the loss sum is divided by it


class Method:
    """A diffusion method: net F, denoiser D(x, σ, **cond), loss, prepare_batch and sample()."""

    name: ClassVar[str] = "base"
    Options: ClassVar[type[MethodOptions]] = MethodOptions
    default_sample_steps: ClassVar[int] = 18    # sampler steps when sample(steps=None)
    threshold_guided: ClassVar[bool] = False    # sample(guidance != 1): dynamic thresholding of x̂0 too
    samples_alone: ClassVar[bool] = True        # sample() makes images from noise by itself
    samplers: ClassVar[tuple[str, ...]] = ()    # the sampler names sample(sampler=…) accepts, default first
    net_families: ClassVar[tuple[str, ...] | None] = None   # net families it can use ('unet', 'dit', 'fpdm'); None = any
    default_preset: ClassVar[str | None] = None  # the preset a switch to this method picks when the current one cannot be used

    def __init__(self, cfg):
        data = cfg.data
        for key in ("img_channels", "resolution"):
            if getattr(data, key) is None:
                raise ValueError(f"data.{key}=None: a method needs the data shape; allowed: an int "
                                 "(train() and resolve_config fill it from the data set)")
        if not isinstance(cfg.method, self.Options):
            raise ValueError(f"method options {type(cfg.method).__name__} do not belong to "
                             f"method {self.name!r}; allowed: {self.Options.__name__}")
        self.cfg = cfg
        self.opts = cfg.method
        self.img_channels = int(data.img_channels)                    # C
        self.resolution = int(data.resolution)                        # H = W
        self.class_cond = bool(data.class_cond)
        if self.class_cond and not data.num_classes:
            raise ValueError(f"data.class_cond=True but data.num_classes={data.num_classes!r}; "
                             "allowed: class_cond=False, or data with labels")
        self.num_classes = int(data.num_classes) if self.class_cond else None
        self.null_label = self.num_classes                            # the extra embedding row
        self.label_dropout = float(self.opts.label_dropout or 0.0) if self.class_cond else 0.0
        self.net = self.build_net()
        self.denoiser = self.build_denoiser(self.net)
        self.loss_fn = self.build_loss()

    # -- what a subclass overrides -------------------------------------------------------------
    @classmethod
    def resolve(cls, cfg):
        """The config with the fields this method decides filled in (data shape already filled)."""
        if cfg.method.label_dropout is None:
            cfg = cfg.replace(label_dropout=0.1 if cfg.data.class_cond else 0.0)
        return cfg

    @classmethod
    def validate(cls, cfg) -> None:
        """Raise ValueError for a combination of sections this method cannot use (the base: a
        net preset of a family outside `net_families`)."""
        if cls.net_families is not None:
            from pdlib.nets import NET_PRESETS, preset_family
            if preset_family(cfg.net.preset) not in cls.net_families:
                ok = sorted(n for n, (fam, _) in NET_PRESETS.items() if fam in cls.net_families)
                raise ValueError(f"net.preset={cfg.net.preset!r} is invalid for method {cls.name!r}; "
                                 f"allowed: one of {ok}")

    def net_kwargs(self) -> dict[str, Any]:
        """Network arguments fixed by the data and the method (they win over net.overrides)."""
        return dict(in_channels=self.img_channels, resolution=self.resolution,
                    num_classes=self.num_classes)

    def build_net(self) -> nn.Module:
        """The network of the net section: preset + overrides + this method's net_kwargs."""
        from pdlib.nets import net_preset
        return net_preset(self.cfg.net.preset, **{**self.cfg.net.overrides, **self.net_kwargs()})

    def build_denoiser(self, net: nn.Module) -> nn.Module:
        raise NotImplementedError

    def build_loss(self):
        raise NotImplementedError

    def prepare_batch(self, images: torch.Tensor, labels: torch.Tensor | None,
                      generator: torch.Generator | None = None) -> Batch:
        """A data micro-batch (images (m, C, H, W) in [-1, 1], labels (m,) or None) → the loss's
        Batch. Labels are dropped to the null label with probability label_dropout
        (classifier-free guidance, Ho & Salimans 2022)."""
        cond = {}
        if self.class_cond:
            if labels is None:
                raise ValueError("labels=None but the method is class-conditional; allowed: int64 [B]")
            if self.label_dropout > 0:
                from pdlib.losses import drop_labels
                labels = drop_labels(labels, self.label_dropout, self.null_label, generator)
            cond["class_labels"] = labels
        return Batch(x0=images, cond=cond, n_images=len(images))

    def loss(self, batch: Batch, generator: torch.Generator | None = None,
             denoiser: nn.Module | None = None) -> torch.Tensor:
        """Per-item losses [b] of a prepared batch (the loop divides their sum by batch.n_images)."""
        D = self.denoiser if denoiser is None else denoiser
        return self.loss_fn(D, batch.x0, generator=generator, **batch.cond)

    def sample(self, n: int, generator: torch.Generator | None = None, steps: int | None = None,
               class_labels: torch.Tensor | None = None, guidance: float = 1.0,
               device=None, callback=None, **kwargs) -> torch.Tensor:
        """n images (n, C, H, W) in [-1, 1] from noise drawn with generator."""
        raise NotImplementedError(f"method {self.name!r} cannot sample by itself")

    def begin_step(self, step: int, n_steps: int, generator: torch.Generator | None = None) -> None:
        """Optimizer step `step` (0-based) of `n_steps` is about to prepare its batches; `generator`
        is the step's own (the same on every rank and accumulation round). The training loop calls it
        before each step's micro-batches; the default ignores it."""

    def step_multiplier(self) -> int:
        """Images this step draws per optim.batch_size image, asked after begin_step: the loop
        gives prepare_batch this many times the micro-batch's images (Patch Diffusion's small-patch
        steps, which hold more images at the cost of one full-size step). Default 1."""
        return 1

    # -- shared ----------------------------------------------------------------------------------
    @property
    def img_shape(self) -> tuple[int, int, int]:
        return (self.img_channels, self.resolution, self.resolution)

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device

    def to(self, device) -> "Method":
        self.denoiser.to(device)
        return self

    def parameters(self):
        return self.denoiser.parameters()

    def state_dict(self) -> dict:
        return self.denoiser.state_dict()

    def load_state_dict(self, state: dict, strict: bool = True):
        return self.denoiser.load_state_dict(state, strict=strict)

    def _sample_setup(self, n, generator, class_labels, guidance, device):
        """(denoiser, cond, device): class labels default to 0, 1, …, K−1, 0, …; CFG wraps D."""
        if device is None:
            device = self.device
        device = torch.device(device)
        D = self.denoiser
        cond = {}
        if self.class_cond:
            if class_labels is None:
                class_labels = torch.arange(n) % self.num_classes
            cond["class_labels"] = torch.as_tensor(class_labels, dtype=torch.int64, device=device)
            if guidance != 1.0:
                from pdlib.denoisers import CFGDenoiser, DynamicThreshold
                D = CFGDenoiser(D, guidance, self.null_label)
                if self.threshold_guided:
                    D = DynamicThreshold(D)
        elif guidance != 1.0:
            raise ValueError(f"guidance={guidance!r} needs a class-conditional method; allowed: 1.0")
        return D, cond, device

    def _noise(self, n, sigmas, generator, device, vp: bool, shape=None) -> torch.Tensor:
        """Starting state at σ0 (float64): σ0·ε (EDM) or √(1+σ0²)·ε (VP, x_T ~ N(0, I)), of n
        images of `shape` (C, H, W; default img_shape)."""
        from pdlib.samplers import prior_sample
        shape = self.img_shape if shape is None else tuple(shape)
        return prior_sample((n, *shape), sigmas, generator=generator, vp=vp,
                            device=device, dtype=torch.float64)

    def __repr__(self) -> str:
        nparams = sum(p.numel() for p in self.parameters())
        return (f"{type(self).__name__}(name={self.name!r}, net={self.cfg.net.preset!r}, "
                f"img_shape={self.img_shape}, class_cond={self.class_cond}, params={nparams:,})")
