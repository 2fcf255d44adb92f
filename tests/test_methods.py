"""pdlib.methods: every method on every net family; the prepare_batch / n_images contract of the
loop; a method that cannot sample alone; and pdlib's imports (no cycles, each module importable
first)."""
import ast
import json
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from pdlib.config import TrainConfig
from pdlib.methods import METHODS, Batch, EDMMethod, EDMOptions, build_method, register
from pdlib.train import train

PDLIB = Path(__file__).resolve().parent.parent / "pdlib"
BUILTIN = sorted(METHODS)                       # the registered methods, before any test adds one
FAMILIES = {"unet": "tiny", "dit": "dit-tiny", "fpdm": "fpdm-tiny"}   # the tiny preset of each net family
CROPPING = {"patch_diffusion"}                   # methods whose items are crops of the images

# A tiny run: sklearn digits at 8×8, a few steps, nothing written unless a test sets out_dir.
TINY = dict(dataset="digits", resolution=8, batch_size=16, log_every=1, sample_every=0,
            sample_n=4, sample_steps=2, ckpt_every=0, warmup_steps=0, lr=2e-3, out_dir=None)


def _cfg(method, preset="tiny", **kw):
    return TrainConfig.flat(method=method, preset=preset, dataset="digits", resolution=8,
                            img_channels=1, num_classes=10, **kw)


def test_the_builtin_methods_are_registered():
    assert {"edm", "vp", "patched"} <= set(BUILTIN)
    from pdlib.nets import NET_FAMILIES, preset_family
    assert set(NET_FAMILIES) == set(FAMILIES)
    assert all(preset_family(p) == f for f, p in FAMILIES.items())


# ----------------------------------------------------------------------------------------------
# Every method × net family.

def _skip_if_incompatible(method, family):
    """A method that names its net families (fpdm: only 'fpdm') is tested on those; the others
    must refuse the rest with a one-line error naming net.preset."""
    fams = METHODS[method].net_families
    if fams is not None and family not in fams:
        with pytest.raises(ValueError, match=r"net\.preset=.*allowed"):
            _cfg(method, FAMILIES[family])
        pytest.skip(f"{method} runs on {fams} nets only (refusal checked)")

@pytest.mark.parametrize("class_cond", [False, True], ids=["uncond", "cond"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("method", BUILTIN)
def test_every_method_on_every_net_family(method, family, class_cond):
    _skip_if_incompatible(method, family)
    torch.manual_seed(0)
    m = build_method(_cfg(method, FAMILIES[family], class_cond=class_cond))
    from pdlib.nets import preset_family
    assert preset_family(m.cfg.net.preset) == family and m.name == method
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 1, 8, 8, generator=g) * 2 - 1
    labels = torch.arange(4) if class_cond else None
    batch = m.prepare_batch(x0, labels, g)
    assert isinstance(batch, Batch) and batch.n_images == 4
    if method in CROPPING:              # k crops of each image: (4·k, C, s, s), s <= 8
        assert len(batch.x0) % 4 == 0 and batch.x0.shape[1] == 1 and batch.x0.shape[-1] <= 8
    else:
        assert batch.x0.shape == x0.shape
    assert ("class_labels" in batch.cond) == class_cond
    losses = m.loss(batch, g)
    assert losses.shape == (len(batch.x0),) and torch.isfinite(losses).all()
    (losses.sum() / batch.n_images).backward()
    grads = [p.grad for p in m.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(gr).all() for gr in grads)
    assert sum(gr.abs().sum() for gr in grads) > 0                   # the loss reaches the weights
    m.denoiser.eval()
    out = m.sample(3, generator=torch.Generator().manual_seed(1), steps=2, **_inputs(m, 3))
    assert out.shape == (3, 1, 8, 8) and torch.isfinite(out).all() and out.abs().max() <= 1
    if class_cond:
        guided = m.sample(2, generator=torch.Generator().manual_seed(1), steps=2, guidance=2.0,
                          class_labels=torch.tensor([3, 4]), **_inputs(m, 2))
        assert guided.shape == (2, 1, 8, 8) and torch.isfinite(guided).all()
    else:
        with pytest.raises(ValueError, match="guidance"):
            m.sample(1, steps=2, guidance=2.0, **_inputs(m, 1))


def _inputs(m, n: int) -> dict:
    """What sample() needs besides noise: nothing, or (relay, which continues from
    low-resolution images) n low-resolution images."""
    if m.samples_alone:
        return {}
    return {"low_res": torch.rand(n, *m.low_shape, generator=torch.Generator().manual_seed(2)) * 2 - 1}


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("method", BUILTIN)
def test_every_method_trains_on_every_net_family(method, family):
    _skip_if_incompatible(method, family)
    res = train(TrainConfig.flat(method=method, preset=FAMILIES[family], steps=2, **TINY),
                progress=False)
    assert res.step == 2 and all(torch.isfinite(torch.tensor(r["loss"])) for r in res.history)
    assert res.config.data.img_channels == 1 and res.config.net.preset == FAMILIES[family]


# ----------------------------------------------------------------------------------------------
# Toy methods, registered for one test each.

@dataclass(frozen=True)
class _FlipOptions(EDMOptions):
    name: str = "test-flip"


@dataclass(frozen=True)
class _TwiceOptions(EDMOptions):
    name: str = "test-twice"


@dataclass(frozen=True)
class _DetOptions(EDMOptions):
    name: str = "test-det"


@dataclass(frozen=True)
class _NoSampleOptions(EDMOptions):
    name: str = "test-nosample"


@dataclass(frozen=True)
class _ZeroOptions(EDMOptions):
    name: str = "test-zero"


def _deterministic_loss(D, x0, generator=None, **cond):
    """A loss without randomness (fixed σ and 'noise'), so two runs can be compared exactly."""
    sigma = torch.full((x0.shape[0],), 0.7)
    noisy = x0 + 0.7 * x0.flip(-1).roll(1, -2)
    return ((D(noisy, sigma, **cond) - x0) ** 2).mean((1, 2, 3))


class _Det(EDMMethod):
    def build_loss(self):
        return _deterministic_loss


class _Flip(_Det):
    """Each image and its mirror image: 2m items, n_images = m."""

    def prepare_batch(self, images, labels, generator=None):
        b = super().prepare_batch(images, labels, generator)
        return Batch(x0=torch.cat([b.x0, b.x0.flip(-1)]),
                     cond={k: torch.cat([v, v]) for k, v in b.cond.items()}, n_images=b.n_images)


class _Twice(_Det):
    """The batch twice (identical items): 2m items, n_images = m, so the loss per image doubles."""

    def prepare_batch(self, images, labels, generator=None):
        b = super().prepare_batch(images, labels, generator)
        return Batch(x0=torch.cat([b.x0, b.x0]), cond={k: torch.cat([v, v]) for k, v in b.cond.items()},
                     n_images=b.n_images)


class _NoSample(EDMMethod):
    samples_alone = False

    def sample(self, *args, **kwargs):
        raise AssertionError("the loop must not call sample() of a method that cannot sample alone")


class _Zero(EDMMethod):
    def prepare_batch(self, images, labels, generator=None):
        b = super().prepare_batch(images, labels, generator)
        return Batch(x0=b.x0, cond=b.cond, n_images=0)


@pytest.fixture
def toy_methods():
    """Register the toy methods under unique names; remove them from METHODS afterwards."""
    toys = {"test-flip": (_Flip, _FlipOptions), "test-twice": (_Twice, _TwiceOptions),
            "test-det": (_Det, _DetOptions), "test-nosample": (_NoSample, _NoSampleOptions),
            "test-zero": (_Zero, _ZeroOptions)}
    assert not set(toys) & set(METHODS)
    for name, (cls, opts) in toys.items():
        register(name, opts)(cls)
    try:
        yield toys
    finally:
        for name in toys:
            METHODS.pop(name, None)
    assert sorted(METHODS) == BUILTIN


def _run(method, steps, **kw):
    return train(TrainConfig.flat(**{**TINY, "method": method, "preset": "tiny", "steps": steps,
                                     "grad_clip": None, "dropout": 0.0, **kw}), progress=False)


def _step_batch(cfg, step):
    """The data micro-batch of a step, as the loop draws it (world 1, no accumulation)."""
    from pdlib.data import load_dataset
    from pdlib.train import BatchStream
    data = load_dataset(cfg.data.dataset, resolution=cfg.data.resolution, n=cfg.data.n_data,
                        seed=cfg.optim.seed)
    return BatchStream(data.images, None, cfg.optim.batch_size, cfg.optim.seed).batch(step)[0]


def test_the_logged_loss_is_the_item_sum_over_n_images(toy_methods):
    """A method that makes 2m items of m images: the loop logs Σ item losses / m, step by step
    (checked against the losses recomputed from the weights before each step)."""
    cfg = TrainConfig.flat(**{**TINY, "method": "test-flip", "preset": "tiny", "steps": 2,
                              "grad_clip": None, "dropout": 0.0})
    res = train(cfg, progress=False)
    assert [r["step"] for r in res.history] == [1, 2]
    for step in (0, 1):
        before = train(cfg.replace(steps=step), progress=False).method     # the weights before it
        x = _step_batch(res.config, step)
        batch = before.prepare_batch(x, None)
        assert len(batch.x0) == 2 * len(x) and batch.n_images == len(x)
        with torch.no_grad():
            want = before.loss(batch).double().sum().item() / batch.n_images
        assert res.history[step]["loss"] == pytest.approx(want, rel=1e-5), step


def test_duplicated_items_double_the_loss_per_image(toy_methods):
    """The same m images twice with n_images = m: the loss is twice the plain method's (not the
    mean over items), and the first step's gradient too (SGD makes the scale visible)."""
    plain = _run("test-det", 1)
    twice = _run("test-twice", 1)
    assert twice.history[0]["loss"] == pytest.approx(2 * plain.history[0]["loss"], rel=1e-6)
    # the gradient doubles: with SGD, the first step moves the weights twice as far
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.optim, "AdamW", lambda params, lr, **kw: torch.optim.SGD(params, lr=lr))
        init = _run("test-det", 0).method.state_dict()
        d1 = _run("test-det", 1, lr=0.1).method.state_dict()
        d2 = _run("test-twice", 1, lr=0.1).method.state_dict()
    for k in init:
        torch.testing.assert_close(d2[k] - init[k], 2 * (d1[k] - init[k]), rtol=1e-4, atol=1e-7)


def test_a_batch_without_images_is_refused(toy_methods):
    with pytest.raises(ValueError, match=r"test-zero\.prepare_batch gave n_images=0"):
        _run("test-zero", 1)


def test_a_method_that_cannot_sample_alone_trains_without_grids(toy_methods, tmp_path):
    with pytest.warns(RuntimeWarning, match="cannot sample by itself") as record:
        res = _run("test-nosample", 3, sample_every=1, out_dir=str(tmp_path))
    assert sum("cannot sample by itself" in str(w.message) for w in record) == 1    # warned once
    assert res.step == 3 and res.samples == []
    assert not list(tmp_path.glob("samples/*.png"))
    assert (tmp_path / "latest.pt").is_file()
    assert [json.loads(s)["step"] for s in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_toy_methods_are_gone_after_the_fixture():
    assert sorted(METHODS) == BUILTIN
    with pytest.raises(ValueError, match="method.name='test-flip' is unknown"):
        TrainConfig.flat(method="test-flip")


def test_register_checks_the_options():
    class Bad(EDMMethod):
        pass

    with pytest.raises(TypeError, match="must default to 'test-other'"):
        register("test-other", _FlipOptions)(Bad)
    with pytest.raises(TypeError, match="subclassing MethodOptions"):
        register("test-other", dict)(Bad)
    assert "test-other" not in METHODS


# ----------------------------------------------------------------------------------------------
# Imports.

def _modules() -> list[str]:
    """Every module of pdlib (packages by their name), except `python -m` entry points."""
    out = []
    for path in sorted(PDLIB.rglob("*.py")):
        parts = path.relative_to(PDLIB.parent).with_suffix("").parts
        if parts[-1] == "__main__":
            continue
        out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


def test_every_module_imports_first_in_a_fresh_interpreter():
    """Each pdlib module imported first (pdlib's modules dropped from sys.modules between
    imports, torch kept), in a random order: a circular import fails whichever module starts."""
    mods = _modules()
    assert {"pdlib", "pdlib.config", "pdlib.methods", "pdlib.train.loop", "pdlib.nets.dit"} <= set(mods)
    seed = random.randrange(2 ** 32)
    order = mods[:]
    random.Random(seed).shuffle(order)
    script = (
        "import importlib, json, sys, traceback\n"
        "import torch\n"
        "bad = {}\n"
        f"for name in {order!r}:\n"
        "    for m in [m for m in sys.modules if m == 'pdlib' or m.startswith('pdlib.')]:\n"
        "        del sys.modules[m]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as e:\n"
        "        bad[name] = traceback.format_exc(limit=-3)\n"
        "print(json.dumps(bad))\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=PDLIB.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    bad = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not bad, f"order seed {seed}: " + "\n".join(f"{k}:\n{v}" for k, v in bad.items())


def _module_level_imports(path: Path, name: str, modules: set[str]) -> set[str]:
    """The pdlib modules that `name` (file `path`) imports when it is executed: its module-level
    import statements (also inside top-level if/try/with, not under `if TYPE_CHECKING`)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()

    def target(mod: str) -> str | None:
        while mod and mod not in modules:          # pdlib.x.Name → pdlib.x
            mod = mod.rpartition(".")[0]
        return mod or None

    def visit(stmts):
        for node in stmts:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == "pdlib" or alias.name.startswith("pdlib."):
                        found.add(target(alias.name))
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package
                    for _ in range(node.level - 1):
                        base = base.rpartition(".")[0]
                    mod = f"{base}.{node.module}" if node.module else base
                else:
                    mod = node.module or ""
                if mod == "pdlib" or mod.startswith("pdlib."):
                    for alias in node.names:      # `from pkg import submodule` imports the submodule
                        sub = f"{mod}.{alias.name}"
                        found.add(sub if sub in modules else target(mod))
            elif isinstance(node, ast.If):
                test = node.test
                if not (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING"
                        or isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for h in node.handlers:
                    visit(h.body)
                visit(node.orelse)
                visit(node.finalbody)
            elif isinstance(node, ast.With):
                visit(node.body)

    visit(tree.body)
    found.discard(None)
    found.discard(name)
    return found


def test_the_module_level_import_graph_has_no_cycle():
    files = {}
    for path in sorted(PDLIB.rglob("*.py")):
        parts = path.relative_to(PDLIB.parent).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    modules = set(files)
    graph = {name: _module_level_imports(path, name, modules) for name, path in files.items()}
    # the graph is the real one: a few edges every version has
    assert "pdlib.methods" in graph["pdlib.config"]
    assert "pdlib.nets.dit" in graph["pdlib.nets"]                      # a relative import
    assert "pdlib.train.state" in graph["pdlib.train.loop"]            # from pdlib.train import state
    state, stack, cycles = {}, [], []

    def dfs(u):
        state[u] = "open"
        stack.append(u)
        for v in sorted(graph[u]):
            if state.get(v) == "open":
                cycles.append(stack[stack.index(v):] + [v])
            elif v not in state:
                dfs(v)
        stack.pop()
        state[u] = "done"

    for u in sorted(graph):
        if u not in state:
            dfs(u)
    assert not cycles, "module-level import cycles: " + "; ".join(" → ".join(c) for c in cycles)
