"""Atomic writes and strict checkpoints (pcsc_d2.utils.io, pcsc_d2.engine.checkpoint)."""
import os

import pytest
import torch
from torch import nn

from pcsc_d2.engine.checkpoint import PCSCCheckpointer
from pcsc_d2.utils.io import atomic_open, atomic_save_json


def test_atomic_open_keeps_old_file_on_crash(tmp_path):
    path = str(tmp_path / "out.json")
    atomic_save_json({"a": 1}, path)
    with pytest.raises(RuntimeError):
        with atomic_open(path, "w") as f:
            f.write('{"a": 2, "trunc')
            raise RuntimeError("killed mid-write")
    with open(path) as f:
        assert f.read() == '{"a": 1}'
    # No temporary file is left behind.
    assert os.listdir(tmp_path) == ["out.json"]


class _Net(nn.Module):
    def __init__(self, width: int = 3, head: bool = False):
        super().__init__()
        self.body = nn.Linear(2, width)
        if head:
            self.actionness_head = nn.Linear(width, 1)


def test_checkpointer_saves_atomically_and_resumes(tmp_path):
    net = _Net()
    ckpt = PCSCCheckpointer(net, str(tmp_path))
    ckpt.save("model_0000009")
    assert ckpt.get_checkpoint_file().endswith("model_0000009.pth")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    # A crash while writing the next checkpoint leaves the last one intact and tagged.
    original = torch.save

    def crashing_save(obj, f, *a, **k):
        f.write(b"partial")
        raise KeyboardInterrupt

    torch.save = crashing_save
    try:
        with pytest.raises(KeyboardInterrupt):
            ckpt.save("model_0000019")
    finally:
        torch.save = original
    assert not os.path.exists(tmp_path / "model_0000019.pth")
    assert ckpt.get_checkpoint_file().endswith("model_0000009.pth")
    other = _Net()
    PCSCCheckpointer(other, str(tmp_path), strict=True).resume_or_load("", resume=True)
    for k, v in other.state_dict().items():
        assert torch.equal(v, before[k])


def test_strict_load_refuses_mismatched_checkpoint(tmp_path):
    PCSCCheckpointer(_Net(width=3), str(tmp_path)).save("small")
    path = str(tmp_path / "small.pth")
    with pytest.raises(ValueError, match=r"small\.pth.*shape"):
        PCSCCheckpointer(_Net(width=4), strict=True).load(path)
    with pytest.raises(ValueError, match="missing keys.*actionness_head"):
        PCSCCheckpointer(_Net(head=True), strict=True).load(path)
    # The head alone may be missing when allowed (training the actionness classifiers).
    PCSCCheckpointer(_Net(head=True), strict=True, allow_missing=("actionness_head.",)).load(path)
    # Non-strict keeps detectron2's lenient behaviour.
    PCSCCheckpointer(_Net(width=4)).load(path)
