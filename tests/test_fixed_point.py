"""Fixed Point Diffusion Models (pdlib.nets.fixed_point, pdlib.methods.fixed_point): the solvers on
contractive toy maps (and Anderson against torchdeq), the truncated backpropagation of training,
solution reuse, the reallocation of an iteration budget, zero terminal SNR and the v-prediction
identities, option errors, the method end to end on digits 8×8, and the release's parameter count."""
import contextlib

import pytest
import torch

from pdlib.config import TrainConfig
from pdlib.methods import build_method
from pdlib.nets import DIT_PAPER_CONFIG, net_preset
from pdlib.nets.fixed_point import SOLVERS, allocate_iterations, anderson, picard
from pdlib.precond import eps_from_x0, prediction_target, x0_from_prediction
from pdlib.schedules import vp_schedule, zero_terminal_snr
from pdlib.train import train

F64 = torch.float64

# A tiny run: sklearn digits at 8×8, a few steps, nothing written (as tests/test_methods.py).
TINY = dict(dataset="digits", resolution=8, batch_size=16, log_every=1, sample_every=0,
            sample_n=4, sample_steps=2, ckpt_every=0, warmup_steps=0, lr=2e-3, out_dir=None)


def _cfg(**kw):
    base = dict(method="fpdm", preset="fpdm-tiny", dataset="digits", resolution=8, img_channels=1,
                num_classes=10)
    return TrainConfig.flat(**{**base, **kw})


def _gen(seed):
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------------------------
# Toy maps.

def _toy_map(norm=0.9, d=16, seed=0, b_scale=0.5):
    """f(z) = tanh(W z + b), ‖W‖₂ = norm (a contraction with factor <= norm), and z0: 3 vectors."""
    g = _gen(seed)
    W = torch.randn(d, d, generator=g, dtype=F64)
    W = W * (norm / torch.linalg.matrix_norm(W, ord=2))
    b = torch.randn(d, generator=g, dtype=F64) * b_scale
    z0 = torch.randn(3, d, generator=g, dtype=F64)
    return (lambda z: torch.tanh(z @ W.T + b)), z0


def _slow_map(norm=0.99, d=16, seed=0):
    """A slowly contracting affine map f(z) = W z + b, W symmetric with eigenvalues spread over
    [−norm, norm] (Picard contracts by `norm` per iteration), and its exact fixed point."""
    g = _gen(seed)
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=F64))
    W = Q @ torch.diag(torch.linspace(-norm, norm, d, dtype=F64)) @ Q.T
    b = torch.randn(d, generator=g, dtype=F64)
    z0 = torch.randn(3, d, generator=g, dtype=F64)
    z_star = torch.linalg.solve(torch.eye(d, dtype=F64) - W, b).expand(3, d)
    return (lambda z: z @ W.T + b), z0, z_star


def _token_map(B=2, T=5, D=8, seed=0):
    """A (B, T, D) map mixing tokens and channels: f(z) = tanh(A z Wᵀ + b), ‖A‖₂ = ‖W‖₂ = 0.9."""
    g = _gen(seed)
    A = torch.randn(T, T, generator=g, dtype=F64)
    A = A * (0.9 / torch.linalg.matrix_norm(A, ord=2))
    W = torch.randn(D, D, generator=g, dtype=F64)
    W = W * (0.9 / torch.linalg.matrix_norm(W, ord=2))
    b = torch.randn(T, D, generator=g, dtype=F64) * 0.5
    z0 = torch.randn(B, T, D, generator=g, dtype=F64)
    return (lambda z: torch.tanh(torch.einsum("st,btd->bsd", A, z) @ W.T + b)), z0


def _reference_fixed_point(f, z0, n=1000):
    z = z0
    for _ in range(n):
        z = f(z)
    return z


def _rel_residual(f, z):
    fz = f(z)
    return float((fz - z).norm() / fz.norm())


# ----------------------------------------------------------------------------------------------
# 1. The solvers reach the fixed point.

@pytest.mark.parametrize("solver,max_iter,atol", [("picard", 200, 1e-12), ("anderson", 60, 1e-7)])
def test_solvers_reach_the_fixed_point_of_a_contraction(solver, max_iter, atol):
    f, z0 = _toy_map(0.9)
    ref = _reference_fixed_point(f, z0)
    assert _rel_residual(f, ref) < 1e-14                               # the reference is converged
    z, info = SOLVERS[solver](f, z0, max_iter)
    assert z.shape == z0.shape and z.dtype == F64
    assert info.iterations == max_iter and info.residuals[-1] < 1e-6
    assert _rel_residual(f, z) < 1e-6
    torch.testing.assert_close(z, ref, atol=atol, rtol=0)
    assert (z - z0).abs().max() > 0.1                                  # it did move from z0


@pytest.mark.parametrize("tol,lam", [(1e-3, 1e-4), (1e-6, 1e-12)])
def test_anderson_needs_fewer_iterations_than_picard_on_a_slow_contraction(tol, lam):
    """λ is an absolute Tikhonov term (as torchdeq's): once ‖f(z) − z‖² per sample falls below
    ~λ the mixing weights tend to a plain average, so a tight tol on this small map takes a tiny λ."""
    f, z0, z_star = _slow_map(0.99)
    zp, ip = picard(f, z0, 5000, tol=tol)
    za, ia = anderson(f, z0, 5000, tol=tol, lam=lam)
    assert ip.residuals[-1] < tol and ia.residuals[-1] < tol           # both got there
    assert ip.iterations > 300                                         # the map is slow for Picard
    assert ia.iterations < ip.iterations / 5, (ia.iterations, ip.iterations)
    for z in (zp, za):                                                 # error <= residual/(1 − 0.99)
        assert float((z - z_star).norm() / z_star.norm()) < 200 * tol


@pytest.mark.parametrize("solver", sorted(SOLVERS))
@pytest.mark.parametrize("tol", [1e-3, 1e-6])
def test_early_stop_at_the_first_residual_below_tol(solver, tol):
    f, z0 = _toy_map(0.9)
    z, info = SOLVERS[solver](f, z0, 1000, tol=tol)
    assert 2 <= info.iterations < 1000
    assert info.residuals[-1] < tol <= info.residuals[-2]
    assert all(r >= tol for r in info.residuals[:-1])                  # it stopped at the first one
    if solver == "picard":                                             # the result is f^k(z0)
        full, _ = picard(f, z0, info.iterations)
        torch.testing.assert_close(z, full, atol=0, rtol=0)


def test_residuals_are_the_relative_residuals_of_the_iterates():
    """The last residual is ‖f(z_k) − z_k‖/‖f(z_k)‖ of the iterate whose image is returned: with
    Picard the returned z = f(z_{k−1}). Zero iterations return z0 and record nothing."""
    f, z0 = _toy_map(0.9)
    z_prev, _ = picard(f, z0, 4)
    z, info = picard(f, z0, 5)
    expected = float((z - z_prev).norm() / (z.norm() + 1e-5))
    assert info.residuals[-1] == pytest.approx(expected, rel=1e-12)
    assert info.residuals[0] == pytest.approx(float((f(z0) - z0).norm() / (f(z0).norm() + 1e-5)),
                                              rel=1e-12)
    for solve in SOLVERS.values():
        z_none, info0 = solve(f, z0, 0)
        assert info0.iterations == 0 and torch.equal(z_none, z0)


def test_picard_without_recording_gives_the_same_iterate():
    f, z0 = _toy_map(0.9)
    z, info = picard(f, z0, 7)
    z_fast, info_fast = picard(f, z0, 7, record=False)
    torch.testing.assert_close(z_fast, z, atol=0, rtol=0)
    assert info.iterations == 7 and info_fast.iterations == 0
    _, info_tol = picard(f, z0, 500, tol=1e-3, record=False)           # a tol needs the residuals
    assert 0 < info_tol.iterations < 500 and info_tol.residuals[-1] < 1e-3


# ----------------------------------------------------------------------------------------------
# 2. Anderson agrees with torchdeq's anderson_solver.

@pytest.mark.parametrize("beta", [1.0, 0.5])
@pytest.mark.parametrize("shape", ["vectors", "tokens"])
@pytest.mark.parametrize("max_iter", [3, 5, 10, 20])
def test_anderson_matches_torchdeq(max_iter, shape, beta):
    deq = pytest.importorskip("torchdeq.solver.anderson")
    f, z0 = _toy_map(0.9) if shape == "vectors" else _token_map()
    ref, _, _ = deq.anderson_solver(f, z0, max_iter=max_iter, tol=0, m=5, lam=1e-4, tau=beta,
                                    return_final=True)
    z, info = anderson(f, z0, max_iter, m=5, lam=1e-4, beta=beta)
    assert z.shape == z0.shape and info.iterations == max_iter
    torch.testing.assert_close(z, ref, atol=1e-10, rtol=0)
    if max_iter >= 5:                                                  # and it is not Picard
        zp, _ = picard(f, z0, max_iter)
        assert (zp - ref).abs().max() > 1e-8


# ----------------------------------------------------------------------------------------------
# The fixed-point DiT.

def _net(seed=0):
    """fpdm-tiny on 1×8×8 with every weight perturbed (adaLN-Zero makes a fresh net trivial) and
    the z-half of the map's first Linear scaled down, so the implicit layer is a contraction."""
    torch.manual_seed(seed)
    net = net_preset("fpdm-tiny", in_channels=1, resolution=8, num_classes=10)
    g = _gen(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
        net.fp_in[0].weight[:, :net.hidden_size] *= 0.3
    return net


def _inputs(seed=1, n=3):
    g = _gen(seed)
    x = torch.randn(n, 1, 8, 8, generator=g)
    t = torch.tensor([10.0, 500.0, 900.0])[:n]
    y = torch.tensor([1, 2, 10])[:n]                                   # 10 = the null label
    return x, t, y


def _tail(net, z, x, t, y):
    """Post blocks and the final layer from the implicit layer's solution z (B, T, D)."""
    _, c_t, c_y, hw = net.dit.embed(x, t, y)
    for block in net.post_blocks:
        z = block(z, c_y)
    return net.dit.unembed(z, c_t + c_y, hw)


def _manual_train_forward(net, x, t, y, k1, k2, cut=True):
    """The training forward rebuilt from the net's modules: k1 Picard steps without gradient from
    the detached x_pre, then k2 with; cut=False backpropagates through all of it (not FPDM)."""
    h, c_t, c_y, hw = net.dit.embed(x, t, y)
    c = c_t + c_y
    for block in net.pre_blocks:
        h = block(h, c_y)
    u = net.injection(h)

    def f(z):
        return net.fp_block(net.fp_in(torch.cat([z, u], dim=-1)), c)

    z = h.detach() if cut else h
    with torch.no_grad() if cut else contextlib.nullcontext():
        for _ in range(k1):
            z = f(z)
    for _ in range(k2):
        z = f(z)
    for block in net.post_blocks:
        z = block(z, c_y)
    return net.dit.unembed(z, c, hw)


def _grads(net, fn, x, w):
    net.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    out = fn(x)
    (out * w).sum().backward()
    g = {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p))
         for n, p in net.named_parameters()}
    return out.detach(), g, x.grad.clone() if x.grad is not None else torch.zeros_like(x)


def _count_fp_calls(net):
    calls = []
    handle = net.fp_block.register_forward_hook(lambda *_: calls.append(torch.is_grad_enabled()))
    return calls, handle


# ----------------------------------------------------------------------------------------------
# 3. Training: k1 iterations without gradient, k2 with.

@pytest.mark.parametrize("k1,k2", [(0, 1), (3, 1), (2, 3), (5, 2)])
def test_training_backpropagates_through_the_k2_iterations_only(k1, k2):
    net = _net().train()
    x, t, y = _inputs()
    w = torch.randn(3, 1, 8, 8, generator=_gen(7))
    net.train_iterations = (k1, k2)
    calls, handle = _count_fp_calls(net)
    out, g_net, gx_net = _grads(net, lambda x: net(x, t, y), x, w)
    handle.remove()
    assert calls.count(True) == k2 and calls.count(False) == k1 and len(calls) == k1 + k2
    assert calls == [False] * k1 + [True] * k2                         # the no-grad phase comes first
    ref, g_ref, gx_ref = _grads(net, lambda x: _manual_train_forward(net, x, t, y, k1, k2), x, w)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-5)
    for name in g_ref:
        torch.testing.assert_close(g_net[name], g_ref[name], atol=1e-6, rtol=1e-4, msg=name)
    torch.testing.assert_close(gx_net, gx_ref, atol=1e-6, rtol=1e-4)
    assert float(gx_net.abs().sum()) > 0 and float(g_net["fp_block.attn.qkv.weight"].abs().sum()) > 0
    # backpropagating through the k1 phase too (and into x_pre through z0) is a different gradient
    _, g_full, _ = _grads(net, lambda x: _manual_train_forward(net, x, t, y, k1, k2, cut=False), x, w)
    diff = max(float((g_full[n] - g_net[n]).abs().max()) for n in g_net)
    assert diff > 1e-5


def test_changing_k1_changes_the_output_but_not_the_graph_depth():
    net = _net().train()
    x, t, y = _inputs()
    outs = {}
    for k1 in (0, 4):
        net.train_iterations = (k1, 2)
        calls, handle = _count_fp_calls(net)
        outs[k1] = net(x, t, y).detach()
        handle.remove()
        assert calls.count(True) == 2 and calls.count(False) == k1
    assert float((outs[0] - outs[4]).abs().max()) > 1e-4


@pytest.mark.parametrize("k1,k2", [(0, 1), (3, 1), (2, 3)])
def test_no_gradient_reaches_x_pre_through_the_starting_point(k1, k2):
    """x_pre enters the gradient only through the injection u: with u's Linear zeroed (u = 0 is
    constant) nothing before the implicit layer gets a gradient, the input included."""
    net = _net().train()
    with torch.no_grad():
        net.injection.weight.zero_()
        net.injection.bias.zero_()
    x, t, y = _inputs()
    w = torch.randn(3, 1, 8, 8, generator=_gen(7))
    net.train_iterations = (k1, k2)
    _, g, gx = _grads(net, lambda x: net(x, t, y), x, w)
    before = [n for n in g if n.startswith(("dit.x_embedder", "dit.blocks.0."))]
    assert before and all(float(g[n].abs().max()) == 0 for n in before)
    assert float(gx.abs().max()) == 0
    assert float(g["injection.weight"].abs().max()) > 0                # u itself is trained
    f, z0 = net.fixed_point_map(x, t, y)
    assert not z0.requires_grad                                        # the starting point is detached
    # the same net without the cut: the pre block and the input do get a gradient
    _, g_full, gx_full = _grads(net, lambda x: _manual_train_forward(net, x, t, y, k1, k2, cut=False),
                                x, w)
    assert float(gx_full.abs().max()) > 0 and max(float(g_full[n].abs().max()) for n in before) > 0


def test_evaluation_mode_and_no_grad_solve_instead_of_training_iterations():
    net = _net()
    x, t, y = _inputs()
    net.train_iterations = (5, 5)
    net.eval()
    calls, handle = _count_fp_calls(net)
    with torch.no_grad():
        out = net(x, t, y)
    handle.remove()
    assert len(calls) == net.iters and calls == [False] * net.iters
    assert net.trace == []                                             # recorded only inside solving()
    with torch.no_grad():
        f, z0 = net.fixed_point_map(x, t, y)
        z, _ = picard(f, z0, net.iters)
        torch.testing.assert_close(out, _tail(net, z, x, t, y), atol=1e-6, rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# 4. Reuse changes only the starting point.

@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_reuse_starts_from_the_previous_solution(solver):
    net = _net().eval()
    x, t, y = _inputs()
    k = 2
    with torch.no_grad():
        with net.solving(iters=k, solver=solver, reuse=True):
            out1, out2 = net(x, t, y), net(x, t, y)
            assert len(net.trace) == 2
        f, z0 = net.fixed_point_map(x, t, y)
        z1, _ = SOLVERS[solver](f, z0, k)
        z2, _ = SOLVERS[solver](f, z1, k)
        torch.testing.assert_close(out1, _tail(net, z1, x, t, y), atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(out2, _tail(net, z2, x, t, y), atol=1e-6, rtol=1e-5)
        assert float((out2 - out1).abs().max()) > 1e-4                 # a different start
        with net.solving(iters=k, solver=solver, reuse=False):
            a, b = net(x, t, y), net(x, t, y)
        torch.testing.assert_close(a, out1, atol=0, rtol=0)
        torch.testing.assert_close(b, a, atol=0, rtol=0)
        # a batch of another shape does not take the previous solution
        x2, t2, y2 = _inputs(n=2)
        with net.solving(iters=k, solver=solver, reuse=True):
            net(x, t, y)
            c = net(x2, t2, y2)
        with net.solving(iters=k, solver=solver):
            d = net(x2, t2, y2)
        torch.testing.assert_close(c, d, atol=0, rtol=0)


def test_reuse_does_not_change_a_converged_fixed_point():
    net = _net().eval()
    x, t, y = _inputs()
    with torch.no_grad(), net.solving(iters=60, reuse=True):
        out1, out2 = net(x, t, y), net(x, t, y)
        assert net.trace[0].residuals[-1] < 1e-5                       # converged (float32)
    torch.testing.assert_close(out2, out1, atol=1e-5, rtol=1e-5)


def test_a_plan_gives_each_call_its_count_and_refuses_an_extra_call():
    net = _net().eval()
    x, t, y = _inputs()
    with torch.no_grad(), net.solving(iters=[1, 4, 2]):
        for _ in range(3):
            net(x, t, y)
        assert [i.iterations for i in net.trace] == [1, 4, 2]
        with pytest.raises(ValueError, match="iters.*allowed"):
            net(x, t, y)


# ----------------------------------------------------------------------------------------------
# 5. allocate_iterations.

COMBOS = [(b, s, m) for m in ("fixed", "increasing", "decreasing")
          for s, b in [(1, 1), (1, 7), (3, 3), (3, 9), (4, 10), (5, 26), (10, 40), (10, 100),
                       (25, 250), (50, 1300), (7, 3000)]]


@pytest.mark.parametrize("budget,steps,mode", COMBOS)
def test_allocate_iterations_sums_to_the_budget(budget, steps, mode):
    counts = allocate_iterations(budget, steps, mode)
    assert len(counts) == steps and sum(counts) == budget
    assert all(isinstance(c, int) and c >= 1 for c in counts)
    if mode == "fixed":
        assert max(counts) - min(counts) <= 1
    elif mode == "increasing":
        assert all(a <= b for a, b in zip(counts, counts[1:])), counts
    else:
        assert all(a >= b for a, b in zip(counts, counts[1:])), counts
        inc = allocate_iterations(budget, steps, "increasing")
        assert all(abs(a - b) <= 1 for a, b in zip(counts, inc[::-1]))


@pytest.mark.parametrize("budget,steps", [(11, 10), (12, 10), (15, 10), (6, 5), (26, 25)])
def test_reallocation_is_monotone_when_the_budget_is_close_to_the_step_count(budget, steps):
    """Steps whose share is below one iteration are raised to one; the leftovers must still go to
    the steps with the largest share, so 'increasing' stays non-decreasing."""
    inc = allocate_iterations(budget, steps, "increasing")
    dec = allocate_iterations(budget, steps, "decreasing")
    assert sum(inc) == budget and sum(dec) == budget and min(inc) >= 1 and min(dec) >= 1
    assert all(a <= b for a, b in zip(inc, inc[1:])), inc
    assert all(a >= b for a, b in zip(dec, dec[1:])), dec


def test_increasing_has_the_release_ratio_of_three():
    counts = allocate_iterations(3000, 10, "increasing")
    assert counts[-1] / counts[0] == pytest.approx(3.0, rel=0.02)
    assert counts[0] == pytest.approx(150, abs=1) and counts[-1] == pytest.approx(450, abs=1)
    assert allocate_iterations(3000, 10, "decreasing") == counts[::-1]
    assert allocate_iterations(12, 4, "fixed") == [3, 3, 3, 3]


@pytest.mark.parametrize("budget,steps", [(3, 4), (0, 1), (9, 10)])
def test_a_budget_below_the_step_count_is_an_error(budget, steps):
    with pytest.raises(ValueError, match=r"budget.*allowed") as e:
        allocate_iterations(budget, steps)
    assert "\n" not in str(e.value)


# ----------------------------------------------------------------------------------------------
# 6. Zero terminal SNR.

def test_zero_terminal_snr_rescales_sqrt_alpha_bar_affinely():
    orig = vp_schedule("linear", 1000)
    zs = zero_terminal_snr(orig)
    assert zs.alphas_cumprod[-1].item() == 0.0
    assert orig.alphas_cumprod[-1].item() > 0
    assert abs(zs.alphas_cumprod[0].item() - orig.alphas_cumprod[0].item()) < 1e-12
    a, b = orig.alphas_cumprod.sqrt(), zs.alphas_cumprod.sqrt()
    A = torch.stack([a, torch.ones_like(a)], 1)                        # b = s·a + c on all t
    coef = torch.linalg.lstsq(A, b[:, None]).solution[:, 0]
    assert float((A @ coef - b).abs().max()) < 1e-12
    s_expected = a[0] / (a[0] - a[-1])
    assert float(coef[0]) == pytest.approx(float(s_expected), rel=1e-10)
    assert bool((zs.alphas_cumprod[1:] <= zs.alphas_cumprod[:-1]).all())
    torch.testing.assert_close(zs.timesteps, orig.timesteps)


def test_the_fpdm_schedule_has_zero_terminal_snr_by_default():
    m = build_method(_cfg())
    assert m.opts.zero_snr is True and m.opts.prediction == "v"
    assert m.schedule.alphas_cumprod[-1].item() == 0.0
    assert m.denoiser.prediction == "v"
    off = build_method(_cfg(zero_snr=False))
    assert off.schedule.alphas_cumprod[-1].item() > 0


# ----------------------------------------------------------------------------------------------
# 7. v-prediction identities.

def test_v_prediction_identities():
    g = _gen(3)
    x0 = torch.randn(6, 1, 8, 8, generator=g, dtype=F64)
    eps = torch.randn(6, 1, 8, 8, generator=g, dtype=F64)
    abar = torch.rand(6, 1, 1, 1, generator=g, dtype=F64) * 0.98 + 0.01
    a, s = abar.sqrt(), (1 - abar).sqrt()
    x_t = a * x0 + s * eps
    v = prediction_target(x0, eps, abar, "v")
    torch.testing.assert_close(v, a * eps - s * x0, atol=1e-12, rtol=0)
    torch.testing.assert_close(x0_from_prediction(v, x_t, abar, "v"), x0, atol=1e-12, rtol=0)
    torch.testing.assert_close(a * x_t - s * v, x0, atol=1e-12, rtol=0)
    torch.testing.assert_close(s * x_t + a * v, eps, atol=1e-12, rtol=0)
    torch.testing.assert_close(eps_from_x0(x0, x_t, abar), eps, atol=1e-10, rtol=0)
    torch.testing.assert_close(x0_from_prediction(eps, x_t, abar, "eps"), x0, atol=1e-10, rtol=0)
    # ᾱ = 0: x_t is pure noise, v = −x0, and x0 is recovered from the true v
    zero = torch.zeros_like(abar)
    torch.testing.assert_close(prediction_target(x0, eps, zero, "v"), -x0, atol=0, rtol=0)
    torch.testing.assert_close(x0_from_prediction(-x0, eps, zero, "v"), x0, atol=0, rtol=0)


# ----------------------------------------------------------------------------------------------
# 8. Option errors: one line, naming the option, the value and what is allowed.

def _one_line_error(fn, pattern):
    with pytest.raises(ValueError, match=pattern) as e:
        fn()
    msg = str(e.value)
    assert "allowed" in msg and "\n" not in msg, msg
    return msg


@pytest.mark.parametrize("kw,pattern", [
    (dict(k1_range=(3, 1)), r"k1_range=.*3, 1.*allowed"),
    (dict(k1_range=(-1, 2)), r"k1_range=.*-1, 2.*allowed"),
    (dict(k2_range=(0, 2)), r"k2_range=.*0, 2.*allowed"),
    (dict(k2_range=(2, 1)), r"k2_range=.*2, 1.*allowed"),
    (dict(tol=0), r"tol=0(\.0)? .*allowed"),
    (dict(tol=-1), r"tol=-1(\.0)? .*allowed"),
    (dict(solver="newton"), r"solver='newton'.*allowed.*anderson.*picard"),
    (dict(reallocation="spiral"), r"reallocation='spiral'.*allowed.*increasing"),
    (dict(iters=0), r"iters=0 .*allowed"),
    (dict(preset="dit-tiny"), r"preset='dit-tiny'.*allowed.*fpdm-tiny"),
])
def test_bad_options_are_one_line_errors(kw, pattern):
    _one_line_error(lambda: _cfg(**kw), pattern)


def test_bad_sampling_arguments_are_one_line_errors():
    m = build_method(_cfg())
    m.denoiser.eval()
    _one_line_error(lambda: m.sample(1, steps=4, budget=1), r"budget=1 .*allowed.*4")
    _one_line_error(lambda: m.sample(1, steps=2, sampler="heun"), r"sampler='heun'.*allowed.*ddim")
    _one_line_error(lambda: m.sample(1, steps=2, reallocation="spiral"), r"reallocation='spiral'.*allowed")
    _one_line_error(lambda: m.sample(1, steps=2, solver="newton"), r"solver='newton'.*allowed")
    _one_line_error(lambda: allocate_iterations(8, 4, "spiral"), r"reallocation='spiral'.*allowed")
    _one_line_error(lambda: net_preset("fpdm-tiny", solver="newton"), r"solver='newton'.*allowed")
    net = _net()
    _one_line_error(lambda: net.solving(solver="newton").__enter__(), r"solver='newton'.*allowed")
    _one_line_error(lambda: net.solving(iters=2, tol=0).__enter__(), r"tol=0(\.0)? .*allowed")


# ----------------------------------------------------------------------------------------------
# 9. The method end to end on digits 8×8.

@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    res = train(TrainConfig.flat(method="fpdm", preset="fpdm-tiny", steps=3, class_cond=True, **TINY),
                progress=False)
    return res


def test_fpdm_trains_on_digits(trained):
    res = trained
    assert res.step == 3 and len(res.history) >= 3
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in res.history)
    assert res.config.net.preset == "fpdm-tiny" and res.config.method.name == "fpdm"
    k1, k2 = res.method.net.train_iterations
    assert 0 <= k1 <= 10 and 1 <= k2 <= 12


def test_begin_step_draws_k1_k2_from_the_step_generator(trained):
    m = trained.method
    draws = []
    for s in range(300):
        m.begin_step(s, 300, generator=_gen(s))
        draws.append(m.net.train_iterations)
        m.begin_step(s, 300, generator=_gen(s))
        assert m.net.train_iterations == draws[-1]                     # the same seed, the same draw
    k1s, k2s = {d[0] for d in draws}, {d[1] for d in draws}
    assert k1s == set(range(0, 11)) and k2s == set(range(1, 13))       # U{0..10} and U{1..12}, inclusive
    narrow = build_method(_cfg(k1_range=(2, 3), k2_range=(4, 4)))
    for s in range(20):
        narrow.begin_step(s, 20, generator=_gen(s))
        k1, k2 = narrow.net.train_iterations
        assert k1 in (2, 3) and k2 == 4


def test_fpdm_samples_with_a_trace_per_step(trained):
    m = trained.method
    m.denoiser.eval()
    net = m.net
    out = m.sample(4, steps=3, generator=_gen(1))
    assert out.shape == (4, 1, 8, 8) and torch.isfinite(out).all() and out.abs().max() <= 1
    assert len(net.trace) == 3 and all(i.iterations == net.iters for i in net.trace)
    again = m.sample(4, steps=3, generator=_gen(1))
    torch.testing.assert_close(again, out, atol=0, rtol=0)
    guided = m.sample(4, steps=3, generator=_gen(1), guidance=2.0, class_labels=torch.tensor([0, 1, 2, 3]))
    assert guided.shape == (4, 1, 8, 8) and torch.isfinite(guided).all() and guided.abs().max() <= 1
    assert len(net.trace) == 3 and float((guided - out).abs().max()) > 0
    m.sample(2, steps=3, generator=_gen(2), iters=5)
    assert [i.iterations for i in net.trace] == [5, 5, 5]
    m.sample(2, steps=3, generator=_gen(2), budget=9, reallocation="increasing")
    counts = [i.iterations for i in net.trace]
    assert sum(counts) == 9 and counts == sorted(counts) and counts[0] < counts[-1]
    m.sample(2, steps=3, generator=_gen(2), budget=9, reallocation="decreasing", solver="anderson",
             sampler="ddpm")
    counts = [i.iterations for i in net.trace]
    assert sum(counts) == 9 and counts == sorted(counts, reverse=True) and counts[0] > counts[-1]


# ----------------------------------------------------------------------------------------------
# 10. The parameter count at the release's scale.

def test_fpdm_xl_2_has_the_release_parameter_count():
    with torch.device("meta"):
        fpdm = net_preset("FPDM-XL/2", **DIT_PAPER_CONFIG)
        dit = net_preset("DiT-XL/2", **DIT_PAPER_CONFIG)
    n_fpdm = sum(p.numel() for p in fpdm.parameters())
    n_dit = sum(p.numel() for p in dit.parameters())
    assert 86.4e6 < n_fpdm < 86.6e6, n_fpdm
    assert 674.7e6 < n_dit < 674.9e6, n_dit
    assert 1 - n_fpdm / n_dit == pytest.approx(0.87, abs=0.005)
    assert fpdm.iters == 26 and fpdm.pre_depth == 1 and fpdm.post_depth == 1
