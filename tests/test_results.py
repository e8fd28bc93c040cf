"""Report helpers: metrics rows with and without TR, and the paper's ablation claims."""
import math

import pytest

from pcsc_d2.evaluation.results import (
    MAIN_METRICS,
    REPORT_METRICS,
    check_paper_claims,
    markdown_table,
    metrics_row,
)
from script_module import load_script


def _row(frame, video=0.0):
    row = {k: 0.0 for k in MAIN_METRICS}
    row.update({"frame_mAP@0.5": frame, "video_mAP@0.5": video})
    return row


def _ablation(stages, no_coop, tr_video=12.0):
    rows = {"rgb_only": _row(20.0), "flow_only": _row(22.0), "late_fusion": _row(25.0),
            "pcsc_tr": _row(stages[-1], tr_video)}
    for t, (a, b) in enumerate(zip(stages, no_coop)):
        rows[f"pcsc_stage{t}"] = _row(a, 10.0)
        rows[f"pcsc_no_feature_coop_stage{t}"] = _row(b, 10.0)
    return rows


def test_metrics_row_picks_the_tr_suffix_for_video_metrics_only():
    metrics = {"frame_mAP@0.5": 30.0, "video_mAP@0.5/noTR": 5.0, "video_mAP@0.5/TR": 9.0,
               "video_mAP@0.5": 9.0, "video_mAP@0.2": None}
    assert metrics_row(metrics)["video_mAP@0.5"] == 5.0
    tr = metrics_row(metrics, tr=True)
    assert tr["video_mAP@0.5"] == 9.0 and tr["frame_mAP@0.5"] == 30.0
    assert math.isnan(tr["video_mAP@0.2"]) and math.isnan(tr["video_mAP@0.75"])
    table = markdown_table([("PCSC", tr)])
    assert table.splitlines()[2].startswith("| PCSC | 30.0 | nan | 9.0 |")


def test_claims_hold_on_the_papers_pattern():
    # The paper's frame-mAP pattern (Table 5): 75.7, 76.1, 76.4, 76.6, 76.7 with feature
    # cooperation, lower without.
    rows = _ablation([75.7, 76.1, 76.4, 76.6, 76.7], [75.7, 72.9, 73.2, 73.6, 73.9])
    claims = check_paper_claims(rows)
    assert len(claims) == 6
    assert all(verdict == "holds" for _, verdict, _ in claims), claims
    assert claims[2][2] == "stages 0..4: 75.7, 76.1, 76.4, 76.6, 76.7"
    assert claims[3][2] == "gains: +0.4, +0.3, +0.2, +0.1"


def test_each_claim_fails_when_its_figures_say_so():
    rows = _ablation([30.0, 29.0, 31.0, 31.5, 28.0], [30.0, 29.5, 30.0, 32.0, 27.0], tr_video=8.0)
    rows["late_fusion"] = _row(21.0)  # below flow-only (22.0)
    verdicts = {claim.split(" (")[0]: v for claim, v, _ in check_paper_claims(rows)}
    assert verdicts == {
        "PCSC": "holds",  # 28.0 > 21.0
        "late fusion beats each single stream": "reversed",
        "more stages help": "reversed",  # 28.0 < 30.0
        "the gain of a stage shrinks as stages are added": "reversed",  # -1, +2, ...
        "feature cooperation helps at every stage 1..4": "reversed",  # t=1: 29.0 < 29.5
        "TR raises video_mAP@0.5": "reversed",  # 8.0 < 10.0
    }


def test_claims_over_seeds_hold_only_beyond_the_spread():
    # Three seeds: PCSC 56 +- 4 against late fusion 50 +- 1: the 6-point lead is above the
    # spread sqrt(16 + 1) = 4.1; stage gains within the spread do not decide the saturation.
    seeds = [_ablation([50.0 + d, 52.0 + d, 53.0 + d, 55.0 + d, 56.0 + d],
                       [48.0, 49.0, 49.0, 49.0, 49.0]) for d in (-4.0, 0.0, 4.0)]
    for rows, lf in zip(seeds, (49.0, 50.0, 51.0)):
        rows["late_fusion"] = _row(lf)
    per_model = {k: [r[k] for r in seeds] for k in seeds[0]}
    verdicts = {c.split(" (")[0]: v for c, v, _ in check_paper_claims(per_model)}
    assert verdicts["PCSC"] == "holds"
    assert verdicts["more stages help"] == "holds"  # +6 against a spread of 5.7
    assert verdicts["the gain of a stage shrinks as stages are added"] == "within spread"
    # The same means from one seed each: every difference decides.
    single = {k: v[1] for k, v in per_model.items()}
    assert dict((c.split(" (")[0], v) for c, v, _ in check_paper_claims(single))[
        "the gain of a stage shrinks as stages are added"] == "reversed"
    claims = check_paper_claims(per_model)
    assert claims[0][2] == "56.0 ± 4.0 vs 50.0 ± 1.0"


def test_has_metrics_looks_below_the_folder(tmp_path):
    from pcsc_d2.evaluation.results import find_metrics, has_metrics

    assert not has_metrics(str(tmp_path / "missing"))
    nested = tmp_path / "eval" / "inference" / "synthetic_test"
    nested.mkdir(parents=True)
    assert not has_metrics(str(tmp_path / "eval"))
    (nested / "pcsc_metrics.json").write_text('{"frame_mAP@0.5": 12.5}')
    assert has_metrics(str(tmp_path / "eval"))
    assert find_metrics(str(tmp_path / "eval")) == {"frame_mAP@0.5": 12.5}


def test_seed_statistics_and_spread_verdicts():
    from pcsc_d2.evaluation.results import compare_with_spread, seed_statistics

    stats = seed_statistics([{"m": 50.0}, {"m": 54.0}, {"m": 58.0}])["m"]
    assert stats["mean"] == 54.0 and stats["std"] == pytest.approx(4.0)
    assert (stats["min"], stats["max"], stats["n"]) == (50.0, 58.0, 3)
    tight = seed_statistics([{"m": 44.0}, {"m": 45.0}, {"m": 46.0}])["m"]  # std 1
    # 54 - 45 = 9 > sqrt(4^2 + 1^2) = 4.12: holds; 54 vs 52 is within the spread.
    verdict, diff, spread = compare_with_spread(stats, tight)
    assert verdict == "holds" and diff == pytest.approx(9.0)
    assert spread == pytest.approx(17 ** 0.5)
    close = seed_statistics([{"m": 51.0}, {"m": 52.0}, {"m": 53.0}])["m"]
    assert compare_with_spread(stats, close)[0] == "within spread"
    assert compare_with_spread(tight, stats)[0] == "reversed"
    one = seed_statistics([{"m": 3.0}])["m"]
    assert one["std"] == 0.0


def test_metrics_row_picks_a_trimming_rule():
    m = {"frame_mAP@0.5": 50.0, "video_mAP@0.5/noTR": 10.0, "video_mAP@0.5/TR": 30.0,
         "video_mAP@0.5/TR-ends": 30.0, "video_mAP@0.5/TR-split": 25.0}
    keys = ["frame_mAP@0.5", "video_mAP@0.5"]
    assert metrics_row(m, keys=keys) == {"frame_mAP@0.5": 50.0, "video_mAP@0.5": 10.0}
    assert metrics_row(m, tr=True, keys=keys)["video_mAP@0.5"] == 30.0
    assert metrics_row(m, tr="split", keys=keys)["video_mAP@0.5"] == 25.0
    assert metrics_row(m, tr="ends", keys=keys)["frame_mAP@0.5"] == 50.0


def test_seed_study_summary_by_hand():
    study = load_script("tools/seed_study.py")

    def row(v02, v05, v075):
        full = dict.fromkeys(REPORT_METRICS, 0.0)
        full.update({"video_mAP@0.2": v02, "video_mAP@0.5": v05, "video_mAP@0.75": v075})
        return full

    per_seed = {
        1: {"PCSC": row(60, 10, 0), "PCSC + TR": row(70, 40, 2),
            "PCSC + TR (ends)": row(70, 40, 2), "PCSC + TR (split)": row(68, 38, 2)},
        2: {"PCSC": row(62, 14, 0), "PCSC + TR": row(66, 50, 4),
            "PCSC + TR (ends)": row(66, 50, 4), "PCSC + TR (split)": row(66, 44, 0)},
    }
    summary = study.summarize(per_seed)
    assert summary["TR gain"]["video_mAP@0.5"] == {1: 30, 2: 36}
    assert summary["TR gain"]["video_mAP@0.2"] == {1: 10, 2: 4}
    assert summary["PCSC + TR (split)"]["video_mAP@0.5"]["mean"] == 41
    # Sample standard deviation of 40 and 50: sqrt(50).
    assert abs(summary["PCSC + TR"]["video_mAP@0.5"]["std"] - 50 ** 0.5) < 1e-9
    assert summary["variant difference"] == {}

    # A test-time variant of the same models: its rows, and its difference per seed.
    per_seed[1]["PCSC + TR [vote]"] = row(72, 45, 6)
    per_seed[2]["PCSC + TR [vote]"] = row(66, 48, 4)
    summary = study.summarize(per_seed)
    assert summary["PCSC + TR [vote]"]["video_mAP@0.5"]["mean"] == 46.5
    assert summary["variant difference"]["PCSC + TR [vote]"]["video_mAP@0.5"] == {1: 5, 2: -2}
    assert summary["variant difference"]["PCSC + TR [vote]"]["video_mAP@0.75"] == {1: 4, 2: 0}
    assert "video_mAP@0.2 +2.0, +0.0; video_mAP@0.5 +5.0, -2.0" in study.report(per_seed, summary)
