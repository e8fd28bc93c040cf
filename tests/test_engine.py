"""Atomic writes and strict checkpoints (pcsc_d2.utils.io, pcsc_d2.engine.checkpoint)."""
import os
from types import SimpleNamespace

import pytest
import torch
from detectron2.engine import hooks
from torch import nn

from pcsc_d2.engine.checkpoint import (
    PCSCCheckpointer,
    PCSCPeriodicCheckpointer,
    use_pcsc_checkpoint_hook,
)
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


def test_periodic_hook_keeps_the_last_n_and_removes_stale_temporaries(tmp_path):
    ckpt = PCSCCheckpointer(_Net(), str(tmp_path))
    ckpt.save("model_0000001")  # an earlier run's checkpoint counts too
    # What a save killed midway leaves (atomic_open's temporaries), and a file of the user's.
    (tmp_path / ".model_0000003.pth.k2j4.tmp").write_bytes(b"partial")
    (tmp_path / ".last_checkpoint.x9a1.tmp").write_text("model_0000003.pth")
    (tmp_path / "notes.txt").write_text("kept")
    hook = PCSCPeriodicCheckpointer(ckpt, period=2, max_to_keep=2)
    hook.trainer = SimpleNamespace(max_iter=10)
    hook.before_train()
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    for iteration in range(2, 10):  # saves after iterations 3, 5, 7, 9, then model_final
        hook.step(iteration)
    assert sorted(os.listdir(tmp_path)) == [
        "last_checkpoint", "model_0000007.pth", "model_0000009.pth", "model_final.pth",
        "notes.txt",
    ]


def test_trainer_hooks_get_the_retention_hook():
    ckpt = PCSCCheckpointer(_Net())
    timer = hooks.IterationTimer()
    out = use_pcsc_checkpoint_hook([timer, hooks.PeriodicCheckpointer(ckpt, 5, max_iter=9)], 3)
    assert out[0] is timer and isinstance(out[1], PCSCPeriodicCheckpointer)
    assert (out[1].period, out[1].max_iter, out[1].keep) == (5, 9, 3)


@pytest.mark.parametrize("precision,scaling", [("bfloat16", False), ("float16", True)])
def test_configure_amp_sets_the_precision(precision, scaling):
    import warnings

    from detectron2.config import get_cfg
    from detectron2.engine import AMPTrainer, SimpleTrainer

    from pcsc_d2.config import add_pcsc_config
    from pcsc_d2.engine import configure_amp

    cfg = get_cfg()
    add_pcsc_config(cfg)
    cfg.SOLVER.AMP.PRECISION = precision
    model = nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GradScaler warns that CUDA is absent here
        loop = AMPTrainer(model, [], opt)
    configure_amp(loop, cfg)
    assert loop.precision == getattr(torch, precision)
    assert loop.grad_scaler.is_enabled() == (scaling and torch.cuda.is_available())
    plain = SimpleTrainer(model, [], opt)
    configure_amp(plain, cfg)  # not an AMP loop: untouched
    assert not hasattr(plain, "precision")
    cfg.SOLVER.AMP.PRECISION = "int8"
    with pytest.raises(ValueError, match="PRECISION"):
        configure_amp(loop, cfg)
