"""Box-quality measurements on hand-made tubes: MABO per step and offsets against the motion."""
import numpy as np
import pytest

from pcsc_d2.evaluation.box_quality import mabo_by_step, motion_offsets
from pcsc_d2.evaluation.frame_ap import GroundTruth
from script_module import load_script


def _gt():
    # "Right": a 20x40 box moving right 2 px a frame over frames 1..10; "Still": a box at rest.
    right = np.array([[f, 10 + 2 * (f - 1), 5, 29 + 2 * (f - 1), 44] for f in range(1, 11)], float)
    still = np.array([[f, 100, 50, 119, 89] for f in range(1, 11)], float)
    ann = {"labels": ["Right", "Still"], "videos": ["v"],
           "gttubes": {"v": {0: [right], 1: [still]}}}
    return GroundTruth.from_annotations(ann), right, still


def test_offsets_along_and_across_the_motion():
    gt, right, still = _gt()
    finals = {}
    for f in range(1, 11):
        lagging = right[f - 1, 1:] + np.array([-3 - 1, 1, -3 + 1, 1])  # 3 px behind, 2 px wider
        finals[("v", f)] = np.stack([lagging, still[f - 1, 1:]])
    out = motion_offsets(gt, finals)
    assert out["Right"]["moving_fraction"] == 1.0
    assert out["Right"]["speed"] == pytest.approx(2.0)
    assert out["Right"]["along"] == pytest.approx(-3.0)  # behind the actor
    assert out["Right"]["across"] == pytest.approx(1.0)  # 1 px down: +90 degrees from "right"
    assert out["Right"]["size_along"] == pytest.approx(2.0)
    assert out["Right"]["size_across"] == pytest.approx(0.0)
    assert out["Still"]["moving_fraction"] == 0.0
    assert out["Still"]["iou_static"] == pytest.approx(1.0)
    assert np.isnan(out["Still"]["along"])


def test_mabo_by_step_per_class():
    gt, right, still = _gt()
    exact = {("v", f): np.stack([right[f - 1, 1:], still[f - 1, 1:]]) for f in range(1, 11)}
    # A box of half the width: IoU 10 / 20 = 0.5 for "Right"; nothing for "Still".
    half = {("v", f): (right[f - 1, 1:] + [0, 0, -10, 0])[None] for f in range(1, 11)}
    out = mabo_by_step(gt, {"exact": exact, "half": half})
    assert out["exact"]["mabo"] == pytest.approx(100.0)
    assert out["half"]["per_class"] == pytest.approx({"Right": 50.0, "Still": 0.0})
    assert out["half"]["mabo"] == pytest.approx(25.0)


def test_report_draws_one_panel_per_model(tmp_path):
    import os

    import matplotlib.image

    tool = load_script("tools/box_quality.py")
    gt, right, still = _gt()
    steps = {"rgb_s0": {("v", f): right[f - 1 : f, 1:] for f in range(1, 11)},
             "final": {("v", f): still[f - 1 : f, 1:] for f in range(1, 11)}}
    result = {"mabo": mabo_by_step(gt, steps), "motion": motion_offsets(gt, steps["final"])}
    text = tool.write_report(result, str(tmp_path / "one"), "key frame")
    assert "| final   |     50 |       0 |     100 |" in text  # Right missed, Still exact
    widths = []
    for name, overlays in (("one", []), ("two", [("clip", result)])):
        os.makedirs(tmp_path / name, exist_ok=True)
        tool.write_report(result, str(tmp_path / name), "key frame", overlays)
        widths.append(matplotlib.image.imread(str(tmp_path / name / "box_quality.png")).shape[1])
    assert widths[1] > 1.8 * widths[0]  # a second panel as wide as the first
