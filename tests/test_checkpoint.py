"""pdlib.checkpoint: atomic writes, safe loading (weights_only=True only), clear errors."""
import os

import pytest
import torch

from pdlib import checkpoint as ck
from pdlib.checkpoint import (FORMAT, LATEST, CheckpointError, atomic_save, list_checkpoints,
                              load_checkpoint, rng_state, set_rng_state, write_checkpoint)


class Arbitrary:
    """A class whose instances torch.load(weights_only=True) must refuse to unpickle."""

    def __init__(self):
        self.payload = "would run code on load"


def _state(value: float, step: int = 1) -> dict:
    return {"format": FORMAT, "step": step, "config": '{"seed": 0}',
            "model": {"w": torch.full((3,), value)}, "rng": rng_state()}


def test_write_and_load_roundtrip(tmp_path):
    path = write_checkpoint(_state(1.0, step=12), tmp_path, step=12)
    assert path.name == "ckpt-0000012.pt"
    latest = load_checkpoint(tmp_path / LATEST)
    numbered = load_checkpoint(path)
    assert latest["step"] == numbered["step"] == 12
    assert torch.equal(latest["model"]["w"], torch.full((3,), 1.0))
    assert list_checkpoints(tmp_path) == [path]
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_keep_prunes_old_numbered_checkpoints(tmp_path):
    for step in (1, 2, 3, 4):
        write_checkpoint(_state(float(step), step), tmp_path, step, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt-0000003.pt", "ckpt-0000004.pt"]
    assert load_checkpoint(tmp_path / LATEST)["step"] == 4


def test_failure_mid_write_keeps_old_latest(tmp_path, monkeypatch):
    write_checkpoint(_state(1.0, step=1), tmp_path, step=1)
    real_save = torch.save

    def crashing_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip")      # some bytes reach the disk, then the process dies
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(ck.torch, "save", crashing_save)
    with pytest.raises(OSError, match="simulated"):
        write_checkpoint(_state(2.0, step=2), tmp_path, step=2)
    monkeypatch.setattr(ck.torch, "save", real_save)
    old = load_checkpoint(tmp_path / LATEST)                 # the old latest survives intact
    assert old["step"] == 1 and torch.equal(old["model"]["w"], torch.full((3,), 1.0))
    assert not (tmp_path / "ckpt-0000002.pt").exists()
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]   # temp file removed


def test_failure_in_rename_keeps_target(tmp_path, monkeypatch):
    atomic_save(_state(1.0), tmp_path / "x.pt")

    def failing_replace(src, dst):
        raise OSError("rename failed (simulated)")

    monkeypatch.setattr(ck.os, "replace", failing_replace)
    with pytest.raises(OSError, match="simulated"):
        atomic_save(_state(2.0), tmp_path / "x.pt")
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(tmp_path / "x.pt")["model"]["w"], torch.full((3,), 1.0))
    assert os.listdir(tmp_path) == ["x.pt"]


def test_truncated_checkpoint_names_the_file(tmp_path):
    path = atomic_save(_state(1.0), tmp_path / "ckpt.pt")
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match=r"ckpt\.pt.*corrupt or truncated"):
        load_checkpoint(path)


def test_garbage_checkpoint_names_the_file(tmp_path):
    path = tmp_path / "latest.pt"
    path.write_bytes(b"definitely not a checkpoint" * 20)
    with pytest.raises(CheckpointError, match="latest.pt"):
        load_checkpoint(path)


def test_missing_checkpoint_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")


def test_pickled_arbitrary_object_is_rejected(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({**_state(1.0), "extra": Arbitrary()}, path)   # an unsafe (but loadable) pickle
    assert isinstance(torch.load(path, weights_only=False)["extra"], Arbitrary)
    with pytest.raises(CheckpointError, match=r"evil\.pt.*weights_only=True"):
        load_checkpoint(path)


def test_torch_load_called_with_weights_only(tmp_path, monkeypatch):
    path = atomic_save(_state(1.0), tmp_path / "c.pt")
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(ck.torch, "load", spy)
    load_checkpoint(path)
    assert calls and all(c.get("weights_only") is True for c in calls)


def test_wrong_format_is_rejected(tmp_path):
    path = atomic_save({"format": "something-else", "step": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="format"):
        load_checkpoint(path)
    assert load_checkpoint(path, check_format=False)["step"] == 1


def test_rng_state_roundtrip(tmp_path):
    torch.manual_seed(123)
    saved = rng_state()
    assert saved["torch"].dtype == torch.uint8
    first = torch.rand(5)
    path = atomic_save({"format": FORMAT, "rng": saved}, tmp_path / "r.pt")
    torch.rand(7)                                            # move the RNG on
    set_rng_state(load_checkpoint(path)["rng"])
    assert torch.equal(torch.rand(5), first)


def test_atomic_write_text_replaces_whole_file_or_nothing(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    ck.atomic_write_text('{"a": 1}\n', path)
    assert path.read_text() == '{"a": 1}\n'

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(ck.os, "replace", failing_replace)
    with pytest.raises(OSError):
        ck.atomic_write_text('{"a": 2}\n', path)
    monkeypatch.undo()
    assert path.read_text() == '{"a": 1}\n' and sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]
