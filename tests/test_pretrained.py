"""Weights that last: safetensors exports with their config, loaded by name without unpickling;
every committed export regenerates its stored sample grid."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

import pdlib
from pdlib import pretrained as P
from pdlib.config import TrainConfig
from pdlib.train import train
from pdlib.viz import make_grid, to_uint8

TINY = dict(method="vp", preset="tiny", dataset="digits", resolution=8, batch_size=16, steps=3,
            warmup_steps=1, sample_every=0, sample_n=4, ckpt_every=0, log_every=1)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    res = train(TrainConfig.flat(**TINY, out_dir=str(out)), progress=False)
    return res, out / "latest.pt"


def test_export_round_trip_fp32_is_exact(run, tmp_path):
    res, ckpt = run
    path = P.export(ckpt, tmp_path / "m.safetensors", dtype="fp32")
    m = P.load_method(path)
    assert m.cfg == res.config
    for k, v in res.ema.state_dict().items():
        assert torch.equal(m.state_dict()[k], v), k
    meta = P.read_metadata(path)
    assert meta["format"] == P.FORMAT and meta["step"] == "3" and meta["weights"] == "ema"


def test_export_fp16_is_half_the_size_and_close(run, tmp_path):
    res, ckpt = run
    p16 = P.export(ckpt, tmp_path / "h.safetensors", dtype="fp16")
    p32 = P.export(ckpt, tmp_path / "f.safetensors", dtype="fp32")
    assert p16.stat().st_size < 0.6 * p32.stat().st_size
    m = P.load_method(p16)
    for k, v in res.ema.state_dict().items():
        w = m.state_dict()[k]
        assert w.dtype == v.dtype                                   # cast back to the net's dtype
        assert torch.allclose(w, v, rtol=1e-3, atol=1e-4), k


def test_loading_an_export_never_unpickles(run, tmp_path, monkeypatch):
    _, ckpt = run
    path = P.export(ckpt, tmp_path / "m.safetensors")

    def no_pickle(*a, **k):
        raise AssertionError("torch.load called while loading safetensors")
    monkeypatch.setattr(torch, "load", no_pickle)
    P.load_method(path)


def test_reference_grid_is_written_and_reproduced(run, tmp_path):
    _, ckpt = run
    ref = {"seed": 3, "n": 4, "steps": 5}
    path = P.export(ckpt, tmp_path / "m.safetensors", reference=ref)
    assert path.with_suffix(".png").is_file()
    assert json.loads(path.with_suffix(".reference.json").read_text()) == ref
    images = P.reference_samples(P.load_method(path), ref)
    stored = np.asarray(Image.open(path.with_suffix(".png")))
    assert np.array_equal(to_uint8(make_grid(images)), stored)     # same machine: bit for bit


def test_bad_inputs_name_themselves(run, tmp_path):
    _, ckpt = run
    with pytest.raises(ValueError, match="name='nope' is not a committed model"):
        pdlib.pretrained("nope")
    with pytest.raises(ValueError, match="dtype='int8'"):
        P.export(ckpt, tmp_path / "x.safetensors", dtype="int8")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        P.load_method(junk)
    assert P.main(["export", str(tmp_path / "missing.pt"), str(tmp_path / "y.safetensors")]) == 2


COMMITTED = sorted(P.WEIGHTS_DIR.glob("*.safetensors"))


def test_headline_models_are_committed():
    names = P.available()
    assert {"ch01-edm-small", "ch03-patched-cc", "ch04-patch-diffusion", "ch04-edm",
            "ch05-tiled-2x2", "ch05-untiled", "ch06-fpdm", "ch06-dit", "ch07-stage1", "ch07-stage2",
            "ch07-edm"} <= set(names), names
    for p in COMMITTED:
        assert p.stat().st_size < 8e6, p                     # a few MB each


@pytest.mark.parametrize("path", COMMITTED, ids=[p.stem for p in COMMITTED])
def test_committed_model_reproduces_its_grid(path):
    """Sample each committed model with its stored recipe on the CPU; the grid must match the
    stored one (8-bit pixels; a different CPU's float rounding may move a few by a level or two)."""
    ref = json.loads(path.with_suffix(".reference.json").read_text())
    method = pdlib.pretrained(path.stem)
    images = P.reference_samples(method, ref)
    grid = to_uint8(make_grid(images, nrow=ref.get("nrow")))
    stored = np.asarray(Image.open(path.with_suffix(".png")))
    grid = grid.reshape(stored.shape)
    diff = np.abs(grid.astype(int) - stored.astype(int))
    assert diff.mean() < 0.5 and (diff > 8).mean() < 0.01, (diff.mean(), (diff > 8).mean())
