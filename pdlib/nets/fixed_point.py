"""Fixed Point Diffusion Models (Bai & Melas-Kyriazi, CVPR 2024): a DiT whose middle is one implicit
layer, written anew. The stack is composed with `pdlib.nets.DiT` (its embedders, explicit blocks and
final layer), not switched on by flags inside it:

    x_pre = Blocks_pre(embed(x_in), c_y)                      N_pre explicit DiT blocks
    u     = Linear(x_pre)                                     input injection
    f(z)  = Block_fp(W2·GELU(W1·[z; u]), c_t + c_y)           the fixed-point map (W1: 2D→2D, W2: 2D→D)
    z*    = f(z*)                                             solved, not stacked
    out   = FinalLayer(Blocks_post(z*, c_y), c_t + c_y)       N_post explicit DiT blocks

As in the release, only the implicit block (and the final layer) sees the timestep embedding c_t;
the explicit blocks get the class (and tile-position) embedding c_y alone.

Training (`train_iterations = (k1, k2)`, drawn per batch by the `fpdm` method): k1 Picard
iterations without gradient from z0 = x_pre (detached), then k2 iterations with backpropagation
through them ("stochastic" truncated backprop; the release draws k1 ~ U{0..10}, k2 ~ U{1..12}).
Evaluation: `solve` with Picard or Anderson acceleration, a maximum iteration count and an optional
residual tolerance. Inside `net.solving(iters=[...], reuse=True, ...)` each forward call takes the
next count of a per-step plan (`allocate_iterations`: reallocation of a total budget across the
sampling steps) and may start from the previous call's solution (reuse); `net.trace` records the
residual of every iteration of every call inside it.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check, is_int
from .dit import DiT, DiTBlock
from .layers import build_preset

__all__ = ["FixedPointDiT", "picard", "anderson", "SOLVERS", "SolveInfo", "allocate_iterations",
           "REALLOCATIONS", "FPDM_PRESETS", "fpdm_preset"]

Map = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class SolveInfo:
    """What one solve did: the relative residual ‖f(z) − z‖ / ‖f(z)‖ of each evaluation of f."""
    residuals: list[float] = field(default_factory=list)

    @property
    def iterations(self) -> int:
        return len(self.residuals)


def _relative_residual(fz: torch.Tensor, z: torch.Tensor) -> float:
    """‖f(z) − z‖₂ / ‖f(z)‖₂ over the whole batch (torchdeq's 'rel' stop mode)."""
    return float((fz - z).norm() / (fz.norm() + 1e-5))


def _check_solve_args(max_iter, tol) -> None:
    check(is_int(max_iter) and max_iter >= 0, "iters", max_iter, "an int >= 0")
    check(tol is None or (isinstance(tol, (int, float)) and not isinstance(tol, bool)
                          and math.isfinite(tol) and tol > 0), "tol", tol, "None or a number > 0")


def picard(f: Map, z0: torch.Tensor, max_iter: int, tol: float | None = None,
           record: bool = True, **unused) -> tuple[torch.Tensor, SolveInfo]:
    """Picard (fixed-point) iteration z_{k+1} = f(z_k) from z0, at most max_iter evaluations of f;
    stops early once the relative residual ‖f(z_k) − z_k‖/‖f(z_k)‖ < tol. Returns the last f(z_k).
    record=False (and tol None) skips the residuals (no device sync per iteration: training)."""
    _check_solve_args(max_iter, tol)
    info, z = SolveInfo(), z0
    record = record or tol is not None
    for _ in range(max_iter):
        fz = f(z)
        if not record:
            z = fz
            continue
        info.residuals.append(_relative_residual(fz.detach(), z.detach()))
        z = fz
        if tol is not None and info.residuals[-1] < tol:
            break
    return z, info


def anderson(f: Map, z0: torch.Tensor, max_iter: int, tol: float | None = None, m: int = 5,
             lam: float = 1e-4, beta: float = 1.0, **unused) -> tuple[torch.Tensor, SolveInfo]:
    """Anderson acceleration (Anderson 1965; Walker & Ni 2011) of z = f(z), per sample of the batch.

    Keeps the last m iterates X_i and their images F_i = f(X_i); the next iterate mixes them,
    X_new = β·Σ α_i F_i + (1 − β)·Σ α_i X_i, with α minimising ‖Σ α_i (F_i − X_i)‖² + λ‖α‖²
    subject to Σ α_i = 1 (solved as a bordered linear system). The first two iterates are
    Picard steps. At most max_iter evaluations of f; stops early once the relative residual
    < tol. Returns the last image f(X) (torchdeq's anderson_solver with return_final=True);
    meant for use under no_grad.
    """
    _check_solve_args(max_iter, tol)
    check(is_int(m) and m >= 1, "anderson_m", m, "an int >= 1")
    info = SolveInfo()
    if max_iter == 0:
        return z0, info
    B, shape = z0.shape[0], z0.shape
    X = z0.new_zeros(B, m, z0[0].numel())                      # (B, m, d) iterates
    Fx = torch.zeros_like(X)                                   # (B, m, d) their images f(X)
    H = z0.new_zeros(B, m + 1, m + 1)                          # the bordered normal equations
    H[:, 0, 1:] = H[:, 1:, 0] = 1
    y = z0.new_zeros(B, m + 1, 1)
    y[:, 0] = 1
    last = 0

    def evaluate(k, x):
        nonlocal last
        X[:, k % m] = x
        Fx[:, k % m] = f(x.view(shape)).reshape(B, -1)
        info.residuals.append(_relative_residual(Fx[:, k % m], X[:, k % m]))
        last = k % m
        return tol is not None and info.residuals[-1] < tol

    done = evaluate(0, z0.reshape(B, -1))
    if not done and max_iter > 1 and m > 1:
        done = evaluate(1, Fx[:, 0].clone())
    for k in range(2 if m > 1 else 1, max_iter):
        if done:
            break
        n = min(k, m)
        G = Fx[:, :n] - X[:, :n]                               # (B, n, d) residual vectors
        H[:, 1:n + 1, 1:n + 1] = G @ G.transpose(1, 2) + lam * torch.eye(n, dtype=z0.dtype,
                                                                          device=z0.device)
        alpha = torch.linalg.solve(H[:, :n + 1, :n + 1], y[:, :n + 1])[:, 1:n + 1, 0]   # (B, n)
        x = beta * (alpha[:, None] @ Fx[:, :n])[:, 0] + (1 - beta) * (alpha[:, None] @ X[:, :n])[:, 0]
        done = evaluate(k, x)
    return Fx[:, last].clone().view(shape), info


SOLVERS: dict[str, Callable] = {"picard": picard, "anderson": anderson}
REALLOCATIONS = ("fixed", "increasing", "decreasing")


def allocate_iterations(budget: int, steps: int, mode: str = "fixed",
                        ratio: tuple[float, float] = (0.5, 1.5)) -> list[int]:
    """Iterations per sampling step (in sampling order, noisiest first) that sum to `budget`.

    'fixed': as equal as possible; 'increasing' / 'decreasing': proportional to weights linear from
    ratio[0] to ratio[1] (or back) over the steps, the release's 0.5 → 1.5. Rounded by largest
    remainder so the total is exactly the budget, every step at least one iteration.
    """
    check(is_int(steps) and steps >= 1, "steps", steps, "an int >= 1")
    check(is_int(budget) and budget >= steps, "budget", budget,
          f"an int >= the number of steps ({steps}): every step needs one iteration")
    check(mode in REALLOCATIONS, "reallocation", mode, f"one of {REALLOCATIONS}")
    lo, hi = ratio
    check(0 < lo and 0 < hi, "ratio", ratio, "two numbers > 0")
    w = torch.ones(steps, dtype=torch.float64) if mode == "fixed" or steps == 1 else \
        torch.linspace(lo, hi, steps, dtype=torch.float64)
    if mode == "decreasing":
        w = w.flip(0)
    raw = budget * w / w.sum()
    counts = raw.floor().long().clamp(min=1)
    rest = budget - int(counts.sum())
    behind = raw - counts                              # how far each step is below its share
    order = torch.argsort(behind, descending=True, stable=True)
    for i in range(max(rest, 0)):                      # hand out what rounding down left over
        counts[order[i % steps]] += 1
    for _ in range(max(-rest, 0)):                     # the clamp to 1 overspent: take from the
        over = torch.where(counts > 1, behind, torch.full_like(behind, math.inf))
        counts[int(torch.argmin(over))] -= 1           # step most above its share that has > 1
    return counts.tolist()


class FixedPointDiT(nn.Module):
    """FPDM: N_pre DiT blocks → one implicit block solved to its fixed point → N_post DiT blocks.

    The same contract as `DiT`: F(x_in, noise_labels, class_labels, positions) -> [B, C, H, W].
    `iters` is the default iteration count at evaluation (the release: depth − pre − post, so a
    step costs as many block evaluations as the DiT of that depth)."""

    def __init__(self,
        pre_depth:      int = 1,                # Explicit DiT blocks before the implicit layer.
        post_depth:     int = 1,                # Explicit DiT blocks after it.
        iters:          int = 4,                # Iterations of the implicit block at evaluation.
        solver:         str = "picard",         # Evaluation solver: 'picard' or 'anderson'.
        tol:            float | None = None,    # Stop once the relative residual < tol (None: run all iters).
        **dit_kwargs,                           # DiT arguments (hidden_size, num_heads, patch_size, ...) but depth.
    ):
        super().__init__()
        for name, v in (("pre_depth", pre_depth), ("post_depth", post_depth)):
            check(is_int(v) and v >= 0, name, v, "an int >= 0")
        check(pre_depth + post_depth >= 1, "pre_depth + post_depth", pre_depth + post_depth,
              "at least 1 explicit block")
        check("depth" not in dit_kwargs, "depth", dit_kwargs.get("depth"),
              "not set: the depth is pre_depth + post_depth (+ the implicit block)")
        check(is_int(iters) and iters >= 1, "iters", iters, "an int >= 1")
        check(solver in SOLVERS, "solver", solver, f"one of {sorted(SOLVERS)}")
        _check_solve_args(iters, tol)
        self.dit = DiT(depth=pre_depth + post_depth, **dit_kwargs)
        D, d = self.dit.hidden_size, self.dit
        self.pre_depth, self.post_depth = pre_depth, post_depth
        self.injection = nn.Linear(D, D)                       # u = Linear(x_pre)
        self.fp_in = nn.Sequential(nn.Linear(2 * D, 2 * D), nn.GELU(approximate="tanh"),
                                   nn.Linear(2 * D, D))        # W2·GELU(W1·[z; u])
        self.fp_block = DiTBlock(D, d.num_heads, d.mlp_ratio, d.blocks[0].attn.dropout)
        for layer in (self.injection, *self.fp_in[::2]):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
        nn.init.zeros_(self.fp_block.adaLN_modulation[-1].weight)   # adaLN-Zero, as every DiT block
        nn.init.zeros_(self.fp_block.adaLN_modulation[-1].bias)
        self.iters, self.solver, self.tol = iters, solver, tol
        self.train_iterations: tuple[int, int] = (0, iters)    # (k1, k2); the method draws them per batch
        self._plan: dict | None = None                         # set by solving()
        self.trace: list[SolveInfo] = []                       # one SolveInfo per forward call at evaluation

    @classmethod
    def arguments(cls) -> set[str]:
        """The constructor's keyword arguments: its own and the DiT's except depth."""
        import inspect
        own = set(inspect.signature(cls.__init__).parameters) - {"self", "dit_kwargs"}
        return own | (set(inspect.signature(DiT.__init__).parameters) - {"self", "depth"})

    # the net contract's attributes, read from the DiT
    def __getattr__(self, name):
        if name in ("in_channels", "extra_in_channels", "out_channels", "resolution", "patch_size",
                    "num_classes", "learn_sigma", "hidden_size", "num_heads", "num_positions",
                    "size_multiple", "position_embed"):
            return getattr(self._modules["dit"], name)
        return super().__getattr__(name)

    @property
    def pre_blocks(self):
        return self.dit.blocks[:self.pre_depth]

    @property
    def post_blocks(self):
        return self.dit.blocks[self.pre_depth:]

    @contextlib.contextmanager
    def solving(self, iters: int | Sequence[int] | None = None, solver: str | None = None,
                tol: float | None = None, reuse: bool = False, **solver_kwargs):
        """Evaluation settings for the calls inside the block: `iters` one count for every call or
        a list with one count per call (a reallocated plan); `reuse` starts each call from the
        previous call's solution (same batch shape); `solver` and `tol` override the defaults;
        solver_kwargs go to the solver (anderson: m, lam, beta). Clears and fills `self.trace`."""
        solver = self.solver if solver is None else solver
        check(solver in SOLVERS, "solver", solver, f"one of {sorted(SOLVERS)}")
        iters = self.iters if iters is None else iters
        plan = [iters] if is_int(iters) else list(iters)
        for k in plan:
            check(is_int(k) and k >= 1, "iters", iters, "an int >= 1 or a list of them")
        _check_solve_args(plan[0], tol)
        self._plan = dict(plan=plan, cyclic=is_int(iters), solver=solver, tol=tol, reuse=bool(reuse),
                          kwargs=solver_kwargs, call=0, z_prev=None)
        self.trace = []
        try:
            yield self
        finally:
            self._plan = None

    def _solve(self, f: Map, z0: torch.Tensor) -> torch.Tensor:
        p = self._plan or dict(plan=[self.iters], cyclic=True, solver=self.solver, tol=self.tol,
                               reuse=False, kwargs={}, call=0, z_prev=None)
        if not p["cyclic"] and p["call"] >= len(p["plan"]):
            raise ValueError(f"iters: the plan has {len(p['plan'])} entries but the net was called "
                             f"{p['call'] + 1} times; allowed: one entry per sampler call "
                             f"(DDIM and DDPM call the net once per step)")
        k = p["plan"][0] if p["cyclic"] else p["plan"][p["call"]]
        if p["reuse"] and p["z_prev"] is not None and p["z_prev"].shape == z0.shape:
            z0 = p["z_prev"]
        z, info = SOLVERS[p["solver"]](f, z0, k, p["tol"], **p["kwargs"])
        p["call"] += 1
        p["z_prev"] = z.detach()
        if self._plan is not None:                           # record only inside solving()
            self.trace.append(info)
        return z

    def _head(self, x_in, noise_labels, class_labels, positions):
        x, c_t, c_y, hw = self.dit.embed(x_in, noise_labels, class_labels, positions)
        c = c_t + c_y
        for block in self.pre_blocks:
            x = block(x, c_y)                                  # (B, T, D)
        u = self.injection(x)                                  # (B, T, D) input injection

        def f(z):
            return self.fp_block(self.fp_in(torch.cat([z, u], dim=-1)), c)

        return f, x.detach(), c_y, c, hw

    def fixed_point_map(self, x_in: torch.Tensor, noise_labels: torch.Tensor,
                        class_labels: torch.Tensor | None = None,
                        positions: torch.Tensor | None = None) -> tuple[Map, torch.Tensor]:
        """(f, z0): the implicit layer's map z ↦ f(z) for these inputs (tokens (B, T, D)) and the
        starting point z0 = x_pre, for studying a solver outside the forward pass."""
        f, z0, *_ = self._head(x_in, noise_labels, class_labels, positions)
        return f, z0

    def forward(self, x_in: torch.Tensor, noise_labels: torch.Tensor,
                class_labels: torch.Tensor | None = None,
                positions: torch.Tensor | None = None) -> torch.Tensor:
        f, z0, c_y, c, hw = self._head(x_in, noise_labels, class_labels, positions)
        if self.training and torch.is_grad_enabled():
            k1, k2 = self.train_iterations
            with torch.no_grad():
                z, _ = picard(f, z0, k1, record=False)
            z = z.detach()
            for _ in range(k2):                                # backpropagation through these only
                z = f(z)
        else:
            z = self._solve(f, z0)
        for block in self.post_blocks:
            z = block(z, c_y)
        return self.dit.unembed(z, c, hw)


# ----------------------------------------------------------------------------------------------
# Presets. The release's model: DiT-XL/2's width with pre/post depth 1 and 28 − 2 = 26 iterations.

FPDM_PRESETS: dict[str, dict] = {
    # The release's FPDM at DiT-XL/2 width (build with DIT_PAPER_CONFIG for the ImageNet-latent counts).
    "FPDM-XL/2": dict(hidden_size=1152, num_heads=16, patch_size=2, pre_depth=1, post_depth=1, iters=26),
    # CPU chapter: dit-small's width (128, 4 heads, P=2); 1 + 4 + 1 = dit-small's 6 block evaluations per step.
    "fpdm-small": dict(resolution=32, patch_size=2, hidden_size=128, num_heads=4, pre_depth=1,
                       post_depth=1, iters=4),
    # Unit tests: dit-tiny's width.
    "fpdm-tiny": dict(resolution=32, patch_size=4, hidden_size=32, num_heads=2, pre_depth=1,
                      post_depth=1, iters=3),
}


def fpdm_preset(name: str, **overrides) -> FixedPointDiT:
    """Build a named FPDM preset (`FPDM_PRESETS`), with any constructor argument overridden."""
    return build_preset(FixedPointDiT, FPDM_PRESETS, name, overrides, "FPDM")
