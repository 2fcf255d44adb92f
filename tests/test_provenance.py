"""Provenance of results (pdlib.provenance): the git state inside and outside a checkout, the
record's keys and times, what evaluate_checkpoint, the benchmarks' write_json and the full-run
job runner write, the results page's provenance_table, that no table mistakes a provenance file
for an evaluation, and that the commands of results/*/README.md run on a fresh clone.

Fast (~10 s): one 1-step training of the tiny U-Net on 8×8 digits, two sampled images."""
from __future__ import annotations

import datetime
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pdlib import provenance as P
from pdlib.book import REPO_ROOT, evaluation_files
from pdlib.book import results as R

ROOT = Path(__file__).resolve().parents[1]
HAVE_GIT = shutil.which("git") is not None
need_git = pytest.mark.skipif(not HAVE_GIT, reason="git is not installed")
TOP_KEYS = {"git", "machine", "config", "seed", "started", "ended", "argv"}
GIT_KEYS = {"revision", "dirty", "changed_files", "changed"}


def _git(cwd, *args) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True,
                          timeout=30).stdout.strip()


def _iso_utc(text: str) -> datetime.datetime:
    t = datetime.datetime.fromisoformat(text)
    assert t.utcoffset() == datetime.timedelta(0), text
    return t


# ----------------------------------------------------------------------------------------------
# git_state, machine, provenance.

@need_git
def test_git_state_of_this_checkout_is_its_head():
    if not (ROOT / ".git").exists():
        pytest.skip("not run from a git checkout")
    g = P.git_state(ROOT)
    assert set(g) == GIT_KEYS
    assert re.fullmatch(r"[0-9a-f]{40}", g["revision"]) and g["revision"] == _git(ROOT, "rev-parse", "HEAD")
    assert isinstance(g["dirty"], bool) and g["dirty"] == (g["changed_files"] > 0)
    assert len(g["changed"]) == min(g["changed_files"], P.MAX_LISTED)


@need_git
def test_dirty_follows_a_modified_tracked_file(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "a.txt").write_text("one\n")
    _git(repo, "add", "a.txt")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false",
         "commit", "-q", "-m", "first")
    clean = P.git_state(repo)
    assert clean == dict(revision=_git(repo, "rev-parse", "HEAD"), dirty=False, changed_files=0, changed=[])
    (repo / "new.txt").write_text("untracked\n")                 # untracked files do not count
    assert P.git_state(repo)["dirty"] is False
    (repo / "a.txt").write_text("two\n")
    dirty = P.git_state(repo)
    assert dirty["revision"] == clean["revision"] and dirty["dirty"] is True
    assert (dirty["changed_files"], dirty["changed"]) == (1, ["a.txt"])
    (repo / "sub").mkdir()
    assert P.git_state(repo / "sub")["revision"] is None          # inside a checkout, not its top


def test_git_state_outside_a_checkout_is_none(tmp_path, monkeypatch):
    none = dict(revision=None, dirty=None, changed_files=None, changed=None)
    assert P.git_state(tmp_path) == none                         # tmp_path: no repository above it
    assert P.git_state(tmp_path / "missing") == none
    monkeypatch.setenv("PATH", str(tmp_path))                     # no git on the PATH
    assert P.git_state(ROOT) == none


def test_machine_names_no_host():
    m = P.machine("cpu", threads=3)
    assert {"python", "torch", "platform", "cpu", "cpu_count", "torch_threads", "cpu_capability",
            "gpu"} <= set(m)
    assert m["torch_threads"] == 3 and m["gpu"] is None and m["torch"] == torch.__version__
    import socket
    host = socket.gethostname()
    assert len(host) < 4 or host not in json.dumps(m)            # no host name (privacy)
    assert P.machine("auto")["cpu"] == m["cpu"]                  # not a device yet: no error


def test_provenance_keys_and_iso_utc_times():
    t0 = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    p = P.provenance({"lr": 1e-3}, 7, t0, t0.timestamp() + 60, argv=["x", str(Path.home() / "f")])
    assert set(p) == TOP_KEYS and set(p["git"]) == GIT_KEYS
    assert (p["config"], p["seed"]) == ({"lr": 1e-3}, 7)
    assert (p["started"], p["ended"]) == ("2026-01-02T03:04:05+00:00", "2026-01-02T03:05:05+00:00")
    assert p["argv"] == ["x", "~/f"]
    now = P.provenance()                                          # defaults: now, sys.argv
    assert _iso_utc(now["started"]) <= _iso_utc(now["ended"]) and now["argv"][0] == sys.argv[0].replace(
        str(Path.home()), "~", 1)
    given = dict(revision="f" * 40, dirty=False, changed_files=0, changed=[])
    assert P.provenance(git=given)["git"] == given               # a state taken earlier
    json.dumps(p, allow_nan=False)


# ----------------------------------------------------------------------------------------------
# What writes it.

@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from pdlib.train import TrainConfig, train
    out = tmp_path_factory.mktemp("tiny")
    cfg = TrainConfig.flat(dataset="digits", resolution=8, preset="tiny", batch_size=16, warmup_steps=0,
                           log_every=1, sample_every=0, sample_n=4, sample_steps=2, ckpt_every=0,
                           device="cpu", steps=1, out_dir=str(out / "run"), seed=3)
    return train(cfg, progress=False).checkpoint


def test_evaluate_checkpoint_records_provenance(tiny_checkpoint, tmp_path):
    from pdlib.evaluation import evaluate_checkpoint
    from pdlib.pretrained import load_method
    out = tmp_path / "eval.json"
    result, _ = evaluate_checkpoint(str(tiny_checkpoint), n_samples=2, steps=2, seed=5, metrics=(),
                                    progress=False, out_json=out)
    p = result["provenance"]
    assert set(p) == TOP_KEYS and p["seed"] == 5
    assert p["config"] == load_method(tiny_checkpoint).cfg.to_dict()      # the full training config
    assert p["config"]["optim"]["seed"] == 3 and p["config"]["data"]["dataset"] == "digits"
    assert p["git"] == P.git_state()
    assert p["machine"]["torch_threads"] == torch.get_num_threads()
    assert _iso_utc(p["started"]) <= _iso_utc(p["ended"])
    assert json.loads(out.read_text())["provenance"] == json.loads(json.dumps(p))
    # the book's readers take it for an evaluation and find no metric in it
    assert not [k for k in result if "@" in k]


def test_a_split_models_config_is_its_members_configs():
    from types import SimpleNamespace

    from pdlib.evaluation import training_config
    member = lambda i: SimpleNamespace(cfg=SimpleNamespace(to_dict=lambda: {"model": i}))  # noqa: E731
    assert training_config(member(0)) == {"model": 0}
    assert training_config(SimpleNamespace(methods=[member(0), member(1)])) == [{"model": 0}, {"model": 1}]
    assert training_config(SimpleNamespace()) is None


def _bench_common():
    spec = importlib.util.spec_from_file_location("bench_common_for_test", ROOT / "benchmarks" / "common.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_benchmark_json_carries_git_and_times(tmp_path):
    common = _bench_common()
    path = common.write_json(tmp_path / "sub" / "b.json", dict(benchmark="x", quick=True),
                             torch.device("cpu"))
    d = json.loads(path.read_text())
    assert d["git"] == P.git_state(ROOT) and d["benchmark"] == "x"
    assert {"python", "torch", "platform", "cpu", "cpu_count", "torch_threads", "cpu_capability",
            "device", "load_average_1_5_15"} <= set(d["machine"])       # the keys it always had
    assert d["machine"]["device"] == "cpu" and "gpu" not in d["machine"]
    assert d["created"] == d["ended"] and _iso_utc(d["started"]) <= _iso_utc(d["ended"])
    assert R.provenance_table(tmp_path / "sub").values["recorded"] == {"b": True}


def test_full_runs_writes_a_trainings_provenance(tmp_path, monkeypatch):
    """notebook_runner with papermill replaced by a stand-in that writes the run folder."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import full_runs
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    run_dir = tmp_path / "runs" / "w-s2"
    cfg = {"version": 2, "optim": {"seed": 2, "lr": 5e-4}, "run": {"steps": 4}}

    real_run = subprocess.run

    def fake_papermill(cmd, **kw):                  # (subprocess.run is the module's: git uses it too)
        if Path(cmd[0]).name != "papermill":
            return real_run(cmd, **kw)
        params = json.loads(cmd[cmd.index("-y") + 1])
        assert kw["env"]["OMP_NUM_THREADS"] == "1" and params["out_dir"] == str(run_dir)
        run_dir.mkdir(parents=True)
        (run_dir / "config.json").write_text(json.dumps(cfg))
        (run_dir / "metrics.jsonl").write_text('{"step": 4}\n')
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(full_runs.subprocess, "run", fake_papermill)
    out = tmp_path / "results"
    job = dict(name="w-s2", kind="train", params=dict(out_dir=str(run_dir), steps=4, seed=2))
    full_runs.notebook_runner(tmp_path / "runs", out)(job)
    done = json.loads((run_dir / "done.json").read_text())
    prov = json.loads((out / "w-s2.provenance.json").read_text())
    assert done["provenance"] == prov and done["seconds"] >= 0
    assert TOP_KEYS <= set(prov) and (prov["config"], prov["seed"]) == (cfg, 2)
    assert prov["machine"]["torch_threads"] == 1 and prov["git"] == P.git_state(ROOT)
    assert prov["job"] == dict(name="w-s2", kind="train", params=job["params"])
    assert _iso_utc(prov["started"]) <= _iso_utc(prov["ended"])
    assert sorted(f.name for f in out.iterdir()) == ["w-s2.config.json", "w-s2.metrics.jsonl",
                                                      "w-s2.provenance.json"]
    t = R.provenance_table(out)
    assert [r[:2] for r in t.rows] == [["w-s2 (training)", "training"]]


# ----------------------------------------------------------------------------------------------
# The results page, and the readers of results folders.

def test_provenance_table_says_not_recorded_for_older_files(tmp_path):
    prov = P.provenance({"a": 1}, 0, argv=[], git=dict(revision="0123456789" + "a" * 30, dirty=True,
                                                        changed_files=2, changed=["x", "y"]),
                        threads=1)
    (tmp_path / "new.json").write_text(json.dumps({"method": "edm", "FID@1k": 1.0, "provenance": prov}))
    (tmp_path / "old.json").write_text(json.dumps({"method": "edm", "FID@1k": 2.0}))
    (tmp_path / "old.config.json").write_text("{}")                # a training config: no row
    t = R.provenance_table(tmp_path)
    assert [r[0] for r in t.rows] == ["new", "old"]
    new, old = t.rows
    assert new[1:4] == ["evaluation", "`0123456`", "yes (2 files)"]
    assert new[4].endswith(" UTC") and new[4][:10] == prov["ended"][:10]
    assert new[5] == f"{prov['machine']['cpu']}, 1 thread of {prov['machine']['cpu_count']}"
    assert old[1:] == ["evaluation"] + [R.NOT_RECORDED] * 4
    assert t.values["recorded"] == {"new": True, "old": False}
    assert t.values["revision"]["new"] == prov["git"]["revision"] and t.values["dirty"]["new"] is True
    assert all(len(r) == len(t.header) for r in t.rows) and "not recorded" in t.markdown
    with pytest.raises(FileNotFoundError, match="no such results folder"):
        R.provenance_table(tmp_path / "missing")


def test_evaluation_files_skip_configs_and_provenance(tmp_path):
    for name in ("a.json", "a.config.json", "a.provenance.json", "a-k5.json", "b.metrics.jsonl"):
        (tmp_path / name).write_text("{}")
    assert [f.name for f in evaluation_files(tmp_path)] == ["a-k5.json", "a.json"]
    assert [f.name for f in evaluation_files(tmp_path, "a-k*.json")] == ["a-k5.json"]


def _with_provenance_files(src: Path, dst: Path) -> Path:
    """A copy of a committed results folder with a NAME.provenance.json beside every NAME.config.json."""
    shutil.copytree(src, dst)
    for cfg in src.glob("*.config.json"):
        name = cfg.name[:-len(".config.json")]
        prov = P.provenance(json.loads(cfg.read_text()), 0, argv=[], threads=1)
        prov["job"] = dict(name=name, kind="train", params={})
        (dst / f"{name}.provenance.json").write_text(json.dumps(prov))
    return dst


@pytest.mark.parametrize("module, function, folder", [
    ("pdlib.book.results", "full_runs_table", "ch03_full"),
    ("pdlib.book.ch04", "evaluations_table", "ch04_full"),
    ("pdlib.book.ch04", "fid_time_table", "ch04_full"),
    ("pdlib.book.ch05", "runs_table", "ch05_full"),
    ("pdlib.book.ch05", "steps_table", "ch05_full"),
    ("pdlib.book.ch06", "evals_table", "ch06_full"),
])
def test_tables_do_not_take_a_provenance_file_for_an_evaluation(module, function, folder, tmp_path):
    import importlib
    src = REPO_ROOT / "results" / folder
    if not evaluation_files(src):
        pytest.skip(f"results/{folder}/ holds no evaluations")
    fn = getattr(importlib.import_module(module), function)
    before = fn(folder=src)
    after = fn(folder=_with_provenance_files(src, tmp_path / folder))
    assert list((tmp_path / folder).glob("*.provenance.json"))
    assert after.rows == before.rows


def test_ch07_evals_table_skips_provenance_files(tmp_path):
    from pdlib.book import ch07
    ev = {"method": "edm", "steps": 9, "FID@500": 90.0, "KID@500": 0.05, "precision@500": 0.5,
          "recall@500": 0.25, "sampling_seconds": 10.0, "nfe_per_image": 17.0, "sample_options": {},
          "checkpoint": "runs/ch07_full/edm32/latest.pt", "resolution": 32}
    (tmp_path / "edm32-s9.json").write_text(json.dumps(ev))
    (tmp_path / "edm32.config.json").write_text("{}")
    (tmp_path / "edm32.provenance.json").write_text(json.dumps(P.provenance({"method": {"name": "edm"}}, 0,
                                                                            argv=[])))
    assert list(ch07.evals_table(tmp_path).values["evals"]) == ["edm32-s9"]


# ----------------------------------------------------------------------------------------------
# The commands of results/*/README.md.

# papermill's options that take values (papermill --help), and how many: skipped when looking
# for its two paths (the other options are flags)
PAPERMILL_OPTS = {"-p": 2, "--parameters": 2, "-r": 2, "--parameters_raw": 2, "-f": 1,
                  "--parameters_file": 1, "-y": 1, "--parameters_yaml": 1, "-b": 1,
                  "--parameters_base64": 1, "--engine": 1, "--autosave-cell-every": 1, "-k": 1,
                  "--kernel": 1, "-l": 1, "--language": 1, "--cwd": 1, "--stdout-file": 1,
                  "--stderr-file": 1, "--log-level": 1, "--start-timeout": 1, "--start_timeout": 1,
                  "--execution-timeout": 1}


def _shell_blocks(markdown: str) -> list[str]:
    """The fenced code blocks tagged bash, sh, shell or console (or untagged)."""
    return [m.group(2) for m in re.finditer(r"^```[ \t]*(bash|sh|shell|console)?[ \t]*\n(.*?)^```",
                                            markdown, flags=re.S | re.M)]


def _commands(block: str) -> list[list[str]]:
    """The block's commands as words: backslash-newlines joined, comments dropped, split at
    newlines, ;, && and ||."""
    text = block.replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        cmd = []
        for w in words + [";"]:
            if w in (";", "&&", "||"):
                if cmd:
                    out.append(cmd)
                cmd = []
            else:
                cmd.append(w)
    return out


def _papermill_output(words: list[str]) -> str | None:
    """The output notebook of a papermill command (its second positional argument); None if the
    command does not run papermill or names no output (stdout)."""
    at = next((i for i, w in enumerate(words) if Path(w).name == "papermill"), None)
    if at is None:
        return None
    positional, i = [], at + 1
    while i < len(words):
        w = words[i]
        if w.startswith("-") and w != "-":
            i += 1 + (0 if "=" in w else PAPERMILL_OPTS.get(w, 0))     # --cwd=x: its value inside
            continue
        positional.append(w)
        i += 1
    return positional[1] if len(positional) >= 2 else None


def unwritable_papermill_outputs(markdown: str, tracked_dirs: set[str]) -> list[str]:
    """The papermill commands of a README whose output notebook's folder neither exists in a
    fresh clone (`tracked_dirs`: folders holding a tracked file, '' the repository root) nor is
    made by an earlier `mkdir -p` (or `mkdir`) of the same block."""
    bad = []
    for block in _shell_blocks(markdown):
        made: set[str] = set()
        for words in _commands(block):
            if words and words[0] == "mkdir":
                parents = any(re.fullmatch(r"-[a-zA-Z]*p[a-zA-Z]*|--parents", w) for w in words[1:])
                for d in (w for w in words[1:] if not w.startswith("-")):
                    p = Path(d.rstrip("/"))
                    made.add(p.as_posix())
                    if parents:
                        made.update(q.as_posix() for q in p.parents if q.as_posix() != ".")
                continue
            out = _papermill_output(words)
            if out is None or out == "-":
                continue
            folder = Path(out).parent.as_posix()
            folder = "" if folder == "." else folder
            if folder not in tracked_dirs and folder not in made:
                bad.append(f"{out} (folder {folder!r}): {shlex.join(words)[:120]}")
    return bad


def _tracked_dirs() -> set[str]:
    files = _git(ROOT, "ls-files").splitlines()
    dirs = {""}
    for f in files:
        dirs.update(q.as_posix() for q in Path(f).parents if q.as_posix() != ".")
    return dirs


def test_the_readme_checker_finds_a_missing_folder():
    cmd = ("```bash\n.venv/bin/papermill notebooks/experiments/train.ipynb runs/x/train.out.ipynb \\\n"
           "    -p out_dir runs/x   # a comment\n```\n")
    tracked = {"", "notebooks", "notebooks/experiments", "results", "results/baseline"}
    assert len(unwritable_papermill_outputs(cmd, tracked)) == 1
    assert unwritable_papermill_outputs("```bash\nmkdir -p runs/x\n" + cmd[8:], tracked) == []
    assert unwritable_papermill_outputs("```bash\nmkdir -p runs && " + cmd[8:].replace("runs/x/", "runs/"),
                                        tracked) == []
    assert len(unwritable_papermill_outputs("```bash\nmkdir -p runs/y\n" + cmd[8:], tracked)) == 1
    assert unwritable_papermill_outputs(cmd.replace("runs/x/", "results/baseline/"), tracked) == []
    assert unwritable_papermill_outputs("```python\n" + cmd[8:], tracked) == []   # not a shell block
    assert _papermill_output(shlex.split("OMP_NUM_THREADS=1 papermill -k python3 --cwd . a.ipynb b.ipynb "
                                         "-p n 1")) == "b.ipynb"


@need_git
def test_results_readme_commands_write_into_folders_that_exist():
    """Every papermill command in a shell code block of results/*/README.md writes its output
    notebook into a folder that exists in a fresh clone (one that holds a tracked file: git keeps
    no empty folders, and runs/ is git-ignored), or that an earlier `mkdir -p` of the same code
    block creates: papermill writes the output notebook before the first cell runs and does not
    create its folder, so the command fails as written otherwise. A static check of the README
    text (nothing is run)."""
    if not (ROOT / ".git").exists():
        pytest.skip("not run from a git checkout")
    tracked = _tracked_dirs()
    readmes = sorted((ROOT / "results").glob("*/README.md"))
    assert readmes
    checked = sum(1 for r in readmes for b in _shell_blocks(r.read_text())
                  for w in _commands(b) if _papermill_output(w))
    assert checked >= 2                                      # the baseline's train and evaluate
    bad = {r.relative_to(ROOT).as_posix(): b for r in readmes
           if (b := unwritable_papermill_outputs(r.read_text(), tracked))}
    assert not bad, bad


def test_provenance_summary_counts_recorded_files_per_folder(tmp_path, monkeypatch):
    def prov(sha, dirty):
        return P.provenance({}, 0, argv=[], git=dict(revision=sha * 40, dirty=dirty,
                                                      changed_files=int(dirty), changed=[]),
                            threads=1)
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "x.json").write_text(json.dumps({"method": "edm", "provenance": prov("1", False)}))
    (a / "y.json").write_text(json.dumps({"method": "edm", "provenance": prov("2", True)}))
    (b / "old.json").write_text(json.dumps({"method": "edm"}))
    monkeypatch.setattr(R, "_added_in", lambda: {"b/old.json": "abcdef0", "a/x.json": "9999999"})
    t = R.provenance_summary_table([a, b])
    assert t.values["files"] == {"a": 2, "b": 1} and t.values["recorded"] == {"a": 2, "b": 0}
    assert t.values["revisions"] == {"a": ["1111111", "2222222"], "b": []}
    assert t.values["added_in"] == {"a": [], "b": ["abcdef0"]}   # only files without a record
    ra, rb = t.rows
    assert ra[2:4] == ["2 of 2", "`1111111`, `2222222` (+dirty)"] and ra[5] == "—"
    assert rb[2:6] == ["0 of 1", "—", "—", "`abcdef0`"]


def test_added_in_reads_this_checkout_history():
    added = R._added_in()
    if not (ROOT / ".git").exists():
        assert added == {}
        return
    assert added.get("baseline/eval.json") and all(len(s) >= 7 for s in added.values())


def test_full_runs_evaluations_report_fid_infinity(tmp_path, monkeypatch):
    """Every later full run reports FID∞ beside FID@N: an evaluate job gets fid_inf=True unless it
    says otherwise or has too few samples for the fit."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import full_runs
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    seen = []

    def fake_papermill(cmd, **kw):
        if Path(cmd[0]).name != "papermill":
            return subprocess.CompletedProcess(cmd, 0, stdout="", stderr="")
        seen.append(json.loads(cmd[cmd.index("-y") + 1]))
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(full_runs.subprocess, "run", fake_papermill)
    monkeypatch.setattr(full_runs, "git_state", lambda root: {})
    runs = tmp_path / "runs"
    (runs / "r").mkdir(parents=True)
    (runs / "r" / "done.json").write_text("{}")
    run = full_runs.notebook_runner(runs, tmp_path / "out")
    for params in (dict(n_samples=1000), dict(n_samples=1000, fid_inf=False),
                   dict(n_samples=full_runs.FID_INF_MIN - 1)):
        run(dict(name="e", kind="evaluate", run="r", params=params))
    assert [p.get("fid_inf") for p in seen] == [True, False, None]


def test_full_runs_a_job_in_two_chains_runs_once():
    """A training in two chains run at once (scripts/run_ch05_full.py --only n1-s0 with two
    workers) starts once; the other chain waits for it and finds it done."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import full_runs
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    import threading
    import time as _time
    finished, started, lock = set(), [], threading.Lock()

    def run(job):
        with lock:
            started.append((job["kind"], job["name"]))
        _time.sleep(0.2)
        finished.add(job["name"])

    train = dict(kind="train", name="n1-s0")
    chains = [[train, dict(kind="evaluate", name="n1-s0")], [train, dict(kind="evaluate", name="k")]]
    with full_runs.ThreadPoolExecutor(2) as pool:
        errors = list(pool.map(lambda c: full_runs.run_chain(
            c, lambda j: j["name"] in finished and j["kind"] == "train", run), chains))
    assert errors == [None, None]
    assert sorted(started) == [("evaluate", "k"), ("evaluate", "n1-s0"), ("train", "n1-s0")]
