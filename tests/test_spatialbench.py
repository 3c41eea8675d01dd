"""SpatialRGPT-Bench: reading records into Samples and scoring answers without a judge model.

The fixture is written here from the published schema (id, image_info, text_q, conversations, bbox,
rle, qa_info {type, category}); the images are never opened.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from smolrgpt.data.sample import Region
from smolrgpt.data.spatialbench import read_spatialbench
from smolrgpt.errors import SampleError
from smolrgpt.evaluation.score import SubmissionError
from smolrgpt.evaluation.spatialbench import (
    bench_column,
    clock_hour,
    evaluate_answer,
    format_table,
    hour_error,
    score_spatialbench,
)

RLE = {"size": [480, 640], "counts": "PQ81c6;N2N1O1N2O0O2M3L4O1N1O2N2M2OeYa0"}  # reader keeps it undecoded


def _record(rid, qa_type, category, question, answer, n_regions=2, rle=True, text_q=None):
    boxes = [[10.0 + 50 * k, 20.0, 40.0 + 50 * k, 90.5] for k in range(n_regions)]
    record = {
        "id": rid,
        "image_info": {"file_path": f"openimages/{rid}.jpg", "height": 480, "width": 640, "dataset": "openimages"},
        "text_q": text_q or question.replace("<mask>", "Region [0]", 1).replace("<mask>", "Region [1]", 1),
        "conversations": [{"from": "human", "value": "<image>\n" + question}, {"from": "gpt", "value": answer}],
        "bbox": boxes,
        "qa_info": {"type": qa_type, "category": category},
    }
    if rle:
        record["rle"] = [dict(RLE) for _ in range(n_regions)]
    return record


# (record, prediction); expected outcomes are in the tests below
CASES = [
    (_record("q01", "qualitative", "below_predicate", "Is <mask> below <mask>?",
             "Yes, Region [0] is below Region [1]."), "Region [0] is under Region [1]."),
    (_record("q02", "qualitative", "below_choice", "Which is lower, <mask> or <mask>?",
             "Region [1] is lower."), "Region [0] is lower."),
    (_record("q03", "qualitative", "left_predicate", "Is <mask> <depth> to the left of <mask> <depth>?",
             "No, Region [0] is to the right of Region [1]."), "No."),
    (_record("q04", "qualitative", "big_predicate", "Is <mask> bigger than <mask>?",
             "Yes, Region [0] is bigger."), "Region [0] is smaller than Region [1]."),
    (_record("q05", "qualitative", "tall_choice", "Who is taller, <mask> or <mask>?",
             "Region [0] is taller."), "Region [1] is shorter."),
    (_record("q06", "qualitative", "wide_predicate", "Is <mask> wider than <mask>?",
             "No, Region [0] is thinner than Region [1]."), "Yes, it is wider."),
    (_record("q07", "qualitative", "behind_predicate", "Is <mask> behind <mask>?",
             "Yes, Region [0] is behind Region [1]."), "Region [1] is in front of Region [0]."),
    (_record("q08", "qualitative", "front_predicate", "Is <mask> in front of <mask>?",
             "Correct, Region [0] is in front of Region [1]."), "I cannot see them."),
    (_record("q09", "quantitative", "direct_distance", "What is the distance between <mask> and <mask>?",
             "Region [0] is 2 meters away from Region [1].", rle=False), "About 250 cm."),
    (_record("q10", "quantitative", "horizontal_distance", "How far apart are <mask> and <mask> horizontally?",
             "They are 1.5 meters apart horizontally."), "3 feet"),
    (_record("q11", "quantitative", "vertical_distance", "How far apart are <mask> and <mask> vertically?",
             "0.8 m"), "no idea"),
    (_record("q12", "quantitative", "width_data", "How wide is <mask>?", "It is 6.91 feet wide.", 1), "2 meters"),
    (_record("q13", "quantitative", "height_data", "How tall is <mask>?",
             "The height of Region [0] is 1.2 meters.", 1), "40 inches"),
    (_record("q14", "quantitative", "direction", "If you are at <mask>, where will you find <mask>?",
             "Region [1] is at 12 o'clock from Region [0]."), "Roughly at one o'clock."),
    (_record("q15", "quantitative", "direction", "If you are at <mask>, where will you find <mask>?",
             "Region [1] is at 3 o'clock from Region [0]."), "at 5 o'clock"),
    (_record("q16", "qualitative", "tall_predicate", "Is <mask> taller than <mask>?", "Hmm."), "Yes."),
]


@pytest.fixture()
def bench_file(tmp_path) -> Path:
    path = tmp_path / "SpatialRGPT-Bench_v1.json"
    path.write_text(json.dumps([record for record, _ in CASES]))
    return path


PREDICTIONS = {record["id"]: prediction for record, prediction in CASES}


# --------------------------------------------------------------------------- reader
def test_reader_builds_samples(bench_file, tmp_path):
    samples = read_spatialbench(bench_file, images_root=tmp_path / "images")
    assert [s.id for s in samples] == [f"q{k:02d}" for k in range(1, 17)]
    left = samples[2]
    assert left.image == tmp_path / "images" / "openimages" / "q03.jpg"
    assert left.turns == [("<image>\nIs <mask> to the left of <mask>?",  # "<mask> <depth>" folded
                           "No, Region [0] is to the right of Region [1].")]
    assert left.regions == [Region("rle", RLE), Region("rle", RLE)]
    assert left.depth is None and left.depth_polarity == "near_bright" and left.category is None
    assert left.meta["qa_info"] == {"type": "qualitative", "category": "left_predicate"}
    assert left.meta["gt_answer"] == "No, Region [0] is to the right of Region [1]."
    assert left.meta["text_q"] == "Is <mask> <depth> to the left of <mask> <depth>?".replace(
        "<mask>", "Region [0]", 1).replace("<mask>", "Region [1]", 1)
    assert left.source == f"{bench_file}#record 2"
    boxes_only = samples[8]  # q09 has no rle: boxes
    assert boxes_only.regions == [Region("box", [10.0, 20.0, 40.0, 90.5]), Region("box", [60.0, 20.0, 90.0, 90.5])]


def test_reader_region_form_and_depths_root(bench_file, tmp_path):
    (sample, *_) = read_spatialbench(bench_file, images_root="imgs", depths_root=tmp_path / "depth",
                                     region_form="box")
    assert sample.regions[0] == Region("box", [10.0, 20.0, 40.0, 90.5])
    assert sample.depth == tmp_path / "depth" / "openimages" / "q01.png"
    with pytest.raises(SampleError, match=r"'q09' in .*#record 8: region_form='rle' but the record has no 'rle'"):
        read_spatialbench(bench_file, images_root="imgs", region_form="rle")


@pytest.mark.parametrize("change, message", [
    (lambda r: r["conversations"][0].update(value="Is <mask> left?"), "the question has 1 <mask> tags but the record has 2 regions"),
    (lambda r: r.pop("qa_info"), "'qa_info' must be an object with string 'type' and 'category'"),
    (lambda r: r.update(image_info={"height": 3}), "'image_info' must be an object with a string 'file_path'"),
    (lambda r: (r.pop("rle"), r.update(bbox=[[1, 2, 3], [1, 2, 3, 4]])), r"bbox\[0\] must be \[x1, y1, x2, y2\]"),
])
def test_reader_errors_name_record_and_file(tmp_path, change, message):
    record = _record("bad", "qualitative", "left_predicate", "Is <mask> left of <mask>?", "Yes.")
    change(record)
    path = tmp_path / "bench.json"
    path.write_text(json.dumps([record]))
    with pytest.raises(SampleError, match=f"sample 'bad' in {path}#record 0: {message}"):
        read_spatialbench(path, images_root=tmp_path)


# --------------------------------------------------------------------------- answer matching
def test_each_case_outcome():
    expected = {  # id: (column, gt, pred, success)
        "q01": ("below/above", "below", "below", True),
        "q02": ("below/above", "above", "below", False),
        "q03": ("left/right", "right", "right", True),
        "q04": ("big/small", "big", "small", False),
        "q05": ("tall/short", "tall", "tall", True),  # "Region [1] is shorter" -> region 0 is the tall one
        "q06": ("wide/thin", "thin", "wide", False),
        "q07": ("behind/front", "behind", "behind", True),
        "q08": ("behind/front", "front", None, False),
        "q09": ("direct distance", 2.0, 2.5, True),  # exactly +25%: inclusive
        "q10": ("horizontal distance", 1.5, 0.9144, False),
        "q11": ("vertical distance", 0.8, None, False),
        "q12": ("width", 2.106168, 2.0, True),
        "q13": ("height", 1.2, 1.016, True),
        "q14": ("direction", 12, 1, True),  # 12 and 1 are adjacent
        "q15": ("direction", 3, 5, False),
    }
    for record, prediction in CASES:
        qa = record["qa_info"]
        result = evaluate_answer(record["id"], record["conversations"][0]["value"],
                                 record["conversations"][1]["value"], prediction, qa["type"], qa["category"])
        if record["id"] == "q16":
            assert result is None  # the ground truth states no relation
            continue
        column, gt, pred, success = expected[record["id"]]
        assert (result.column, result.success) == (column, success), record["id"]
        assert result.gt == pytest.approx(gt) if isinstance(gt, float) else result.gt == gt, record["id"]
        assert result.pred == pytest.approx(pred) if isinstance(pred, float) else result.pred == pred, record["id"]


@pytest.mark.parametrize("qa_type, category, column", [
    ("quantitative", "direct_distance", "direct distance"), ("quantitative", "direction", "direction"),
    ("quantitative", "width_data", "width"), ("qualitative", "above_predicate", "below/above"),
    ("qualitative", "small_choice", "big/small"), ("qualitative", "front_choice", "behind/front"),
])
def test_bench_column(qa_type, category, column):
    assert bench_column(qa_type, category) == column


def test_unknown_bench_category_is_an_error():
    with pytest.raises(SubmissionError, match="unknown SpatialRGPT-Bench category 'color_choice'"):
        bench_column("qualitative", "color_choice")


@pytest.mark.parametrize("text, hour", [("at 10 o'clock", 10), ("Roughly at ten o'clock.", 10), ("12 oclock", 12),
                                        ("at 0 o'clock", 12), ("at 13 o'clock", None), ("to the left", None)])
def test_clock_hour(text, hour):
    assert clock_hour(text) == hour


def test_hour_error_is_circular():
    assert [hour_error(12, 1), hour_error(1, 12), hour_error(11, 2), hour_error(3, 9), hour_error(6, 6)] == [1, 1, 3, 6, 0]


# --------------------------------------------------------------------------- report and table
def test_report_and_table1_layout(bench_file, tmp_path):
    samples = read_spatialbench(bench_file, images_root=tmp_path)
    report = score_spatialbench(samples, PREDICTIONS)
    assert {c: v["accuracy"] for c, v in report.qualitative.items()} == {
        "below/above": 50.0, "left/right": 100.0, "big/small": 0.0, "tall/short": 100.0, "wide/thin": 0.0,
        "behind/front": 50.0}
    assert report.qualitative_average == pytest.approx(50.0)
    assert {c: v["success_rate"] for c, v in report.quantitative.items()} == {
        "direct distance": 100.0, "horizontal distance": 0.0, "vertical distance": 0.0, "width": 100.0,
        "height": 100.0, "direction": 50.0}
    assert report.quantitative["direct distance"]["abs_rel"] == pytest.approx(0.25)
    assert report.quantitative["horizontal distance"]["abs_rel"] == pytest.approx(0.3904)
    assert report.quantitative["vertical distance"]["abs_rel"] is None  # no readable prediction
    assert report.unreadable_gt == ["q16"] and report.missing == []

    table = format_table(report).splitlines()
    assert "| Below/Above | Left/Right | Big/Small | Tall/Short | Wide/Thin | Behind/Front | Avg |" in table
    assert "| 50.00 | 100.00 | 0.00 | 100.00 | 0.00 | 50.00 | 50.00 |" in table
    assert "| | Direct Dist. | Horizontal Dist. | Vertical Dist. | Width | Height | Direction |" in table
    assert "| Success rate (%) ↑ | 100.00 | 0.00 | 0.00 | 100.00 | 100.00 | 50.00 |" in table
    assert "| Abs. rel. error ↓ | 0.25 | 0.39 | - | 0.05 | 0.15 | - |" in table
    assert "ground-truth answers that could not be read (left out): 1" in table

    raw = json.loads(bench_file.read_text())  # raw records give the same report as Samples
    assert score_spatialbench(raw, PREDICTIONS).to_dict() == report.to_dict()


def test_missing_predictions_are_an_error_unless_partial(bench_file, tmp_path):
    samples = read_spatialbench(bench_file, images_root=tmp_path)
    some = {k: PREDICTIONS[k] for k in ("q01", "q09")}
    with pytest.raises(SubmissionError, match=r"14 benchmark id\(s\) have no prediction \('q02', 'q03',"):
        score_spatialbench(samples, some)
    report = score_spatialbench(samples, some, partial=True)
    assert report.qualitative["below/above"] == {"n": 1, "correct": 1, "accuracy": 100.0}
    assert report.qualitative["left/right"]["accuracy"] is None
    assert len(report.missing) == 14
    assert "records without a prediction (left out, partial scoring): 14" in format_table(report)
