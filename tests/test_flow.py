"""Brox-style flow encoding and the resumable flow extractor (pcsc_d2.data.flow)."""
import os
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from pcsc_d2.data import flow
from pcsc_d2.data.flow import (
    compute_flow,
    decode_flow,
    encode_flow,
    extract_flow_frames,
    list_frames,
    run_extraction,
)


def test_encode_decode_round_trip_within_005px():
    flow = np.random.default_rng(0).uniform(-7.9, 7.9, (32, 40, 2)).astype(np.float32)
    back = decode_flow(encode_flow(flow))
    assert np.abs(back - flow).max() <= 0.5 / 16 + 1e-6  # half a quantisation step
    assert np.abs(back - flow).max() < 0.05


def test_encode_values_and_clipping():
    flow = np.array([[[0.0, 0.0], [1.0, -2.0], [100.0, -100.0]]], np.float32)
    img = encode_flow(flow)
    assert img[0, 0].tolist() == [128, 128, 128]
    assert img[0, 1].tolist() == [144, 96, round(128 + 16 * np.sqrt(5))]
    assert img[0, 2].tolist() == [255, 0, 255]


def _texture(seed=0, h=90, w=120):
    rng = np.random.default_rng(seed)
    tex = cv2.GaussianBlur((rng.random((h + 20, w + 20)) * 255).astype(np.uint8), (5, 5), 0)
    return tex


def test_dis_recovers_a_known_shift():
    tex = _texture()
    a = np.repeat(tex[10:100, 10:130, None], 3, axis=2)
    b = np.repeat(tex[8:98, 13:133, None], 3, axis=2)  # content moves by (-3, +2)
    flow = compute_flow(a, b, method="dis")
    assert abs(np.median(flow[..., 0]) + 3) < 0.5
    assert abs(np.median(flow[..., 1]) - 2) < 0.5


def _write_frames(folder, n=5):
    os.makedirs(folder, exist_ok=True)
    tex = _texture()
    for i in range(n):
        img = np.repeat(tex[10:100, 10 + i:130 + i, None], 3, axis=2)
        cv2.imwrite(os.path.join(folder, f"{i + 1:05d}.jpg"), img)


def test_extraction_writes_one_file_per_frame_and_resumes(tmp_path):
    frames_dir, out = str(tmp_path / "frames"), str(tmp_path / "flow")
    _write_frames(frames_dir, 5)
    assert extract_flow_frames(list_frames(frames_dir), out, "dis") == 5
    names = sorted(os.listdir(out))
    assert names == [f"{i:05d}.jpg" for i in range(1, 6)]
    # The content moves left by 1 px per frame: decoded x-flow about -1.
    x = decode_flow(cv2.imread(os.path.join(out, "00002.jpg"))[..., ::-1])[..., 0]
    assert abs(np.median(x) + 1) < 0.3
    # The last image repeats the flow of the pair before it.
    last, before = (cv2.imread(os.path.join(out, f"0000{i}.jpg")) for i in (5, 4))
    assert np.array_equal(last, before)
    mtimes = {n: os.stat(os.path.join(out, n)).st_mtime_ns for n in names}
    assert extract_flow_frames(list_frames(frames_dir), out, "dis") == 0
    assert {n: os.stat(os.path.join(out, n)).st_mtime_ns for n in names} == mtimes
    os.remove(os.path.join(out, "00003.jpg"))
    assert extract_flow_frames(list_frames(frames_dir), out, "dis") == 1
    assert sorted(os.listdir(out)) == names
    for n in names:
        if n != "00003.jpg":
            assert os.stat(os.path.join(out, n)).st_mtime_ns == mtimes[n]


def test_single_frame_gets_a_zero_flow_image(tmp_path):
    _write_frames(str(tmp_path / "one"), 1)
    assert extract_flow_frames(list_frames(str(tmp_path / "one")), str(tmp_path / "f"), "dis") == 1
    img = cv2.imread(str(tmp_path / "f" / "00001.jpg"))
    assert img.shape == (90, 120, 3) and np.abs(img.astype(int) - 128).max() <= 1


def test_recursive_root_and_video_file(tmp_path):
    root = tmp_path / "rgb-images"
    _write_frames(str(root / "ClassA" / "vid1"), 3)
    _write_frames(str(root / "ClassB" / "vid2"), 4)
    out = tmp_path / "brox"
    assert run_extraction(str(root), str(out), "dis", workers=2, recursive=True) == 7
    assert len(os.listdir(out / "ClassB" / "vid2")) == 4
    # A video file: its frames are decoded to --rgb-output and flow written for each.
    video = str(tmp_path / "clip.avi")
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"MJPG"), 10, (120, 90))
    tex = _texture()
    for i in range(6):
        writer.write(np.repeat(tex[10:100, 10 + i:130 + i, None], 3, axis=2))
    writer.release()
    vrgb = str(tmp_path / "vrgb")
    assert run_extraction(video, str(tmp_path / "vflow"), "dis", rgb_out=vrgb) == 6
    assert len(os.listdir(tmp_path / "vrgb")) == 6


def test_unreadable_inputs_get_clear_errors(tmp_path):
    with pytest.raises(IOError, match="frame folder not found"):
        list_frames(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(IOError, match="no frames"):
        list_frames(str(tmp_path / "empty"))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "00001.jpg").write_bytes(b"not a jpeg")
    (bad / "00002.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(IOError, match=r"00001.jpg: cannot decode the frame"):
        extract_flow_frames(list_frames(str(bad)), str(tmp_path / "o"), "dis")
    proc = subprocess.run(
        [sys.executable, "-m", "pcsc_d2.data.flow", "--input", str(tmp_path / "nope"),
         "--output", str(tmp_path / "o")], capture_output=True, text=True,
    )
    assert proc.returncode == 2 and "input not found" in proc.stderr


# A flow tool stand-in: a worker_pool whose two workers each record their pid and then work
# (sleep) for long. MODE "prctl" disables the polling fallback, "fallback" disables prctl, so
# each run checks one mechanism alone.
_PARENT = r"""
import os, sys, time
from pcsc_d2.data import flow
out, mode = sys.argv[1], sys.argv[2]
if mode == "prctl":
    flow._watch_parent = lambda parent_pid, interval=0.5: None
else:
    flow._set_parent_death_signal = lambda sig: False

def job(i):
    open(os.path.join(out, str(os.getpid())), "w").close()
    time.sleep(120)

with flow.worker_pool(2) as pool:
    pool.map(job, range(2))
"""


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper has ended)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads process states from /proc")
@pytest.mark.parametrize("mode", ["prctl", "fallback"])
def test_pool_workers_die_with_their_parent(tmp_path, mode):
    parent = subprocess.Popen([sys.executable, "-c", _PARENT, str(tmp_path), mode])
    pids = []
    try:
        deadline = time.time() + 120
        while len(os.listdir(tmp_path)) < 2 and time.time() < deadline:
            time.sleep(0.1)
        pids = [int(name) for name in os.listdir(tmp_path)]
        assert len(pids) == 2 and all(_alive(p) for p in pids)
        parent.kill()  # SIGKILL: the parent runs no cleanup at all
        parent.wait()
        deadline = time.time() + 10
        while any(_alive(p) for p in pids) and time.time() < deadline:
            time.sleep(0.1)
        assert not any(_alive(p) for p in pids), f"workers {pids} outlived their parent"
    finally:
        parent.kill()
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _square(x: int) -> int:
    return x * x


def _ignore_sigterm_and_sleep(_: int) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a worker that will not unwind
    time.sleep(60)


def test_pool_ends_its_workers_without_a_signal_when_the_block_succeeds():
    """close + join, not terminate: a SIGTERM racing an idle worker's queue lock once hung the
    pool's exit forever. Workers that were told to stop exit with status 0; SIGTERM'd ones, 143."""
    with flow.worker_pool(2) as pool:
        procs = list(pool._pool)
        assert pool.map(_square, range(20)) == [x * x for x in range(20)]
    assert [p.exitcode for p in procs] == [0, 0]


def test_pool_kills_workers_that_do_not_unwind_on_an_error(monkeypatch):
    monkeypatch.setattr(flow, "_TERMINATE_GRACE_S", 0.5)
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="stop"):
        with flow.worker_pool(2) as pool:
            procs = list(pool._pool)
            pool.map_async(_ignore_sigterm_and_sleep, range(2))
            time.sleep(0.5)  # both workers are asleep, SIGTERM ignored
            raise RuntimeError("stop")
    assert time.monotonic() - start < 20
    assert all(p.exitcode == -signal.SIGKILL for p in procs)
