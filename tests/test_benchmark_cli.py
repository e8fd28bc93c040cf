"""benchmarks/model_speed.py fails fast: bad overrides before any measurement, a crashed
measuring process ends the run instead of leaving it waiting forever."""
import multiprocessing as mp
import time

import pytest
from script_module import load_script


def _load():
    return load_script("benchmarks/model_speed.py")


def _put(value, queue):
    queue.put(value)


def _crash(value, queue):
    raise RuntimeError(f"measurement {value} crashed")


@pytest.mark.parametrize("argv, flag", [
    (["--opts", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE"], "--opts"),
    # --opts swallows every word after it, so a --compare-opts written after it lands in it.
    (["--opts", "A", "1", "--compare-opts", "B", "2"], "--opts"),
    (["--compare-opts", "A", "1", "B", "--opts", "A", "2"], "--compare-opts"),
])
def test_odd_overrides_are_one_line_before_any_work(argv, flag, capsys):
    module = _load()
    start = time.perf_counter()
    with pytest.raises(SystemExit) as exit_info:
        module.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"{flag} takes KEY VALUE pairs" in err
    # Refused by the parser: no matrix-multiply peak, no model built.
    assert time.perf_counter() - start < 5


def test_collect_returns_every_result():
    module = _load()
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    workers = [ctx.Process(target=_put, args=(i, queue)) for i in range(2)]
    for w in workers:
        w.start()
    assert sorted(module._collect(queue, workers)) == [0, 1]


def test_collect_stops_when_a_worker_dies():
    """One worker crashes, the other would wait forever (as a gloo rank waits for a dead peer):
    the collector gives up and stops it."""
    module = _load()
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    crashed = ctx.Process(target=_crash, args=(0, queue))
    waiting = ctx.Process(target=time.sleep, args=(600,))
    crashed.start()
    waiting.start()
    start = time.perf_counter()
    assert module._collect(queue, [crashed, waiting]) is None
    assert time.perf_counter() - start < 60
    assert crashed.exitcode == 1
    assert not waiting.is_alive()


def test_run_exits_with_a_line_when_its_child_fails():
    module = _load()
    with pytest.raises(SystemExit, match="_crash.*failed"):
        module._run(mp.get_context("spawn"), _crash, 7)
