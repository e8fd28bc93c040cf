"""Optical flow as the field stores it: Brox-style JPEGs, computed with TV-L1 or DIS.

Encoding (REFERENCE section 3): channel = clip(round(16 * v + 128), 0, 255) with R = x-flow,
G = y-flow, B = magnitude; decoding v = (c - 128) / 16. Flow image i is the flow from frame i
to frame i + 1; a video of N frames gets N flow images, the last repeating the one before (a
1-frame video gets a zero-flow image).

Command line (a video file, a folder of frames, or with --recursive a root of
<Class>/<video>/ frame folders such as rgb-images/)::

    python -m pcsc_d2.data.flow --input datasets/ucf24/rgb-images \
        --output datasets/ucf24/brox-images --recursive [--method tvl1|dis] [--workers 4]

Finished flow files are skipped, so an interrupted run resumes; each file is written atomically.
"""
import argparse
import contextlib
import ctypes
import logging
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from multiprocessing.pool import Pool
from typing import Iterator, List, Optional, Tuple

import cv2
import numpy as np
import tqdm

from pcsc_d2.utils.image_io import read_image
from pcsc_d2.utils.io import atomic_open

__all__ = [
    "FRAME_EXTENSIONS",
    "compute_flow",
    "decode_flow",
    "encode_flow",
    "extract_flow_frames",
    "extract_flow_video",
    "list_frames",
    "make_flow_estimator",
    "run_extraction",
    "worker_pool",
]

logger = logging.getLogger(__name__)

FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")
FLOW_SCALE = 16.0


def encode_flow(flow: np.ndarray) -> np.ndarray:
    """(H, W, 2) float flow in pixels -> (H, W, 3) uint8 Brox-style image (R=x, G=y, B=|v|)."""
    mag = np.sqrt((flow.astype(np.float32) ** 2).sum(axis=-1, keepdims=True))
    stacked = np.concatenate([flow.astype(np.float32), mag], axis=-1)
    return np.clip(np.round(FLOW_SCALE * stacked + 128.0), 0, 255).astype(np.uint8)


def decode_flow(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 Brox-style image (R=x, G=y) -> (H, W, 2) float32 flow in pixels."""
    return (image[..., :2].astype(np.float32) - 128.0) / FLOW_SCALE


def make_flow_estimator(method: str):
    """An OpenCV estimator: "tvl1" (DualTVL1, what the field uses) or "dis" (fast)."""
    if method == "tvl1":
        return cv2.optflow.DualTVL1OpticalFlow_create()
    if method == "dis":
        return cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    raise ValueError(f"unknown flow method {method!r}: use 'tvl1' or 'dis'")


def compute_flow(
    prev_rgb: np.ndarray, next_rgb: np.ndarray, method: str = "tvl1", estimator=None
) -> np.ndarray:
    """Flow from ``prev_rgb`` to ``next_rgb``.

    Args:
        prev_rgb, next_rgb: (H, W, 3) uint8 RGB frames (converted to grayscale).
        method: "tvl1" or "dis"; ignored when ``estimator`` is given.
        estimator: a reusable estimator from :func:`make_flow_estimator` (building a TV-L1
            object per pair is wasteful over a video).

    Returns:
        (H, W, 2) float32 flow in pixels (x, y).
    """
    estimator = estimator or make_flow_estimator(method)
    prev = cv2.cvtColor(prev_rgb, cv2.COLOR_RGB2GRAY)
    nxt = cv2.cvtColor(next_rgb, cv2.COLOR_RGB2GRAY)
    return estimator.calc(prev, nxt, None)


def list_frames(folder: str) -> List[str]:
    """Sorted frame files of a folder; IOError when the folder is missing or has none."""
    if not os.path.isdir(folder):
        raise IOError(f"frame folder not found: {folder}")
    frames = sorted(f for f in os.listdir(folder) if f.lower().endswith(FRAME_EXTENSIONS))
    if not frames:
        raise IOError(f"no frames ({'/'.join(FRAME_EXTENSIONS)}) in {folder}")
    return [os.path.join(folder, f) for f in frames]


def _read_rgb(path: str) -> np.ndarray:
    """A (H, W, 3) uint8 RGB frame; a missing, truncated or undecodable file is an IOError."""
    return cv2.cvtColor(read_image(path), cv2.COLOR_BGR2RGB)


def _write_jpeg(path: str, rgb: np.ndarray, quality: int = 95) -> None:
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise IOError(f"cannot encode {path}")
    with atomic_open(path, "wb") as f:
        f.write(buf.tobytes())


def _flow_name(i: int) -> str:
    return f"{i:05d}.jpg"


def extract_flow_frames(frames: List[str], out_dir: str, method: str = "tvl1") -> int:
    """Write the flow JPEGs of a list of frame files; skip those already written.

    Args:
        frames: N frame files, in order.
        out_dir: receives 00001.jpg .. 0000N.jpg.
        method: "tvl1" or "dis".

    Returns:
        the number of flow files written (0 when everything was already there).
    """
    n = len(frames)
    todo = [i for i in range(1, n + 1) if not os.path.isfile(os.path.join(out_dir, _flow_name(i)))]
    if not todo:
        return 0
    os.makedirs(out_dir, exist_ok=True)
    estimator = make_flow_estimator(method)
    cache = {}

    def frame(i: int) -> np.ndarray:
        # Consecutive pairs share a frame: keep the last few decoded instead of reading twice.
        if i not in cache:
            if len(cache) > 4:
                cache.clear()
            cache[i] = _read_rgb(frames[i - 1])
        return cache[i]

    for i in todo:
        # Image i is the flow i -> i+1; the last one repeats the flow N-1 -> N.
        src = min(i, n - 1)
        if n == 1:
            flow = np.zeros(frame(1).shape[:2] + (2,), np.float32)
        else:
            flow = compute_flow(frame(src), frame(src + 1), method, estimator)
        _write_jpeg(os.path.join(out_dir, _flow_name(i)), encode_flow(flow))
    return len(todo)


def extract_flow_video(
    video: str, out_dir: str, method: str = "tvl1", rgb_dir: Optional[str] = None
) -> int:
    """Decode a video file into frames 00001.jpg ... then write their flow JPEGs.

    Args:
        video: a file cv2.VideoCapture can read.
        out_dir: receives the flow JPEGs.
        method: "tvl1" or "dis".
        rgb_dir: where the decoded frames go (rgb-images style); ``out_dir/_frames`` if None.
            Frames already there are not rewritten.

    Returns:
        the number of flow files written.
    """
    cap = cv2.VideoCapture(video)
    if not cap.isOpened():
        raise IOError(f"cannot open video {video}")
    rgb_dir = rgb_dir or os.path.join(out_dir, "_frames")
    i = 0
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        i += 1
        path = os.path.join(rgb_dir, f"{i:05d}.jpg")
        if not os.path.isfile(path):
            _write_jpeg(path, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    if i == 0:
        raise IOError(f"no frame could be decoded from {video}")
    return extract_flow_frames(list_frames(rgb_dir), out_dir, method)


_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _set_parent_death_signal(sig: int) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent dies; False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent_pid: int, interval: float = 0.5) -> None:
    """Poll until the parent is gone (this process is re-parented), then SIGTERM ourselves."""
    while os.getppid() == parent_pid:
        time.sleep(interval)
    os.kill(os.getpid(), signal.SIGTERM)


def _exit_on_sigterm(signum: int, frame) -> None:
    # Unwinding (instead of the default instant death) lets atomic_open remove its temporary.
    raise SystemExit(128 + signum)


def _die_with_parent(parent_pid: int) -> None:
    """Pool initializer: end this worker when the process that made the pool dies.

    Without it, killing the flow tool (kill -9, an OOM kill) leaves its workers running and
    writing. On Linux the kernel signals the worker (prctl PR_SET_PDEATHSIG); elsewhere a
    daemon thread polls for the re-parenting that follows the parent's death.
    """
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    if not _set_parent_death_signal(signal.SIGTERM):
        threading.Thread(
            target=_watch_parent, args=(parent_pid,), name="watch-parent", daemon=True
        ).start()
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os.kill(os.getpid(), signal.SIGTERM)


# On an error, workers get this long to unwind after SIGTERM before they are killed.
_TERMINATE_GRACE_S = 5.0


@contextlib.contextmanager
def worker_pool(workers: int) -> Iterator[Pool]:
    """A fork Pool whose workers run OpenCV single-threaded and die with the calling process.

    OpenCV's thread pool must be shrunk in the parent, before the fork: a forked child that
    reconfigures the pool it inherited waits forever on the parent's (absent) threads.

    When the block ends normally the workers are told to stop (close, join) rather than
    signalled: ``Pool.terminate`` sends SIGTERM, and a SIGTERM that lands just before an idle
    worker blocks on the task queue's lock runs its Python handler only after the lock is
    granted, i.e. never, so ``terminate`` waited on it forever (it hung a fresh clone's
    ``make run`` once, after every video was rendered). On an error the workers get SIGTERM and
    ``_TERMINATE_GRACE_S`` to unwind, then SIGKILL.
    """
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    pool = mp.get_context("fork").Pool(
        workers, initializer=_die_with_parent, initargs=(os.getpid(),)
    )
    try:
        yield pool
    except BaseException:
        _stop_workers(pool)
        raise
    else:
        pool.close()
        pool.join()
    finally:
        cv2.setNumThreads(threads)


def _stop_workers(pool: Pool) -> None:
    """SIGTERM every worker, SIGKILL those still alive after the grace, then reap the pool."""
    procs = list(pool._pool)  # the Pool's worker processes; terminate() signals the same list
    for p in procs:
        if p.exitcode is None:
            p.terminate()
    deadline = time.monotonic() + _TERMINATE_GRACE_S
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.exitcode is None:
            p.kill()
            p.join()
    pool.terminate()


def _job(args: Tuple[str, str, str, Optional[str]]) -> int:
    source, out_dir, method, rgb_dir = args
    if os.path.isfile(source):
        return extract_flow_video(source, out_dir, method, rgb_dir)
    return extract_flow_frames(list_frames(source), out_dir, method)


def _jobs(input_path: str, output: str, recursive: bool, method: str, rgb_out: Optional[str]):
    if os.path.isfile(input_path):
        if not input_path.lower().endswith(VIDEO_EXTENSIONS):
            raise IOError(f"{input_path}: not a video file ({'/'.join(VIDEO_EXTENSIONS)})")
        return [(input_path, output, method, rgb_out)]
    if not os.path.isdir(input_path):
        raise IOError(f"input not found: {input_path}")
    if not recursive:
        return [(input_path, output, method, None)]
    jobs = []
    for cls in sorted(os.listdir(input_path)):
        cls_dir = os.path.join(input_path, cls)
        if not os.path.isdir(cls_dir):
            continue
        for video in sorted(os.listdir(cls_dir)):
            src = os.path.join(cls_dir, video)
            if os.path.isdir(src):
                jobs.append((src, os.path.join(output, cls, video), method, None))
            elif src.lower().endswith(VIDEO_EXTENSIONS):
                name = os.path.splitext(video)[0]
                frames = os.path.join(rgb_out, cls, name) if rgb_out else None
                jobs.append((src, os.path.join(output, cls, name), method, frames))
    if not jobs:
        raise IOError(f"{input_path}: no <Class>/<video> folders or videos found (--recursive)")
    return jobs


def run_extraction(
    input_path: str,
    output: str,
    method: str = "tvl1",
    workers: int = 1,
    recursive: bool = False,
    rgb_out: Optional[str] = None,
) -> int:
    """Extract flow for a video file, a frame folder or (``recursive``) a dataset root.

    Args:
        input_path: the video file, frame folder or root of <Class>/<video> folders or videos.
        output: flow root; mirrors ``input_path``'s <Class>/<video> layout when recursive.
        method: "tvl1" or "dis".
        workers: processes, one video each.
        recursive: treat ``input_path`` as a dataset root.
        rgb_out: for video inputs, where their decoded frames go.

    Returns:
        the number of flow files written (0 when everything already existed).
    """
    jobs = _jobs(input_path, output, recursive, method, rgb_out)
    written = 0
    if workers <= 1 or len(jobs) == 1:
        for job in tqdm.tqdm(jobs, desc=f"flow ({method})", disable=len(jobs) == 1):
            written += _job(job)
    else:
        with worker_pool(workers) as pool:
            results = pool.imap_unordered(_job, jobs)
            for n in tqdm.tqdm(results, total=len(jobs), desc=f"flow ({method})"):
                written += n
    logger.info("Flow: %d files written for %d inputs into %s", written, len(jobs), output)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description="Brox-style optical flow JPEGs (TV-L1 or DIS)")
    parser.add_argument("--input", required=True, help="video file, frame folder or dataset root")
    parser.add_argument("--output", required=True, help="flow folder (mirrors --input)")
    parser.add_argument("--method", default="tvl1", choices=["tvl1", "dis"])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--recursive",
        action="store_true",
        help="--input is a root of <Class>/<video>/ frame folders or videos",
    )
    parser.add_argument(
        "--rgb-output", default=None, help="for video inputs: where to write the decoded frames"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s] %(message)s")
    try:
        run_extraction(
            args.input, args.output, args.method, args.workers, args.recursive, args.rgb_output
        )
    except IOError as e:
        parser.exit(2, f"error: {e}\n")


if __name__ == "__main__":
    main()
