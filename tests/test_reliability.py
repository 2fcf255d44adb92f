"""Reliability (issue 10): training never destroys good work, and every bad input gets one line.

- random SIGKILLs of `python -m pdlib.train` (digits 8×8, the tiny U-Net), each followed by a
  resume, end bit-identical to an uninterrupted run, with every checkpoint readable;
- a table of bad inputs through `pdlib.train.cli.main` (in-process, fast) and a handful through
  `python -m pdlib.train / pdlib.pretrained / pdlib.data` (the real exit status): status 2, one
  stderr line naming the parameter or file, no traceback, and no file changed;
- divergence keeps the last finite checkpoint; the run-folder lock; the overwrite refusal and the
  clean-up of temporary files; a full disk (a small tmpfs when root can mount one, a failing
  write otherwise); evaluation's checks, strict JSON and recorded parameters.
"""
from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pdlib import checkpoint as ck
from pdlib.checkpoint import LATEST, load_checkpoint, write_checkpoint
from pdlib.errors import DiskFullError, DivergenceError, NonFiniteSamplesError
from pdlib.methods import EDMMethod
from test_train import _equal_optim, _equal_states   # the resume tests' comparisons
from pdlib.train import TrainConfig, preflight, train
from pdlib.train.cli import main

ROOT = Path(__file__).resolve().parents[1]

# The tiny run of every test here: sklearn digits at 8×8, the 'tiny' U-Net, batch 16, on the CPU
# (where a resumed run is exact bit for bit, see pdlib/train/loop.py).
TINY = ["--data.dataset", "digits", "--data.resolution", "8", "--net.preset", "tiny",
        "--optim.batch-size", "16", "--optim.warmup-steps", "0", "--run.log-every", "1",
        "--run.sample-every", "0", "--run.sample-n", "4", "--run.sample-steps", "2",
        "--run.device", "cpu", "--no-progress"]
FLAT = dict(dataset="digits", resolution=8, preset="tiny", batch_size=16, warmup_steps=0,
            log_every=1, sample_every=0, sample_n=4, sample_steps=2, ckpt_every=0, device="cpu")


def tiny(**kw) -> TrainConfig:
    return TrainConfig.flat(**{**FLAT, **kw})


def _env() -> dict:
    """A subprocess environment computing like this process (same threads: same floats)."""
    return {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads()),
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def _temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*.tmp")]


def _lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


# ----------------------------------------------------------------------------------------------
# SIGKILL at random moments, then resume: bit-identical to an uninterrupted run.

def _metrics_lines(path: Path) -> int:
    try:
        return sum(1 for ln in path.read_text().splitlines() if ln.strip())
    except OSError:
        return 0


def test_sigkill_at_random_moments_then_resume_is_bit_identical(tmp_path, capsys):
    kills_wanted = int(os.environ.get("PDLIB_KILLS", "5"))
    seed = int(os.environ.get("PDLIB_KILL_SEED", str(random.SystemRandom().randrange(10**6))))
    rng = random.Random(seed)
    steps = 30 + 8 * kills_wanted
    args = [*TINY, "--run.steps", str(steps), "--run.ckpt-every", "3", "--run.sample-every", "10",
            "--optim.ema-half-life-images", "200"]
    assert main([*args, "--run.out-dir", str(tmp_path / "straight")]) == 0      # the reference
    capsys.readouterr()
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "pdlib.train", *args, "--run.out-dir", str(out)]
    kills, launches, temp_seen, lock_checked = 0, 0, 0, False
    while kills < kills_wanted:
        launches += 1
        assert launches <= 3 * kills_wanted, f"the run kept finishing before a kill (seed {seed})"
        before = _metrics_lines(out / "metrics.jsonl")
        proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while proc.poll() is None and _metrics_lines(out / "metrics.jsonl") <= before:
            assert time.monotonic() < deadline, "the training subprocess never got going"
            time.sleep(0.01)
        if proc.poll() is None and not lock_checked:
            # a second run into the folder in use fails at once, naming the folder and the PID
            assert main([*args, "--run.out-dir", str(out)]) == 2
            err = _lines(capsys.readouterr().err)
            assert len(err) == 1 and f"PID {proc.pid}" in err[0] and str(out) in err[0], err
            lock_checked = True
        time.sleep(rng.uniform(0.0, 0.5))                  # a random moment of training
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        stderr = proc.communicate()[1]
        assert "Traceback" not in stderr, stderr
        assert proc.returncode in (0, -signal.SIGKILL), (proc.returncode, stderr)
        if proc.returncode == 0:                           # finished before the kill: start over
            shutil.rmtree(out)
            continue
        temp_seen += len(_temp_files(out))
        for p in sorted(out.glob("*.pt")):                 # 0 unreadable checkpoints after a kill
            load_checkpoint(p)
    assert main([*args, "--run.out-dir", str(out)]) == 0          # the last resume, in-process
    captured = capsys.readouterr()
    assert "stale lock" in captured.err and "Traceback" not in captured.err
    assert json.loads(_lines(captured.out)[-1])["step"] == steps
    a = load_checkpoint(tmp_path / "straight" / LATEST)
    b = load_checkpoint(out / LATEST)
    assert a["step"] == b["step"] == steps
    assert _equal_states(a["model"], b["model"]), f"raw weights differ (seed {seed})"
    assert _equal_states(a["ema"], b["ema"]), f"EMA weights differ (seed {seed})"
    assert _equal_optim(a["optimizer"], b["optimizer"]), f"optimizer differs (seed {seed})"
    rec_a = [json.loads(s) for s in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    rec_b = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rec_b] == list(range(1, steps + 1))           # each step once
    assert [r["loss"] for r in rec_b] == [r["loss"] for r in rec_a]
    assert not _temp_files(out) and not (out / ".lock").exists()            # cleaned at start / end
    assert all(load_checkpoint(p)["step"] > 0 for p in out.glob("ckpt-*.pt"))
    print(f"{kills} SIGKILLs in {launches} launches (seed {seed}); {temp_seen} temp files of "
          "killed writes found and removed")


# ----------------------------------------------------------------------------------------------
# Bad inputs: one line, status 2, the parameter or file named, nothing changed.

class Arbitrary:
    """Instances are pickled into a checkpoint that torch.load(weights_only=True) must refuse."""

    def __init__(self):
        self.payload = "would run code on load"


def _snapshot(root: Path) -> dict:
    """Every path under root with its size, mtime and inode (and a hash of the small files)."""
    snap = {}
    for dirpath, dirnames, filenames in os.walk(root):
        snap[dirpath] = "dir"
        for name in filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            digest = None
            if st.st_size < 65536:
                with open(p, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
            snap[p] = (st.st_size, st.st_mtime_ns, st.st_ino, digest)
    return snap


def _mount_tmpfs(folder: Path, options: str) -> bool:
    """Mount a tmpfs on folder (root only); False where it cannot."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    folder.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                       capture_output=True, text=True)
    return r.returncode == 0


def _umount(folder: Path) -> None:
    subprocess.run(["umount", str(folder)], capture_output=True)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Folders and files for the bad inputs: a finished run, damaged checkpoints, configs, data
    folders, a locked folder, a read-only folder. Snapshotted before and after every case."""
    w = tmp_path_factory.mktemp("world")
    assert main([*TINY, "--run.steps", "2", "--run.out-dir", str(w / "good")]) == 0
    good = w / "good" / LATEST
    st = torch.load(good, weights_only=True)
    raw = good.read_bytes()
    c = w / "ckpts"
    c.mkdir()

    def save(name, obj):
        p = c / name
        if isinstance(obj, bytes):
            p.write_bytes(obj)
        else:
            torch.save(obj, p)

    nan = lambda d: {k: v * float("nan") if v.is_floating_point() else v for k, v in d.items()}  # noqa: E731
    save("trunc.pt", raw[:len(raw) // 2])
    save("random.pt", random.Random(0).randbytes(4096))
    save("text.pt", b"this is a text file, not a checkpoint\n")
    save("empty.pt", b"")
    save("cfgjson.pt", {**st, "config": "{not json"})
    save("cfgbad.pt", {**st, "config": json.dumps({"version": 2, "data": {"dataset": "nope"}})})
    save("nokeys.pt", {"format": st["format"], "config": st["config"], "step": 2})
    save("alist.pt", [1, 2, 3])
    save("noformat.pt", {"a": torch.zeros(1)})
    save("nan.pt", {**st, "model": nan(st["model"]), "ema": nan(st["ema"])})
    save("shapes.pt", {**st, "model": {k: v[:1] if v.ndim else v for k, v in st["model"].items()}})
    save("evil.pt", {**st, "extra": Arbitrary()})
    (c / "adir.pt").mkdir()
    for name, text in (("notjson.json", "{nope"), ("alist.json", "[1, 2]"),
                       ("unknown.json", '{"version": 2, "colour": {}}'),
                       ("badtype.json", '{"lr": "fast"}'), ("binary.json", "\udcff")):
        (w / name).write_bytes(text.encode(errors="surrogateescape"))
    (w / "afile").write_text("a file, not a folder\n")
    # a folder with another run's checkpoint but no latest.pt; one with a damaged latest.pt;
    # one with the metrics of another config and no checkpoint
    (w / "orphan").mkdir()
    shutil.copy(w / "good" / "ckpt-0000002.pt", w / "orphan" / "ckpt-0000002.pt")
    (w / "badlatest").mkdir()
    (w / "badlatest" / LATEST).write_bytes(raw[:1000])
    (w / "foreign").mkdir()
    (w / "foreign" / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    (w / "foreign" / "config.json").write_text(json.dumps(tiny(lr=0.123).to_dict()))
    # data folders: empty, and Fashion-MNIST files that are garbage
    (w / "nodata").mkdir()
    from pdlib.data import FASHION_FILES
    (w / "baddata" / "fashion_mnist").mkdir(parents=True)
    for name in FASHION_FILES:
        (w / "baddata" / "fashion_mnist" / name).write_bytes(b"garbage" * 10)
    # a folder locked by a live process
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    (w / "locked").mkdir()
    (w / "locked" / ".lock").write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(),
                                                    "since": "earlier"}))
    # a read-only folder: a read-only tmpfs as root, else no write permission
    ro = w / "ro"
    ro.mkdir()
    mounted = _mount_tmpfs(ro, "ro,size=64k")
    if not mounted:
        ro.chmod(0o555)
    try:
        (ro / "probe").write_text("x")
        (ro / "probe").unlink()
        ro_ok = False                                   # root without mount: writable after all
    except OSError:
        ro_ok = True
    info = {"root": w, "good": good, "holder": holder.pid, "ro_ok": ro_ok}
    yield info
    holder.kill()
    holder.wait()
    if mounted:
        _umount(ro)
    else:
        ro.chmod(0o755)


def _c(name):
    return lambda w: str(w["root"] / "ckpts" / name)


def _p(*parts):
    return lambda w: str(w["root"].joinpath(*parts))


NEW = _p("new")                 # an out_dir that does not exist (and must not exist afterwards)
NO_CUDA = not torch.cuda.is_available()
NO_MPS = not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())

# (id, extra argv (callables get the world), the text the one line must contain, env)
BAD_TRAIN = [
    # config and the command line
    ("method-name", ["--method.name", "nope"], "method.name='nope'", None),
    ("net-preset", ["--net.preset", "huge"], "net.preset='huge'", None),
    ("dataset-name", ["--data.dataset", "cifar10"], "data.dataset='cifar10'", None),
    ("lr-negative", ["--optim.lr", "-1"], "optim.lr=-1", None),
    ("lr-nan", ["--optim.lr", "nan"], "optim.lr=nan", None),
    ("batch-zero", ["--optim.batch-size", "0"], "optim.batch_size=0", None),
    ("accum-not-dividing", ["--optim.grad-accum", "3"], "optim.grad_accum=3", None),
    ("steps-not-int", ["--run.steps", "abc"], "--run.steps", None),
    ("steps-negative", ["--run.steps", "-1"], "run.steps=-1", None),
    ("amp-unknown", ["--run.amp", "fp8"], "run.amp='fp8'", None),
    ("device-unknown", ["--run.device", "gpu"], "run.device='gpu'", None),
    ("nonfinite-zero", ["--run.max-nonfinite-steps", "0"], "run.max_nonfinite_steps=0", None),
    ("overwrite-not-bool", ["--run.overwrite", "maybe"], "--run.overwrite", None),
    ("ckpt-keep-zero", ["--run.ckpt-keep", "0"], "run.ckpt_keep=0", None),
    ("unknown-flag", ["--no-such-flag"], "--no-such-flag", None),
    ("option-of-another-method", ["--method.weighting", "p2"], "--method.weighting", None),
    ("overrides-odd", ["--net.overrides", "patch_size"], "--net.overrides", None),
    ("overrides-fixed", ["--net.overrides", "in_channels", "3"], "net.overrides['in_channels']", None),
    ("overrides-unknown", ["--net.overrides", "wings", "2"], "net.overrides", None),
    ("resolution-zero", ["--data.resolution", "0"], "data.resolution=0", None),
    ("config-missing", ["--config", _p("missing.json")], "missing.json", None),
    ("config-not-json", ["--config", _p("notjson.json")], "notjson.json", None),
    ("config-binary", ["--config", _p("binary.json")], "binary.json", None),
    ("config-a-list", ["--config", _p("alist.json")], "alist.json", None),
    ("config-unknown-section", ["--config", _p("unknown.json")], "colour", None),
    ("config-wrong-type", ["--config", _p("badtype.json")], "optim.lr", None),
    ("config-no-value", ["--config"], "--config", None),
    # data
    ("n-data-too-large", ["--data.n-data", "5000"], "data.n_data=5000", None),
    ("resolution-too-large", ["--data.resolution", "5000"], "data.resolution=5000", None),
    ("batch-larger-than-data", ["--data.n-data", "8"], "optim.batch_size=16", None),
    ("fashion-missing", ["--data.dataset", "fashion_mnist"], "data.dataset='fashion_mnist'", "nodata"),
    ("emoji-missing", ["--data.dataset", "emoji", "--data.resolution", "8"], "emoji", "nodata"),
    ("fashion-damaged", ["--data.dataset", "fashion_mnist"], "train-images-idx3-ubyte.gz", "baddata"),
    # device
    pytest.param("device-cuda", ["--run.device", "cuda"], "run.device='cuda'", None,
                 marks=pytest.mark.skipif(not NO_CUDA, reason="a GPU is present")),
    ("device-cuda-index", ["--run.device", "cuda:97"], "run.device='cuda:97'", None),
    pytest.param("device-mps", ["--run.device", "mps"], "run.device='mps'", None,
                 marks=pytest.mark.skipif(not NO_MPS, reason="MPS is present")),
    ("fp16-on-cpu", ["--run.amp", "fp16", "--run.device", "cpu"], "run.amp='fp16'", None),
    # checkpoints to resume
    ("resume-truncated", ["--run.resume", _c("trunc.pt")], "trunc.pt", None),
    ("resume-random-bytes", ["--run.resume", _c("random.pt")], "random.pt", None),
    ("resume-text", ["--run.resume", _c("text.pt")], "text.pt", None),
    ("resume-empty", ["--run.resume", _c("empty.pt")], "empty.pt", None),
    ("resume-config-not-json", ["--run.resume", _c("cfgjson.pt")], "cfgjson.pt", None),
    ("resume-config-invalid", ["--run.resume", _c("cfgbad.pt")], "cfgbad.pt", None),
    ("resume-missing-keys", ["--run.resume", _c("nokeys.pt")], "nokeys.pt", None),
    ("resume-a-list", ["--run.resume", _c("alist.pt")], "alist.pt", None),
    ("resume-no-format", ["--run.resume", _c("noformat.pt")], "noformat.pt", None),
    ("resume-nan-weights", ["--run.resume", _c("nan.pt")], "nan.pt", None),
    ("resume-wrong-shapes", ["--run.resume", _c("shapes.pt")], "shapes.pt", None),
    ("resume-pickled-object", ["--run.resume", _c("evil.pt")], "evil.pt", None),
    ("resume-a-folder", ["--run.resume", _c("adir.pt")], "adir.pt' is a folder", None),
    ("resume-missing", ["--run.resume", _c("nope.pt")], "nope.pt", None),
    ("resume-other-config", ["--run.resume", lambda w: str(w["good"]), "--optim.lr", "0.001"],
     "only the run section may change", None),
    # warm starts
    ("init-from-missing", ["--run.init-from", _c("nope.pt")], "run.init_from=", None),
    ("init-from-truncated", ["--run.init-from", _c("trunc.pt")], "trunc.pt", None),
    ("init-from-nan", ["--run.init-from", _c("nan.pt")], "nan.pt", None),
    ("init-from-missing-keys", ["--run.init-from", _c("nokeys.pt")], "nokeys.pt", None),
    ("init-from-other-net", ["--run.init-from", lambda w: str(w["good"]), "--net.preset", "dit-tiny"],
     "run.init_from=", None),
    # the output folder
    ("out-dir-is-a-file", ["--run.out-dir", _p("afile")], "run.out_dir=", None),
    ("out-dir-under-a-file", ["--run.out-dir", _p("afile", "sub")], "run.out_dir=", None),
    ("out-dir-read-only", ["--run.out-dir", _p("ro", "run")], "run.out_dir=", None),
    ("out-dir-locked", ["--run.out-dir", _p("locked")], "in use by another run", None),
    ("out-dir-finished-run-resume-never", ["--run.out-dir", _p("good"), "--run.resume", "never"],
     "holds another run", None),
    ("out-dir-other-config", ["--run.out-dir", _p("good"), "--optim.seed", "7"], "optim.seed: 0 → 7", None),
    ("out-dir-orphan-checkpoint", ["--run.out-dir", _p("orphan")], "ckpt-0000002.pt", None),
    ("out-dir-damaged-latest", ["--run.out-dir", _p("badlatest")], "latest.pt", None),
    ("out-dir-foreign-metrics", ["--run.out-dir", _p("foreign")], "holds another run", None),
]


def _ids(cases):
    return [c.values[0] if hasattr(c, "values") else c[0] for c in cases]


@pytest.mark.parametrize("case, extra, named, data", BAD_TRAIN, ids=_ids(BAD_TRAIN))
def test_bad_input_is_one_line_exit_2_and_changes_nothing(world, case, extra, named, data,
                                                          monkeypatch, capsys):
    if case == "out-dir-read-only" and not world["ro_ok"]:
        pytest.skip("no read-only folder here (root, and mounting a tmpfs failed)")
    argv = [a(world) if callable(a) else a for a in extra]
    if "--run.out-dir" not in argv:
        argv += ["--run.out-dir", NEW(world)]
    if "--run.steps" not in argv:
        argv += ["--run.steps", "2"]
    if data is not None:
        monkeypatch.setenv("PDLIB_DATA", str(world["root"] / data))
    if case == "out-dir-locked":
        named = f"PID {world['holder']}"
    before = _snapshot(world["root"])
    code = main([*TINY, *argv])
    captured = capsys.readouterr()
    err = _lines(captured.err)
    assert code == 2, (code, captured.err)
    assert len(err) == 1 and err[0].startswith("pdlib.train: error: "), captured.err
    assert named in err[0], err[0]
    print(f"{case}\t{err[0]}")
    assert "Traceback" not in captured.err and captured.out == ""
    assert _snapshot(world["root"]) == before                             # no file changed
    assert not Path(NEW(world)).exists()


def test_debug_shows_the_traceback(world, capsys):
    with pytest.raises(ValueError, match="optim.lr=-1"):
        main([*TINY, "--optim.lr", "-1", "--debug"])
    with pytest.raises(ck.CheckpointError, match="trunc.pt"):
        main([*TINY, "--run.resume", _c("trunc.pt")(world), "--run.out-dir", NEW(world), "--debug"])
    assert not Path(NEW(world)).exists()


def test_preflight_raises_what_train_would_before_writing(world):
    with pytest.raises(ck.CheckpointError, match=r"trunc\.pt"):
        preflight(tiny(resume=_c("trunc.pt")(world), out_dir=NEW(world)))
    with pytest.raises(ValueError, match="holds another run"):
        preflight(tiny(resume="never", out_dir=_p("good")(world)))
    with pytest.raises(ValueError, match=r"run\.out_dir="):
        preflight(tiny(out_dir=_p("afile", "x")(world)))
    with pytest.raises(ck.CheckpointError, match=r"init_from=.*do not fit"):
        preflight(tiny(init_from=str(world["good"]), preset="dit-tiny", out_dir=None))
    assert preflight(tiny(method="vp", learn_sigma=True, out_dir=None)).method.learn_sigma
    before = _snapshot(world["root"])
    assert preflight(tiny(out_dir=NEW(world))).data.img_channels == 1      # fine: nothing written
    assert preflight(tiny(out_dir=_p("good")(world), steps=4)).run.steps == 4   # a resume is fine
    assert _snapshot(world["root"]) == before and not Path(NEW(world)).exists()


BAD_PRETRAINED = [
    ("export-missing", lambda w: ["export", _c("nope.pt")(w), NEW(w) + "/x.safetensors"], "nope.pt"),
    ("export-truncated", lambda w: ["export", _c("trunc.pt")(w), NEW(w) + "/x.safetensors"], "trunc.pt"),
    ("export-config-not-json", lambda w: ["export", _c("cfgjson.pt")(w), NEW(w) + "/x.safetensors"], "cfgjson.pt"),
    ("export-missing-keys", lambda w: ["export", _c("nokeys.pt")(w), NEW(w) + "/x.safetensors"], "nokeys.pt"),
    ("export-nan", lambda w: ["export", _c("nan.pt")(w), NEW(w) + "/x.safetensors"], "NaN/inf"),
    ("export-wrong-suffix", lambda w: ["export", str(w["good"]), NEW(w) + "/x.txt"], "x.txt"),
    ("export-unwritable", lambda w: ["export", str(w["good"]), _p("afile")(w) + "/x.safetensors"], "out="),
    ("export-reference-not-json", lambda w: ["export", str(w["good"]), NEW(w) + "/x.safetensors",
                                             "--reference", "{bad"], "--reference"),
    ("export-dtype", lambda w: ["export", str(w["good"]), NEW(w) + "/x.safetensors", "--dtype", "fp8"], "--dtype"),
    ("no-command", lambda w: [], "required"),
]


@pytest.mark.parametrize("case, argv, named", BAD_PRETRAINED, ids=[c[0] for c in BAD_PRETRAINED])
def test_pretrained_cli_bad_input_is_one_line(world, case, argv, named, capsys):
    from pdlib import pretrained as P
    before = _snapshot(world["root"])
    assert P.main(argv(world)) == 2
    captured = capsys.readouterr()
    err = _lines(captured.err)
    assert len(err) == 1 and err[0].startswith("pdlib.pretrained: error: ") and named in err[0], captured.err
    print(f"{case}\t{err[0]}")
    assert "Traceback" not in captured.err
    assert _snapshot(world["root"]) == before and not Path(NEW(world)).exists()


def test_data_cli_bad_input_is_one_line(capsys):
    from pdlib import data
    for argv, named in ((["fetch", "imagenet"], "imagenet"), ([], "required"), (["list", "--x"], "--x")):
        assert data.main(argv) == 2
        err = _lines(capsys.readouterr().err)
        assert len(err) == 1 and err[0].startswith("pdlib.data: error: ") and named in err[0], err
        print(f"data {argv}\t{err[0]}")


def test_the_real_exit_status_of_the_commands(world):
    """A handful through real subprocesses (the others in-process above): status, one line."""
    py = [sys.executable, "-m"]
    runs = [
        ([*py, "pdlib.train", *TINY, "--run.resume", _c("random.pt")(world), "--run.out-dir", NEW(world)],
         2, "random.pt"),
        ([*py, "pdlib.train", "--config", _p("notjson.json")(world)], 2, "notjson.json"),
        ([*py, "pdlib.train", "--run.device", "cuda:97", "--run.out-dir", NEW(world)], 2, "run.device='cuda:97'"),
        ([*py, "pdlib.pretrained", "export", _c("trunc.pt")(world), NEW(world) + "/x.safetensors"], 2, "trunc.pt"),
        ([*py, "pdlib.data", "fetch", "imagenet"], 2, "imagenet"),
    ]
    before = _snapshot(world["root"])
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for cmd, _, _ in runs]
    for p, (cmd, code, named) in zip(procs, runs):
        out, err = p.communicate(timeout=300)
        assert p.returncode == code, (cmd, p.returncode, err)
        lines = _lines(err)
        assert len(lines) == 1 and named in lines[0] and "Traceback" not in err, (cmd, err)
    assert _snapshot(world["root"]) == before and not Path(NEW(world)).exists()


# ----------------------------------------------------------------------------------------------
# Divergence: the run stops, names the step and the last good checkpoint, which survives.

def test_nan_weights_stop_the_run_and_keep_the_last_finite_checkpoint(tmp_path):
    def poison(record):
        if record["step"] == 4:                            # after step 4, before its checkpoint
            with torch.no_grad():
                next(record["method"].parameters()).fill_(float("nan"))

    cfg = tiny(steps=8, ckpt_every=1, ckpt_keep=1, out_dir=str(tmp_path))
    with pytest.raises(DivergenceError) as e:
        train(cfg, progress=False, callback=poison)
    msg = str(e.value)
    assert msg.startswith("step 4:") and "ckpt-0000003.pt" in msg and "(step 3)" in msg, msg
    latest = load_checkpoint(tmp_path / LATEST)
    assert latest["step"] == 3 and not ck.nonfinite_entries(latest)
    assert [p.name for p in ck.list_checkpoints(tmp_path)] == ["ckpt-0000003.pt"]   # kept, not rotated
    assert not (tmp_path / ".lock").exists()                                # released on error


def test_a_nonfinite_loss_streak_stops_the_run_and_no_checkpoint_is_written_during_it(tmp_path, monkeypatch):
    real = EDMMethod.loss
    calls = {"n": 0}

    def nan_from_the_third_step(self, batch, generator=None, denoiser=None):
        calls["n"] += 1
        loss = real(self, batch, generator, denoiser=denoiser)
        return loss * float("nan") if calls["n"] >= 3 else loss

    monkeypatch.setattr(EDMMethod, "loss", nan_from_the_third_step)
    cfg = tiny(steps=20, ckpt_every=2, ckpt_keep=1, max_nonfinite_steps=3, out_dir=str(tmp_path))
    with pytest.warns(RuntimeWarning, match="NaN/inf gradients"), pytest.raises(DivergenceError) as e:
        train(cfg, progress=False)
    msg = str(e.value)
    assert msg.startswith("step 5:") and "steps 3-5" in msg and "ckpt-0000002.pt" in msg, msg
    assert load_checkpoint(tmp_path / LATEST)["step"] == 2                  # step 4's was not written
    assert [p.name for p in ck.list_checkpoints(tmp_path)] == ["ckpt-0000002.pt"]
    lines = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["nonfinite_grad_steps"] for r in lines] == [0, 0, 1, 1, 1]    # the log field stays


def test_the_cli_reports_divergence_in_one_line_with_exit_3(tmp_path, capsys):
    code = main([*TINY, "--optim.lr", "1e10", "--optim.grad-clip", "None", "--run.steps", "30",
                 "--run.ckpt-every", "5", "--run.out-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 3 and "Traceback" not in err
    failed = [ln for ln in _lines(err) if "error" in ln or "failed" in ln]
    assert len(failed) == 1 and failed[0].startswith("pdlib.train: run failed: step "), err
    assert "the last good checkpoint is" in failed[0]
    for p in tmp_path.glob("*.pt"):                                         # none with NaN/inf
        assert not ck.nonfinite_entries(load_checkpoint(p)), p


def test_write_checkpoint_refuses_nonfinite_weights_and_rotation_keeps_the_newest(tmp_path):
    def state(v, step):
        return {"format": ck.FORMAT, "step": step, "model": {"w": torch.full((3,), v)},
                "ema": {"w": torch.full((3,), v)}}

    write_checkpoint(state(1.0, 1), tmp_path, 1, keep=1)
    with pytest.raises(DivergenceError, match=r"step 2: .*not written .*latest\.pt.* unchanged"):
        write_checkpoint(state(float("nan"), 2), tmp_path, 2, keep=1)
    assert load_checkpoint(tmp_path / LATEST)["step"] == 1
    assert [p.name for p in ck.list_checkpoints(tmp_path)] == ["ckpt-0000001.pt"]
    # rotation deletes only earlier steps: later ones (left by a rolled-back run) stay
    write_checkpoint(state(3.0, 9), tmp_path, 9, keep=1)
    write_checkpoint(state(2.0, 5), tmp_path, 5, keep=1)
    assert [p.name for p in ck.list_checkpoints(tmp_path)] == ["ckpt-0000005.pt", "ckpt-0000009.pt"]
    assert load_checkpoint(tmp_path / LATEST)["step"] == 5


# ----------------------------------------------------------------------------------------------
# The lock, another run in the folder, temporary files.

def test_a_stale_lock_is_taken_over_with_a_warning_and_released(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()                                         # reaped: the PID is gone
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / ".lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    with pytest.warns(RuntimeWarning, match=f"stale lock of PID {dead.pid}"):
        assert train(tiny(steps=1, out_dir=str(tmp_path)), progress=False).step == 1
    assert not (tmp_path / ".lock").exists()


def test_a_live_lock_on_another_host_is_respected(tmp_path):
    (tmp_path / ".lock").write_text(json.dumps({"pid": 1, "host": "elsewhere.example"}))
    with pytest.raises(ValueError, match=r"in use by another run: PID 1 on host elsewhere"):
        train(tiny(steps=1, out_dir=str(tmp_path)), progress=False)
    assert (tmp_path / ".lock").exists()


def test_a_second_run_into_a_folder_refuses_and_overwrite_moves_the_old_run_whole(tmp_path):
    first = train(tiny(steps=2, ckpt_every=1, sample_every=2, out_dir=str(tmp_path)), progress=False)
    assert first.step == 2
    # another config into the same folder: refused (it would be a resume of a different config)
    with pytest.raises(ValueError, match="only the run section may change"):
        train(tiny(steps=2, lr=1e-3, out_dir=str(tmp_path)), progress=False)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(ValueError, match=r"holds another run \(2 checkpoints up to ckpt-0000002\.pt"):
        train(tiny(steps=1, lr=1e-3, resume="never", out_dir=str(tmp_path)), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    with pytest.warns(RuntimeWarning, match="moved the old run"):
        second = train(tiny(steps=1, lr=1e-3, resume="never", overwrite=True, out_dir=str(tmp_path)),
                       progress=False)
    assert second.step == 1
    old, = tmp_path.glob(".old-*")
    assert sorted(p.name for p in old.iterdir()) == ["ckpt-0000001.pt", "ckpt-0000002.pt", "config.json",
                                                     LATEST, "metrics.jsonl", "samples"]
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["ckpt-0000001.pt", LATEST]
    assert load_checkpoint(tmp_path / LATEST)["step"] == 1
    assert [json.loads(s)["step"] for s in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1]
    assert TrainConfig.from_dict(json.loads((tmp_path / "config.json").read_text())).optim.lr == 1e-3


def test_a_run_killed_before_its_first_checkpoint_simply_starts_again(tmp_path):
    def crash(record):
        if record["step"] == 2:
            raise KeyboardInterrupt("simulated crash")

    with pytest.raises(KeyboardInterrupt):
        train(tiny(steps=4, out_dir=str(tmp_path)), progress=False, callback=crash)
    assert not (tmp_path / LATEST).exists() and (tmp_path / "metrics.jsonl").read_text()
    assert not (tmp_path / ".lock").exists()
    assert train(tiny(steps=4, out_dir=str(tmp_path)), progress=False).step == 4   # same config


def test_temp_files_of_killed_writes_are_removed_at_start(tmp_path):
    train(tiny(steps=1, out_dir=str(tmp_path)), progress=False)
    (tmp_path / "samples").mkdir(exist_ok=True)
    ours = [tmp_path / ".latest.pt.a1b2c3d4.tmp", tmp_path / ".ckpt-0000002.pt.zz_9yx8w.tmp",
            tmp_path / ".config.json.q1w2e3r4.tmp", tmp_path / "samples" / ".0000002.png.abcdefgh.tmp"]
    foreign = [tmp_path / ".eval.json.abcdefgh.tmp", tmp_path / "notes.tmp"]
    for p in ours + foreign:
        p.write_bytes(b"")                                # a killed write's zero-byte file
    train(tiny(steps=2, out_dir=str(tmp_path)), progress=False)
    assert not any(p.exists() for p in ours)
    assert all(p.exists() for p in foreign)               # not the run's: left alone


# ----------------------------------------------------------------------------------------------
# A full disk: a small tmpfs when root can mount one, a failing write otherwise.

@pytest.mark.parametrize("how", ["tmpfs", "simulated"])
def test_a_full_disk_names_the_file_and_keeps_the_previous_checkpoint(tmp_path, how, monkeypatch, capsys):
    run = tmp_path / "disk" / "run"
    if how == "tmpfs":
        probe = train(tiny(steps=1, out_dir=str(tmp_path / "probe")), progress=False)
        size = (tmp_path / "probe" / LATEST).stat().st_size
        assert probe.step == 1
        if not _mount_tmpfs(tmp_path / "disk", f"size={int(size * 1.6)}"):
            pytest.skip("a tmpfs cannot be mounted here (not root, or no permission): the "
                        "'simulated' case covers a full disk")
    else:
        real_save, calls = torch.save, {"n": 0}

        def save_then_fill_up(obj, f, *args, **kwargs):
            calls["n"] += 1
            if calls["n"] < 2:
                return real_save(obj, f, *args, **kwargs)
            f.write(b"PK\x03\x04 a part")
            try:                                          # what torch.save does on ENOSPC
                raise OSError(errno.ENOSPC, "No space left on device")
            except OSError:
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

        monkeypatch.setattr(ck.torch, "save", save_then_fill_up)
    try:
        code = main([*TINY, "--run.steps", "4", "--run.ckpt-every", "1", "--run.out-dir", str(run)])
        err = _lines(capsys.readouterr().err)
        assert code == 2 and len(err) == 1, err
        line = err[0]
        assert line.startswith("pdlib.train: error: disk full") and "ENOSPC" in line, line
        assert "ckpt-0000002.pt" in line and "ckpt-0000001.pt' (step 1) is intact" in line, line
        latest = load_checkpoint(run / LATEST)
        assert latest["step"] == 1 and not ck.nonfinite_entries(latest)
        assert not _temp_files(run) and not (run / ".lock").exists()
        def full(*args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(ck.torch, "save", full)
        with pytest.raises(DiskFullError, match=r"disk full .*x\.pt"):
            ck.atomic_save({"x": 1}, run / "x.pt")
        assert not (run / "x.pt").exists() and not _temp_files(run)
    finally:
        if how == "tmpfs":
            _umount(tmp_path / "disk")


# ----------------------------------------------------------------------------------------------
# Evaluation: checks before any work, no metrics of NaN samples, what was used, strict JSON.

BAD_EVAL = [
    (dict(guidance=float("nan")), "guidance=nan"),
    (dict(guidance=-1.0), "guidance=-1.0"),
    (dict(guidance=2.0), "guidance=2.0"),                 # the tiny run is unconditional
    (dict(steps=0), "steps=0"),
    (dict(steps=2.5), "steps=2.5"),
    (dict(n_samples=0), "n_samples=0"),
    (dict(batch_size=0), "batch_size=0"),
    (dict(n_ref=0), "n_ref=0"),
    (dict(seed=-1), "seed=-1"),
    (dict(metrics=["fid", "nope"]), "metrics="),
    (dict(sampler="nope"), "sampler='nope'"),
    (dict(variance="posterior"), "variance='posterior'"),
    (dict(device="tpu"), "device='tpu'"),
    (dict(x0_mse_t=[3]), "x0_mse_t=[3]"),
    (dict(seam_grids=[1]), "seam_grids=[1]"),
    (dict(seam_grids=[3]), "seam_grids=[3]"),
    (dict(out_json="UNDER_A_FILE"), "out_json="),
    (dict(checkpoint="MISSING"), "nope.pt"),
]


@pytest.mark.parametrize("kw, named", BAD_EVAL, ids=[n for _, n in BAD_EVAL])
def test_evaluation_checks_its_arguments_before_any_work(world, kw, named, monkeypatch):
    from pdlib import evaluation as E
    kw = dict(kw)
    ckpt = str(world["good"]) if kw.pop("checkpoint", None) is None else _c("nope.pt")(world)
    if kw.get("out_json") == "UNDER_A_FILE":
        kw["out_json"] = _p("afile", "eval.json")(world)
    sampled = []
    monkeypatch.setattr(E, "generate", lambda *a, **k: sampled.append(1))
    before = _snapshot(world["root"])
    with pytest.raises((ValueError, FileNotFoundError)) as e:
        E.evaluate_checkpoint(ckpt, **{"n_samples": 2, "metrics": (), "progress": False,
                                       "out_json": NEW(world) + "/eval.json", **kw})
    assert named in str(e.value) and "\n" not in str(e.value), str(e.value)
    print(f"evaluate {kw}\t{type(e.value).__name__}: {e.value}")
    assert not sampled and _snapshot(world["root"]) == before and not Path(NEW(world)).exists()


def test_evaluation_refuses_nan_samples_and_writes_strict_json_of_what_it_used(world, tmp_path):
    from pdlib.evaluation import evaluate_checkpoint, write_json
    out = tmp_path / "eval.json"
    with pytest.raises(NonFiniteSamplesError, match=r"3 of 3 samples hold NaN/inf"):
        evaluate_checkpoint(_c("nan.pt")(world), n_samples=3, metrics=(), progress=False, out_json=out)
    assert not out.exists()
    result, images = evaluate_checkpoint(str(world["good"]), n_samples=3, batch_size=2, metrics=(),
                                         progress=False, out_json=out)
    assert images.shape == (3, 1, 8, 8) and torch.isfinite(images).all()
    assert (result["sampler"], result["steps"], result["nfe_per_image"]) == ("heun", 18, 35.0)
    text = out.read_text()

    def no_constants(name):
        raise AssertionError(f"{name} in the results JSON")

    assert json.loads(text, parse_constant=no_constants) == json.loads(json.dumps(result))
    with pytest.raises(ValueError, match=r"NaN/inf at \['loss'\]"):
        write_json({"loss": math.nan}, tmp_path / "bad.json")
    assert not (tmp_path / "bad.json").exists()


@pytest.mark.parametrize("name", ["edm", "vp"])
def test_a_methods_samplers_list_what_its_sample_accepts(name):
    """evaluation checks sampler= against Method.samplers before any work: the list must be right."""
    from pdlib.config import resolve_config
    from pdlib.data import load_dataset
    from pdlib.methods import build_method
    cfg = resolve_config(tiny(method=name), load_dataset("digits", resolution=8, n=16))
    method = build_method(cfg)
    g = torch.Generator().manual_seed(0)
    assert method.samplers and "nope" not in method.samplers
    for sampler in method.samplers:
        assert method.sample(1, generator=g, steps=2, sampler=sampler).shape == (1, 1, 8, 8)
    with pytest.raises(ValueError, match="sampler='nope'"):
        method.sample(1, generator=g, steps=2, sampler="nope")
