"""Annotated videos -> a dataset in the field's layout, ready for training.

    python -m pcsc_d2.data.prepare --videos DIR --annotations FILE --format {road,gt,json} \\
        --out DATASET_DIR --name NAME [--test-list FILE | --same-train-test] \\
        [--annotation-size WxH] [--flow {tvl1,dis}] [--workers N] [--short-side S] \\
        [--max-frames N] [--shard I/N | --merge]

Writes, under DATASET_DIR (put it in ``$DETECTRON2_DATASETS`` and it registers itself as
``NAME_train`` / ``NAME_test``, see :mod:`pcsc_d2.data.builtin`)::

    rgb-images/<video>/00001.jpg ...     decoded frames (resized with --short-side)
    brox-images/<video>/00001.jpg ...    Brox-style flow JPEGs (pcsc_d2.data.flow)
    NAME-GT.pkl                          the field's GT schema: real class names, per-video
                                         resolution of the written frames, decoded frame counts,
                                         splits, and "flip_pairs" when the annotations have them
    .prepare/<video>.json                per-video record, written last (resume, --merge)

Videos are found under --videos (``Class/v_x.avi`` or flat ``v_x.mp4``, any container OpenCV
reads) and matched to annotation keys by their path without extension, else by file stem. Only
videos present on disk enter the dataset; the log counts the annotated videos that are absent
and the videos that have no annotation. <video> is the annotation's key (e.g. ``Class/v_x``).

Annotation formats (:mod:`pcsc_d2.data.annotation_formats`, where the simple JSON format for
your own data is documented): ``road`` (ROAD's pyannot.pkl of UCF-101-24), ``gt`` (the field's
GT pickle or its JSON), ``json``. Boxes are rescaled from the frames they were drawn on
(--annotation-size, default 320x240 for road, the GT's resolution for gt, the video's own size
for json) to the written frames: an inclusive pixel box x1..x2 covers [x1, x2 + 1) and is
scaled as that interval, x1' = x1 * s, x2' = (x2 + 1) * s - 1.

Splits: --test-list names the test videos (one ``Class/v_x`` or ``v_x`` a line), every other
prepared video is train; --same-train-test puts every video in both (a plumbing check on a few
clips, which measures fitting, not generalisation). Without either: the GT file's splits (gt),
each video's "split" (json; "train" when absent), and for road UCF-101's split 1, whose test
videos are those of groups g01..g07 (exactly testlist01.txt).

Checked before any frame is written: the arguments, the annotation file, that every annotated
video on disk decodes (up to --max-frames) and has as many frames as its annotations reach.
Resumable: a video with a record is skipped, and every file is written atomically. With
``--shard I/N`` a run prepares every N-th video only (a cluster array job) and writes no GT;
a last ``--merge`` run writes the GT file from the records. --max-frames N keeps the first N
frames of each video (tubes are cut there): for tests and quick looks.
"""
import argparse
import contextlib
import logging
import os
import pickle
import re
import shutil
import sys
import time
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np
import tqdm

from pcsc_d2.utils.errors import INPUT_ERRORS, InputError, error_line
from pcsc_d2.utils.io import atomic_save_json

from .annotation_formats import FORMATS, SourceAnnotations, read_annotations
from .annotations import save_annotations
from .builtin import _PREDEFINED
from .flow import extract_flow_frames, worker_pool
from .prepare_records import (
    PrepareError,
    build_gt,
    load_record,
    record_options,
    remove_started,
    video_reach,
    write_started,
)
from .video import (
    count_frames,
    find_videos,
    iter_frames,
    open_video,
    resize_short_side,
    write_jpeg,
)

__all__ = ["PrepareError", "prepare_dataset", "main"]

logger = logging.getLogger(__name__)

_UCF_GROUP = re.compile(r"_g(\d+)_c\d+$")


def _match_videos(ann: SourceAnnotations, videos_dir: str) -> Dict[str, str]:
    """{annotation key: video file} for the annotated videos found under ``videos_dir``."""
    if not os.path.isdir(videos_dir):
        raise InputError(f"{videos_dir}: videos folder not found")
    files = find_videos(videos_dir)
    present, used = {}, set()
    for key in sorted(ann.tubes):
        candidates = files.get(key) or files.get(key.rsplit("/", 1)[-1]) or []
        if len(candidates) > 1:
            raise InputError(f"{candidates[0]}: video {key!r} matches {len(candidates)} files "
                             f"({', '.join(candidates[:3])}); keep one")
        if candidates:
            present[key] = candidates[0]
            used.add(candidates[0])
    all_files = {p for paths in files.values() for p in paths}
    logger.info(
        "%s: %d annotated videos found in %s; %d annotated videos absent; %d videos there have "
        "no annotation (ignored)", ann.source, len(present), videos_dir,
        len(ann.tubes) - len(present), len(all_files - used),
    )
    if not present:
        raise InputError(f"{videos_dir}: none of the {len(ann.tubes)} videos annotated in "
                         f"{ann.source} is there (matched by path or file name, without extension)")
    return present


def _splits(videos: List[str], ann: SourceAnnotations, fmt: str, test_list: Optional[str],
            same_train_test: bool) -> Tuple[List[List[str]], List[List[str]]]:
    """The train and test split lists of the prepared videos (module docstring)."""
    if same_train_test:
        return [list(videos)], [list(videos)]
    if test_list is not None:
        with open(test_list, encoding="utf-8") as f:
            names = {os.path.splitext(line.strip())[0] for line in f if line.strip()}
        test = {v for v in videos if v in names or v.rsplit("/", 1)[-1] in names}
        logger.info("%s: %d of its %d names are prepared videos", test_list, len(test), len(names))
        return [[v for v in videos if v not in test]], [[v for v in videos if v in test]]
    if ann.splits is not None:
        present = set(videos)
        train, test = ([[v for v in split if v in present] for split in ann.splits[key]]
                       for key in ("train_videos", "test_videos"))
        return train, test
    if fmt == "road":
        def is_test(v: str) -> bool:
            match = _UCF_GROUP.search(v)
            return bool(match) and int(match.group(1)) <= 7

        return [[v for v in videos if not is_test(v)]], [[v for v in videos if is_test(v)]]
    return [list(videos)], [[]]


def _check_videos(jobs: List[Tuple[str, str]], ann: SourceAnnotations, max_frames: Optional[int],
                  workers: int) -> Dict[str, int]:
    """Decode every video to be prepared (up to max_frames) and compare with its annotations.

    Returns:
        {video: frames to prepare}.
    """
    problems, counts = [], {}
    with _mapper(workers, len(jobs)) as imap:
        infos = imap(_count_job, [(path, max_frames) for _, path in jobs])
        for (key, path), info in tqdm.tqdm(zip(jobs, infos), total=len(jobs), unit="video",
                                           desc="checking videos", disable=len(jobs) < 2):
            if isinstance(info, str):
                problems.append(info)
                continue
            counts[key] = info.nframes
            reach = video_reach(ann.tubes[key])
            if reach > info.nframes and (max_frames is None or info.nframes < max_frames):
                problems.append(f"{path}: has {info.nframes} frames, but its annotations in "
                                f"{ann.source} reach frame {reach}")
    if problems:
        raise PrepareError(problems)
    return counts


def _count_job(args):
    path, max_frames = args
    try:
        return count_frames(path, max_frames)
    except INPUT_ERRORS as e:
        return error_line(e)


@contextlib.contextmanager
def _mapper(workers: int, jobs: int, ordered: bool = True) -> Iterator[Callable]:
    """``imap`` (``imap_unordered`` unless ``ordered``) over a pool of processes, or the
    built-in ``map`` when one worker (or one job) is enough."""
    if workers > 1 and jobs > 1:
        with worker_pool(min(workers, jobs)) as pool:
            yield pool.imap if ordered else pool.imap_unordered
    else:
        yield map


def _prepare_video(args) -> Dict:
    """Worker: decode, write frames and flow, then the record (last). Returns the record, or
    {"video", "error": line}."""
    key, path, out, options = args
    try:
        return _prepare_video_unsafe(key, path, out, options)
    except INPUT_ERRORS as e:
        return {"video": key, "error": error_line(e)}


def _prepare_video_unsafe(key: str, path: str, out: str, options: Dict) -> Dict:
    rgb_dir = os.path.join(out, "rgb-images", key)
    flow_dir = os.path.join(out, "brox-images", key)
    if not write_started(out, key, options):
        # Files of an interrupted run with other options (size, frame limit): start over.
        for folder in (rgb_dir, flow_dir):
            shutil.rmtree(folder, ignore_errors=True)
    t0 = time.time()
    frames, size, source_size = [], None, None
    for i, frame in enumerate(iter_frames(path, options["max_frames"]), 1):
        source_size = frame.shape[1::-1]
        frame = resize_short_side(frame, options["short_side"])
        size = frame.shape[1::-1]
        frames.append(os.path.join(rgb_dir, f"{i:05d}.jpg"))
        if not os.path.isfile(frames[-1]):
            write_jpeg(frames[-1], frame)
    t1 = time.time()
    extract_flow_frames(frames, flow_dir, options["flow"])
    cap, fps = open_video(path)
    cap.release()
    record = {
        "video": key, "source": os.path.abspath(path), "nframes": len(frames),
        "width": int(size[0]), "height": int(size[1]),
        "source_width": int(source_size[0]), "source_height": int(source_size[1]),
        "fps": fps, "options": options,
        "seconds": {"frames": round(t1 - t0, 2), "flow": round(time.time() - t1, 2)},
    }
    atomic_save_json(record, os.path.join(out, ".prepare", key + ".json"), indent=1)
    remove_started(out, key)
    return record


def prepare_dataset(
    videos: str,
    annotations: str,
    fmt: str,
    out: str,
    name: str,
    test_list: Optional[str] = None,
    same_train_test: bool = False,
    annotation_size: Optional[Tuple[int, int]] = None,
    flow: str = "tvl1",
    workers: int = 1,
    max_frames: Optional[int] = None,
    short_side: Optional[int] = None,
    shard: Tuple[int, int] = (1, 1),
    merge: bool = False,
) -> Optional[str]:
    """Prepare a dataset (module docstring); the arguments mirror the command line.

    Returns:
        the GT file written, or None for a --shard run of several shards.

    Raises:
        InputError (PrepareError for several problems at once), OSError: bad inputs, each
            message naming the file.
    """
    if not name or re.search(r"[\s/\\]", name):
        raise InputError(f"--name {name!r}: expected a name without spaces or slashes")
    if f"{name}_train" in _PREDEFINED or f"{name}_test" in _PREDEFINED:
        raise InputError(f"--name {name!r}: {name}_train/{name}_test would clash with the "
                         "predefined datasets; choose another name")
    if os.path.isfile(out):
        raise InputError(f"{out}: is a file, expected the dataset folder to write")
    if test_list is not None and not os.path.isfile(test_list):
        raise InputError(f"{test_list}: test list not found")
    ann = read_annotations(annotations, fmt, annotation_size)
    present = _match_videos(ann, videos)
    options = record_options(flow, max_frames, short_side)
    index, count = shard
    keys = sorted(present)
    if not merge:
        mine = [k for i, k in enumerate(keys) if i % count == index - 1]
        todo = [(k, present[k]) for k in mine if load_record(out, k, options) is None]
        logger.info("%d videos in this run (shard %d/%d): %d already prepared, %d to do",
                    len(mine), index, count, len(mine) - len(todo), len(todo))
        if todo:
            counts = _check_videos(todo, ann, max_frames, workers)
            _run_videos(todo, counts, out, options, workers)
        if count > 1:
            logger.info("Shard %d/%d done. When every shard is done: the same command with "
                        "--merge instead of --shard writes the GT file.", index, count)
            return None
    splits = _splits(keys, ann, fmt, test_list, same_train_test)
    if not any(splits[1]):
        logger.warning("No test video: pass --test-list, --same-train-test, or set \"split\" "
                       "in the annotations")
    gt = build_gt(ann, present, out, options, splits)
    gt_path = os.path.join(out, f"{name}-GT.pkl")
    if _same_file_content(gt_path, pickle.dumps(gt, protocol=2)):
        logger.info("%s is up to date", gt_path)
    else:
        save_annotations(gt, gt_path)
    logger.info("%s: %d videos (%d train, %d test in split 1), %d frames, %d tubes", gt_path,
                len(gt["nframes"]), len(splits[0][0]), len(splits[1][0]),
                sum(gt["nframes"].values()),
                sum(len(t) for v in gt["gttubes"].values() for t in v.values()))
    root = os.path.abspath(os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets")))
    where = "it is" if os.path.dirname(os.path.abspath(out)) == root else "put it"
    logger.info("Registered as %s_train / %s_test when its folder is under $DETECTRON2_DATASETS "
                "(%s; %s there)", name, name, root, where)
    return gt_path


def _run_videos(todo: List[Tuple[str, str]], counts: Dict[str, int], out: str, options: Dict,
                workers: int) -> None:
    errors, seconds = [], []
    jobs = [(key, path, out, options) for key, path in todo]
    with _mapper(workers, len(jobs), ordered=False) as imap:
        # Counted in frames, a video's at a time: the rate and the time left are in frames.
        bar = tqdm.tqdm(total=sum(counts.values()), unit="frame",
                        desc=f"preparing {len(jobs)} videos ({options['flow']} flow)")
        for record in imap(_prepare_video, jobs):
            bar.update(counts[record["video"]])
            if "error" in record:
                errors.append(record["error"])
            else:
                seconds.append(sum(record["seconds"].values()))
                bar.set_postfix(last=f"{record['video']} {seconds[-1]:.0f}s")
        bar.close()
    if seconds:
        logger.info("Prepared %d videos, %.1f s per video on average", len(seconds),
                    float(np.mean(seconds)))
    if errors:
        logger.info("%d of the %d videos were prepared; once the videos below are fixed, the "
                    "same command prepares the rest", len(todo) - len(errors), len(todo))
        raise PrepareError(errors)


def _same_file_content(path: str, data: bytes) -> bool:
    """Whether ``path`` holds exactly ``data`` (a rerun then leaves the file untouched)."""
    if not os.path.isfile(path) or os.path.getsize(path) != len(data):
        return False
    with open(path, "rb") as f:
        return f.read() == data


def _parse_size(text: str) -> Tuple[int, int]:
    match = re.fullmatch(r"(\d+)x(\d+)", text.strip().lower())
    if not match or min(int(match.group(1)), int(match.group(2))) < 1:
        raise InputError(f"--annotation-size {text!r}: expected WIDTHxHEIGHT, e.g. 320x240")
    return int(match.group(1)), int(match.group(2))


def _parse_shard(text: str) -> Tuple[int, int]:
    match = re.fullmatch(r"(\d+)/(\d+)", text.strip())
    if not match or not 1 <= int(match.group(1)) <= int(match.group(2)):
        raise InputError(f"--shard {text!r}: expected I/N with 1 <= I <= N, e.g. 3/10")
    return int(match.group(1)), int(match.group(2))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pcsc_d2.data.prepare",
        description="Annotated videos -> a dataset in the field's layout (frames, flow, GT)",
    )
    parser.add_argument("--videos", required=True, help="folder of video files (searched "
                        "recursively)")
    parser.add_argument("--annotations", required=True, help="annotation file")
    parser.add_argument("--format", required=True, choices=FORMATS, help="annotation format")
    parser.add_argument("--out", required=True, help="dataset folder to write")
    parser.add_argument("--name", required=True, help="dataset name: NAME-GT.pkl, NAME_train")
    split = parser.add_mutually_exclusive_group()
    split.add_argument("--test-list", help="file naming the test videos, one per line")
    split.add_argument("--same-train-test", action="store_true",
                       help="every video in both splits (plumbing checks only)")
    parser.add_argument("--annotation-size", type=str, default=None,
                        help="WIDTHxHEIGHT of the frames the boxes were drawn on")
    parser.add_argument("--flow", default="tvl1", choices=["tvl1", "dis"])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--short-side", type=int, default=None,
                        help="resize frames to this short side (default: keep the video's size)")
    parser.add_argument("--max-frames", type=int, default=None,
                        help="keep the first N frames of each video (tests, quick looks)")
    run = parser.add_mutually_exclusive_group()
    run.add_argument("--shard", default="1/1", help="I/N: prepare every N-th video from the I-th")
    run.add_argument("--merge", action="store_true", help="write the GT file after all shards")
    return parser


def main(argv: Optional[List[str]] = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s] %(message)s")
    try:
        for flag, value in (("--max-frames", args.max_frames), ("--short-side", args.short_side),
                            ("--workers", args.workers)):
            if value is not None and value < 1:
                raise InputError(f"{flag} {value}: expected a positive number")
        prepare_dataset(
            args.videos, args.annotations, args.format, args.out, args.name,
            test_list=args.test_list, same_train_test=args.same_train_test,
            annotation_size=_parse_size(args.annotation_size) if args.annotation_size else None,
            flow=args.flow, workers=args.workers, max_frames=args.max_frames,
            short_side=args.short_side, shard=_parse_shard(args.shard), merge=args.merge,
        )
    except INPUT_ERRORS as e:
        lines = e.lines if isinstance(e, PrepareError) else [error_line(e)]
        for line in lines:
            print(f"error: {line}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
