"""JupyterLab as a fresh clone meets it (`make lab`, README "JupyterLab"): the server starts as root,
the notebooks are trusted and open without being modified (kernelspec, language_info, the numbers
in their widget state are what Lab would write back), and the experiment notebooks write their runs
under runs/ at the repository root wherever the kernel runs."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAKEFILE = (ROOT / "Makefile").read_text()
NOTEBOOKS = sorted([*ROOT.glob("notebooks/*.ipynb"), *ROOT.glob("notebooks/experiments/*.ipynb"),
                    *ROOT.glob("book/*.ipynb")])
EXPERIMENTS = ROOT / "notebooks" / "experiments"
OVERRIDES = ROOT / "book" / "lab-overrides.json"


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _normalizer():
    spec = importlib.util.spec_from_file_location("normalize_notebooks", ROOT / "scripts" / "normalize_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _makefile_kernelspec() -> dict:
    """The kernelspec the Makefile installs (its KERNELSPEC line)."""
    line = re.search(r"^KERNELSPEC\s*:=\s*(.*)$", MAKEFILE, re.M)
    assert line, "Makefile: no KERNELSPEC := ... line"
    m = re.fullmatch(r'\$\(BIN\)/python -m ipykernel install --sys-prefix --name (\S+) --display-name "([^"]+)"',
                     line.group(1).strip())
    assert m, f"Makefile: KERNELSPEC is not an ipykernel install with --name and --display-name: {line.group(1)}"
    return {"name": m.group(1), "display_name": m.group(2), "language": "python"}


def _recipe(target: str) -> str:
    m = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n)+)", MAKEFILE, re.M)
    assert m, f"Makefile: no recipe for {target}"
    return m.group(1)


def test_every_notebook_stores_the_kernelspec_the_makefile_installs():
    spec = _makefile_kernelspec()
    assert "\t$(KERNELSPEC)" in _recipe("$(STAMP)"), "the venv target must install the kernelspec with $(KERNELSPEC)"
    assert NOTEBOOKS
    bad = {_rel(p): json.loads(p.read_text())["metadata"].get("kernelspec") for p in NOTEBOOKS}
    bad = {k: v for k, v in bad.items() if v != spec}
    assert not bad, f"JupyterLab rewrites these notebooks' kernelspec to {spec} on open: {bad}"


def test_installed_kernelspec_matches_the_notebooks():
    spec = _makefile_kernelspec()
    kernel_json = ROOT / ".venv" / "share" / "jupyter" / "kernels" / spec["name"] / "kernel.json"
    if not kernel_json.is_file():
        pytest.skip("no .venv kernelspec installed (make venv)")
    installed = json.loads(kernel_json.read_text())
    assert {"display_name": installed["display_name"], "language": installed["language"]} == \
        {"display_name": spec["display_name"], "language": spec["language"]}, \
        f"{kernel_json} differs from what the notebooks store: run make lab (or {spec})"
    kernelspec = pytest.importorskip("jupyter_client.kernelspec")
    if Path(sys.prefix).resolve() == (ROOT / ".venv").resolve():   # the spec this environment's Lab would pick
        found = kernelspec.KernelSpecManager().get_kernel_spec(spec["name"])
        assert found.display_name == spec["display_name"], f"{found.resource_dir} shadows the venv's kernelspec"


def test_language_info_is_the_kernels():
    """Lab writes the kernel's language_info into the notebook when the kernel starts: store the full
    record (the patch version can only match the Python the notebooks were executed with)."""
    infos = {_rel(p): json.loads(p.read_text())["metadata"].get("language_info") for p in NOTEBOOKS}
    reference = infos["notebooks/01_sigma_space.ipynb"]
    assert reference["name"] == "python" and reference["pygments_lexer"] == "ipython3"
    differ = {k: v for k, v in infos.items() if v != reference}
    assert not differ, f"language_info differs from chapter 1's {reference}: {differ}"
    assert reference["version"].split(".")[:2] == [str(v) for v in sys.version_info[:2]], \
        f"notebooks executed with Python {reference['version']}, this is {sys.version.split()[0]}"


def test_notebooks_are_stored_as_lab_saves_them():
    """No integral float (Lab writes 100.0 back as 100) and nbformat's layout: a save changes nothing."""
    lab_text = _normalizer().lab_text
    import nbformat

    differ = [_rel(p) for p in NOTEBOOKS
              if lab_text(nbformat.reads(p.read_text(), as_version=nbformat.NO_CONVERT)) != p.read_text()]
    assert not differ, ("JupyterLab would rewrite these on save; run "
                        f"python scripts/normalize_notebooks.py {' '.join(differ)}")


def test_normalizer_writes_integral_floats_as_javascript_does():
    norm = _normalizer()
    value = {"a": 100.0, "b": [0.0, 0.5, -3.0, 1e-05, 2], "c": True, "d": None, "e": float("nan")}
    out = norm.lab_form(value)
    assert out["a"] == 100 and type(out["a"]) is int and out["b"][1] == 0.5 and type(out["b"][2]) is int
    assert out["b"][3] == 1e-05 and out["c"] is True and out["d"] is None and out["e"] != out["e"]
    assert norm.integral_floats(value) == ["/a", "/b/0", "/b/2"]


def _defaults(name: str, **given) -> dict:
    """Run the parameters cell, papermill-style overrides, and the cell after it (the path defaults)."""
    cells = json.loads((EXPERIMENTS / name).read_text())["cells"]
    i = next(i for i, c in enumerate(cells) if "parameters" in c["metadata"].get("tags", []))
    ns: dict = {}
    exec("".join(cells[i]["source"]), ns)
    ns.update(given)                                    # papermill injects its cell right after parameters
    exec("".join(cells[i + 1]["source"]), ns)
    return ns


@pytest.mark.parametrize("name, keys", [("train.ipynb", ["out_dir"]),
                                        ("evaluate.ipynb", ["checkpoint", "out_json", "out_grid"])])
def test_experiment_defaults_are_under_runs_at_the_repository_root(name, keys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                         # JupyterLab's kernel runs in notebooks/experiments/
    ns = _defaults(name)
    for key in keys:
        path = Path(ns[key])
        assert path.is_absolute() and path.is_relative_to(ROOT / "runs"), f"{name}: {key}={ns[key]!r}"
    given = _defaults(name, **{k: f"elsewhere/{k}" for k in keys})
    assert all(given[k] == f"elsewhere/{k}" for k in keys), f"{name}: a given path must be kept"


def test_train_default_run_is_what_evaluate_reads():
    assert Path(_defaults("evaluate.ipynb")["checkpoint"]) == Path(_defaults("train.ipynb")["out_dir"]) / "latest.pt"


def _make_n_lab() -> list[str]:
    if shutil.which("make") is None:
        pytest.skip("no make")
    out = subprocess.run(["make", "-n", "-o", ".venv/.installed", "lab"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    return out.splitlines()


def test_make_lab_trusts_then_starts_as_root_on_localhost():
    recipe = _recipe("lab")
    assert re.search(r"\$\(BIN\)/jupyter trust .*\$\(LAB_NOTEBOOKS\) >/dev/null$", recipe, re.M), "no trust step"
    m = re.search(r"^LAB_NOTEBOOKS\s*:=\s*(.*)$", MAKEFILE, re.M)
    assert m and m.group(1).split() == ["notebooks/*.ipynb", "notebooks/experiments/*.ipynb", "book/*.ipynb"]
    assert "$(KERNELSPEC)" in recipe and "book/lab-overrides.json $(LAB_SETTINGS)" in recipe
    assert "$(if $(filter 0,$(shell id -u)),--allow-root)" in recipe
    assert "PDLIB_QUICK=1 make lab" in recipe and "runs/" in recipe
    lines = _make_n_lab()
    trust = next(i for i, l in enumerate(lines) if "jupyter trust" in l)
    lab = next(i for i, l in enumerate(lines) if "/jupyter lab " in l)
    assert trust < lab
    command = " ".join(lines[lab:lab + 2])
    assert "--ServerApp.ip=localhost" in command and f'--ServerApp.root_dir="{ROOT}"' in command
    assert ("--allow-root" in command) == (os.geteuid() == 0)


def test_lab_overrides_name_installed_settings():
    overrides = json.loads(OVERRIDES.read_text())
    assert overrides["@jupyter-widgets/jupyterlab-manager:plugin"] == {"saveState": False}
    share = ROOT / ".venv" / "share" / "jupyter"
    if not (share / "lab" / "schemas").is_dir():
        pytest.skip("no .venv JupyterLab")
    for plugin, settings in overrides.items():
        package, name = plugin.split(":")
        schemas = [share / "lab" / "schemas" / package / f"{name}.json",
                   share / "labextensions" / package / "schemas" / package / f"{name}.json"]
        schema = next((p for p in schemas if p.is_file()), None)
        assert schema, f"{plugin}: no such installed Lab plugin schema ({schemas})"
        properties = json.loads(schema.read_text())["properties"]
        assert set(settings) <= set(properties), f"{plugin}: unknown settings {set(settings) - set(properties)}"


def test_gitignore_covers_what_lab_sessions_write():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    for path in ["runs/train/latest.pt", "notebooks/experiments/runs/x/ckpt.pt", "notebooks/runs/x/ckpt.pt",
                 "notebooks/.ipynb_checkpoints/01_sigma_space-checkpoint.ipynb",
                 "notebooks/experiments/.virtual_documents/train.ipynb", ".jupyter_ystore.db"]:
        assert subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT).returncode == 0, f"{path} is not git-ignored"


@pytest.mark.slow
def test_lab_server_serves_trusted_notebooks_and_saves_them_unchanged(tmp_path):
    """A real server on copies of the notebooks: `jupyter trust` (in a scratch data dir) makes every
    code cell trusted in the contents API, and saving each one back as the browser would (its numbers
    through JavaScript) leaves the file byte-identical."""
    bin_dir = Path(sys.executable).parent
    if not (bin_dir / "jupyter-lab").exists():
        pytest.skip("JupyterLab is not installed in this environment")
    root = tmp_path / "repo"
    for p in NOTEBOOKS:
        (root / _rel(p)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, root / _rel(p))
    env = dict(os.environ, JUPYTER_DATA_DIR=str(tmp_path / "data"), JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"))
    subprocess.run([str(bin_dir / "jupyter"), "trust", "--log-level=ERROR", *[_rel(p) for p in NOTEBOOKS]],
                   cwd=root, env=env, check=True, capture_output=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = "test-lab-token"
    server = subprocess.Popen([str(bin_dir / "jupyter"), "lab", "--no-browser", f"--port={port}",
                               "--ServerApp.port_retries=0", "--ServerApp.ip=localhost",
                               f"--ServerApp.root_dir={root}", f"--IdentityProvider.token={token}",
                               *(["--allow-root"] if os.geteuid() == 0 else [])],
                              cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def api(path, method="GET", body=None):
        req = urllib.request.Request(f"http://localhost:{port}/api/contents/{path}?token={token}", method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())

    try:
        for _ in range(120):
            try:
                api("")
                break
            except OSError:
                if server.poll() is not None:
                    pytest.fail(f"jupyter lab exited: {server.stderr.read()[-2000:]}")
                time.sleep(0.5)
        lab_form = _normalizer().lab_form
        for p in NOTEBOOKS:
            before = (root / _rel(p)).read_bytes()
            model = api(_rel(p))
            code = [c for c in model["content"]["cells"] if c["cell_type"] == "code"]
            assert code and all(c["metadata"].get("trusted") for c in code), f"{_rel(p)} is not trusted"
            api(_rel(p), "PUT", {"type": "notebook", "format": "json",
                                 "content": lab_form(json.loads(json.dumps(model["content"])))})
            assert (root / _rel(p)).read_bytes() == before, f"{_rel(p)}: saving it unchanged rewrote the file"
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_normalizer_drops_widget_state_that_no_output_shows():
    n = _normalizer()
    state = {"application/vnd.jupyter.widget-state+json": {"state": {}, "version_major": 2}}
    view = {"output_type": "display_data", "metadata": {},
            "data": {n.WIDGET_VIEW: {"model_id": "abc"}, "text/plain": ["w"]}}
    cell = lambda outputs: {"cell_type": "code", "source": "", "metadata": {}, "outputs": outputs,  # noqa: E731
                            "execution_count": 1}
    stale = {"cells": [cell([])], "metadata": {"widgets": state, "kernelspec": {}}, "nbformat": 4,
             "nbformat_minor": 5}
    kept = dict(stale, cells=[cell([view])])
    assert "widgets" not in n.without_stale_widgets(stale)["metadata"]
    assert n.without_stale_widgets(stale)["metadata"]["kernelspec"] == {}
    assert n.without_stale_widgets(kept) is kept
    assert "widgets" in stale["metadata"]                   # the input is not changed
