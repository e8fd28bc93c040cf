"""A train/test split of a handful of real UCF-101-24 clips, cut in time.

With a few clips of different classes, no class has a test clip of its own, so each clip is cut:
frames 1..m (m = ``split_at`` x its length) train, the rest test. Tubes are cut with the clips, so
test parts start or end inside actions (trimmed) or hold background after them (untrimmed): both
what temporal refinement must keep and what it should cut. Used by tools/real_split_check.py and
tools/run_ablation.py (``--design real``).
"""
import logging
import os
from typing import Callable, Dict, List

import cv2

__all__ = ["NAME", "prepare_real_split", "write_split_parts"]

logger = logging.getLogger(__name__)
# Registered as ucf24_split_{train,test} from $DETECTRON2_DATASETS/ucf24_split.
NAME = "ucf24_split"


def write_split_parts(clips: str, out: str, split_at: float) -> str:
    """Cut every annotated clip of ``clips`` in two; write the parts as videos under
    ``out/videos`` and their tubes in the simple JSON format (pcsc_d2.data.annotation_formats),
    split "train" (first part) or "test" (second part).

    Args:
        clips: a folder with ``pyannot.pkl`` (UCF-101-24's annotations) and the clips, directly
            or under ``videos/``.
        out: the folder to write to.
        split_at: the fraction of each clip's frames that trains.

    Returns:
        the annotation file's path, ``out/annotations.json``.
    """
    from pcsc_d2.data.convert import UCF24_CLASSES, _read_road, road_to_annotations
    from pcsc_d2.data.video import count_frames, find_videos, iter_frames
    from pcsc_d2.utils.io import atomic_save_json

    videos_dir = os.path.join(clips, "videos") if os.path.isdir(os.path.join(clips, "videos")) \
        else clips
    road = _read_road(os.path.join(clips, "pyannot.pkl"))
    found = find_videos(videos_dir)
    keys = {str(k).split("/")[-1]: str(k) for k in road}
    road = {keys[stem]: road[keys[stem]] for stem in found if stem in keys}
    gt = road_to_annotations(road)  # 0-based inclusive corners on 320x240 frames
    entries: Dict[str, Dict] = {}
    os.makedirs(os.path.join(out, "videos"), exist_ok=True)
    for stem, paths in sorted(found.items()):
        if stem not in keys:
            continue
        key, path = keys[stem], paths[0]
        info = count_frames(path)
        cut = int(round(split_at * info.nframes))
        parts = {f"{stem}_a": (1, cut, "train"), f"{stem}_b": (cut + 1, info.nframes, "test")}
        writers = {}
        for name in parts:
            writers[name] = cv2.VideoWriter(
                os.path.join(out, "videos", name + ".avi"), cv2.VideoWriter_fourcc(*"MJPG"),
                info.fps, (info.width, info.height),
            )
        for i, rgb in enumerate(iter_frames(path), 1):
            name = f"{stem}_a" if i <= cut else f"{stem}_b"
            writers[name].write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        for w in writers.values():
            w.release()
        for name, (first, last, split) in parts.items():
            tubes = []
            for label, label_tubes in gt["gttubes"][key].items():
                for t in label_tubes:
                    rows = t[(t[:, 0] >= first) & (t[:, 0] <= last)].copy()
                    if len(rows):
                        rows[:, 0] -= first - 1
                        tubes.append({"label": UCF24_CLASSES[label], "boxes": rows.tolist()})
            entries[name] = {"split": split, "size": [320, 240], "tubes": tubes}
    path = os.path.join(out, "annotations.json")
    atomic_save_json({"labels": list(UCF24_CLASSES), "videos": entries}, path, indent=1)
    return path


def prepare_real_split(
    clips: str, out: str, datasets_root: str, split_at: float, python: str,
    run: Callable[[List[str]], None],
) -> str:
    """Write the split's parts into ``out`` (unless there) and prepare them as the dataset
    ``ucf24_split`` under ``datasets_root`` (unless there: ``python -m pcsc_d2.data.prepare``,
    DIS flow, run by ``run``). Returns the dataset's folder."""
    ann = os.path.join(out, "annotations.json")
    if not os.path.isfile(ann):
        if not os.path.isfile(os.path.join(clips, "pyannot.pkl")):
            raise FileNotFoundError(f"{clips}: no pyannot.pkl (the real clips are not here)")
        logger.info("writing the parts of the clips in %s into %s", clips, out)
        write_split_parts(clips, out, split_at)
    data = os.path.join(datasets_root, NAME)
    if not os.path.isfile(os.path.join(data, f"{NAME}-GT.pkl")):
        run([python, "-m", "pcsc_d2.data.prepare", "--videos", os.path.join(out, "videos"),
             "--annotations", ann, "--format", "json", "--out", data, "--name", NAME,
             "--flow", "dis"])
    return data
