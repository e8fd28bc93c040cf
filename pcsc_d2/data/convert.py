"""Convert ground-truth files: the field's pickle <-> JSON, and ROAD's pyannot.pkl -> this schema.

    python -m pcsc_d2.data.convert to-json UCF101v2-GT.pkl UCF101v2-GT.json
    python -m pcsc_d2.data.convert to-pkl  UCF101v2-GT.json UCF101v2-GT.pkl
    python -m pcsc_d2.data.convert road pyannot.pkl road-GT.pkl --labels labels.txt \
        [--resolution 240x320] [--splits splits.json]

ROAD's ``pyannot.pkl`` is {video: {"label", "numf", "annotations": [{"label", "sf", "ef",
"boxes"}]}} with 0-based start frame ``sf``, exclusive end ``ef`` and boxes as (x, y, w, h). It
becomes tubes of frames sf + 1 .. ef (1-based) with inclusive corners x2 = x + w - 1,
y2 = y + h - 1, clipped to the resolution. ROAD has no class names, resolution or splits: they
come from --labels (one name per line; default "class_<i>"), --resolution (default 240x320) and
--splits (JSON {"train_videos": [[...]], "test_videos": [[...]]}; default: every video in one
test split). Every output is validated before it is written (atomically).
"""
import argparse
import json
import logging
import os
from typing import Dict, List, Optional, Tuple

import numpy as np

from .annotations import SafeUnpickler, load_annotations, save_annotations

__all__ = ["road_to_annotations"]

logger = logging.getLogger(__name__)


def road_to_annotations(
    road: Dict,
    labels: Optional[List[str]] = None,
    resolution: Tuple[int, int] = (240, 320),
    splits: Optional[Dict] = None,
    source: str = "<pyannot>",
) -> Dict:
    """Convert a ROAD ``pyannot`` dict to the field's GT schema (see the module docstring)."""
    height, width = resolution
    gttubes, nframes = {}, {}
    max_label = -1
    for video, entry in road.items():
        try:
            numf = int(entry["numf"])
            annotations = entry["annotations"]
        except (KeyError, TypeError) as e:
            raise ValueError(f"{source}: video {video}: missing 'numf' or 'annotations'") from e
        nframes[video] = numf
        per_label: Dict[int, list] = {}
        for i, ann in enumerate(annotations):
            label, sf, ef = int(ann["label"]), int(ann["sf"]), int(ann["ef"])
            boxes = np.asarray(ann["boxes"], dtype=np.float32).reshape(-1, 4)
            if len(boxes) != ef - sf:
                raise ValueError(
                    f"{source}: video {video}, annotation {i}: {len(boxes)} boxes for frames "
                    f"sf={sf}..ef={ef} (exclusive), expected {ef - sf}"
                )
            x1, y1 = boxes[:, 0], boxes[:, 1]
            x2, y2 = x1 + boxes[:, 2] - 1, y1 + boxes[:, 3] - 1
            corners = np.stack([x1, y1, x2, y2], 1)
            corners = np.clip(corners, 0, [width - 1, height - 1, width - 1, height - 1])
            frames = np.arange(sf + 1, ef + 1, dtype=np.float32)[:, None]
            per_label.setdefault(label, []).append(np.concatenate([frames, corners], 1))
            max_label = max(max_label, label)
        gttubes[video] = per_label
    if labels is None:
        labels = [f"class_{i}" for i in range(max_label + 1)]
    videos = sorted(road)
    splits = splits or {"train_videos": [[]], "test_videos": [videos]}
    return {
        "labels": list(labels),
        "gttubes": gttubes,
        "nframes": nframes,
        "resolution": {v: (height, width) for v in videos},
        "train_videos": splits["train_videos"],
        "test_videos": splits["test_videos"],
    }


def _read_road(path: str) -> Dict:
    with open(path, "rb") as f:
        return SafeUnpickler(f, filename=path, encoding="latin1").load()


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description="Convert action-detection GT files")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_ in (("to-json", "field pickle -> JSON"), ("to-pkl", "JSON -> field pickle")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("input")
        p.add_argument("output")
    road = sub.add_parser("road", help="ROAD pyannot.pkl -> field schema (.pkl or .json)")
    road.add_argument("input")
    road.add_argument("output")
    road.add_argument("--labels", help="text file, one class name per line")
    road.add_argument("--resolution", default="240x320", help="HxW of every video")
    road.add_argument("--splits", help='JSON {"train_videos": [[...]], "test_videos": [[...]]}')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s] %(message)s")
    try:
        if args.command == "road":
            labels = None
            if args.labels:
                with open(args.labels) as f:
                    labels = [line.strip() for line in f if line.strip()]
            splits = None
            if args.splits:
                with open(args.splits) as f:
                    splits = json.load(f)
            h, w = (int(x) for x in args.resolution.lower().split("x"))
            gt = road_to_annotations(_read_road(args.input), labels, (h, w), splits, args.input)
        else:
            gt = load_annotations(args.input)
        save_annotations(gt, args.output)
    except (OSError, ValueError) as e:
        parser.exit(2, f"error: {e}\n")
    logger.info("Wrote %s (%d videos)", os.path.abspath(args.output), len(gt["nframes"]))


if __name__ == "__main__":
    main()
