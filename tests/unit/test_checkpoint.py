import os
import pickle

import pytest
import torch

from nnlab.engine.checkpoint import load_checkpoint, save_checkpoint
from nnlab.errors import CheckpointError


def test_checkpoint_round_trip_keeps_tensors_and_metadata(tmp_path):
    state = {"model": {"w": torch.randn(3, 3)}, "model_args": {"widths": (4, 8)}, "step": 7, "classes": ["a", "b"]}
    save_checkpoint(tmp_path / "c.pt", state)
    back = load_checkpoint(tmp_path / "c.pt")
    assert torch.equal(back["model"]["w"], state["model"]["w"])
    assert back["model_args"] == {"widths": (4, 8)} and back["step"] == 7
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temp files left


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_checkpoint_with_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "payload": Evil()}, path)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_checkpoint(path)


def test_plain_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(CheckpointError, match=str(path)):
        load_checkpoint(path)


def test_truncated_checkpoint_names_the_file(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"model": {"w": torch.randn(100, 100)}})
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(path)


def test_missing_checkpoint_names_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="c.pt: checkpoint not found"):
        load_checkpoint(tmp_path / "c.pt")


def test_failed_write_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(2)}})

    class Boom:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        save_checkpoint(path, {"model": {"w": Boom()}})
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]
