"""Fixed Point Diffusion Models (Bai & Melas-Kyriazi, CVPR 2024): the `fpdm` method.

VP diffusion (v-prediction on a zero-terminal-SNR linear schedule, as the release) with a
`pdlib.nets.FixedPointDiT` (an `fpdm-*` net preset). Training draws, per batch, k1 ~ U{k1_range}
iterations without gradient and k2 ~ U{k2_range} with (the release: U{0..10} and U{1..12}), from
the step's own generator, so a resumed run draws the same. Sampling (DDIM or DDPM: one net call
per step) runs `iters` iterations per step with Picard or Anderson, or reallocates a total budget
of steps × iters across the steps (`reallocation`), and may start each step from the previous
step's solution (`reuse`). Guidance is classifier-free with label dropout (MethodOptions).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from pdlib.methods.base import register
from pdlib.methods.vp import VPMethod, VPOptions

__all__ = ["FPDMOptions", "FPDMMethod"]


def _check_range(name, value) -> None:
    from pdlib._checks import check, is_int
    ok = (isinstance(value, (tuple, list)) and len(value) == 2 and all(is_int(v) for v in value)
          and 0 <= value[0] <= value[1])
    check(ok, f"method.{name}", value, "(lo, hi) integers with 0 <= lo <= hi (a non-empty range)")


@dataclass(frozen=True)
class FPDMOptions(VPOptions):
    """Options of FPDM: VP options (v-prediction and zero terminal SNR by default) plus the solver's."""
    name: str = "fpdm"                      # the method
    prediction: str = "v"                   # network target (the release: v)
    zero_snr: bool = True                   # zero terminal SNR (the release: on)
    k1_range: tuple[int, int] = (0, 10)     # training: iterations without gradient, k1 ~ U{lo..hi} per batch
    k2_range: tuple[int, int] = (1, 12)     # training: iterations with gradient, k2 ~ U{lo..hi} per batch
    solver: str = "picard"                  # sampling solver: 'picard' or 'anderson'
    tol: float | None = None                # sampling: stop a solve once the relative residual < tol; None = all iterations
    iters: int | None = None                # sampling: iterations per step; None = the net preset's (depth-matched)
    budget: int | None = None               # sampling: total iterations over all steps; None = steps × iters
    reallocation: str = "fixed"             # how the budget is spread over the steps: 'fixed', 'increasing', 'decreasing'
    reuse: bool = False                     # sampling: start each step's solve from the previous step's solution
    anderson_m: int = 5                     # Anderson: iterates kept

    def validate(self) -> None:
        super().validate()
        from pdlib._checks import check, is_int, is_num
        from pdlib.nets.fixed_point import REALLOCATIONS, SOLVERS
        _check_range("k1_range", self.k1_range)
        _check_range("k2_range", self.k2_range)
        check(self.k2_range[0] >= 1, "method.k2_range", self.k2_range,
              "lo >= 1: every batch backpropagates through at least one iteration")
        check(self.solver in SOLVERS, "method.solver", self.solver, f"one of {sorted(SOLVERS)}")
        check(self.tol is None or (is_num(self.tol) and self.tol > 0), "method.tol", self.tol,
              "None or a finite number > 0")
        check(self.iters is None or (is_int(self.iters) and self.iters >= 1), "method.iters",
              self.iters, "None or an int >= 1")
        check(self.budget is None or (is_int(self.budget) and self.budget >= 1), "method.budget",
              self.budget, "None or an int >= the number of sampling steps")
        check(self.reallocation in REALLOCATIONS, "method.reallocation", self.reallocation,
              f"one of {REALLOCATIONS}")
        check(self.reuse in (True, False), "method.reuse", self.reuse, "True or False")
        check(is_int(self.anderson_m) and self.anderson_m >= 1, "method.anderson_m",
              self.anderson_m, "an int >= 1")


@register("fpdm", FPDMOptions)
class FPDMMethod(VPMethod):
    """FPDM: VPPrecond(FixedPointDiT) + VPLoss; stochastic k1/k2 training; DDIM/DDPM sampling
    with a solver, a per-step iteration plan (reallocation) and solution reuse."""

    samplers = ("ddim", "ddpm")
    net_families = ("fpdm",)
    default_preset = "fpdm-small"

    @classmethod
    def validate(cls, cfg) -> None:
        super().validate(cfg)
        if cfg.method.learn_sigma:
            raise ValueError("method.learn_sigma=True is invalid for method 'fpdm'; allowed: False")

    def net_kwargs(self):
        return {**super().net_kwargs(), "learn_sigma": False}

    def begin_step(self, step, n_steps, generator=None):
        """Draw this batch's (k1, k2) from the step's generator and set them on the net."""
        dev = generator.device if generator is not None else "cpu"
        (a1, b1), (a2, b2) = self.opts.k1_range, self.opts.k2_range
        k1 = int(torch.randint(a1, b1 + 1, (1,), generator=generator, device=dev))
        k2 = int(torch.randint(a2, b2 + 1, (1,), generator=generator, device=dev))
        self.net.train_iterations = (k1, k2)

    def iteration_plan(self, steps: int, iters: int | None = None, budget: int | None = None,
                       reallocation: str | None = None) -> list[int]:
        """Iterations per sampling step (noisiest first): budget (default steps × iters) spread
        by the reallocation mode; pdlib.nets.fixed_point.allocate_iterations."""
        from pdlib._checks import check, is_int
        from pdlib.nets.fixed_point import allocate_iterations
        o = self.opts
        iters = iters if iters is not None else (o.iters if o.iters is not None else self.net.iters)
        check(is_int(iters) and iters >= 1, "iters", iters, "an int >= 1")
        budget = budget if budget is not None else (o.budget if o.budget is not None else steps * iters)
        return allocate_iterations(budget, steps, reallocation or o.reallocation)

    def sample(self, n, generator=None, steps=None, class_labels=None, guidance=1.0,
               device=None, callback=None, sampler: str = "ddim", iters: int | None = None,
               budget: int | None = None, reallocation: str | None = None, reuse: bool | None = None,
               solver: str | None = None, tol: float | None = None, **kwargs):
        """DDIM (η = 0) or DDPM over `steps` respaced steps; each step solves the implicit layer with
        the plan's iterations (`iteration_plan`); None takes the method's options. The residuals
        of every solve are in `self.net.trace` afterwards."""
        if sampler not in self.samplers:
            raise ValueError(f"sampler={sampler!r} is invalid for method 'fpdm'; allowed: "
                             f"{list(self.samplers)} (one net call per step)")
        o = self.opts
        steps = steps or self.default_sample_steps
        plan = self.iteration_plan(steps, iters, budget, reallocation)
        solver_kwargs = {"m": o.anderson_m} if (solver or o.solver) == "anderson" else {}
        with self.net.solving(plan, solver=solver or o.solver, tol=o.tol if tol is None else tol,
                              reuse=o.reuse if reuse is None else reuse, **solver_kwargs):
            return super().sample(n, generator, steps, class_labels, guidance, device, callback,
                                  sampler, **kwargs)
