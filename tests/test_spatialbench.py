"""SpatialRGPT-Bench: the reader, every template answer read, and `smolrgpt score --bench` / `eval` on a file
laid out as the real SpatialRGPT-Bench_v1.json (tests/spatialbench_fixture.py writes it from the producer's
template phrasings; the expected readings there are worked out from the templates, not by the scorer)."""
from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from smolrgpt.cli import main
from smolrgpt.data import detect_format
from smolrgpt.data.sample import Region
from smolrgpt.data.spatialbench import read_spatialbench
from smolrgpt.errors import SampleError
from smolrgpt.evaluation.score import SubmissionError
from smolrgpt.evaluation.spatialbench import (
    COLUMNS,
    bench_column,
    clock_hour,
    evaluate_answer,
    format_table,
    hour_error,
    read_length,
    score_spatialbench,
)

from spatialbench_fixture import OPPOSITE, OUT as BENCH, build, render

RECORDS, EXPECTED = build()
QUALITATIVE_CATEGORIES = sorted(
    "above_choice above_predicate behind_predicate below_choice below_predicate big_predicate front_predicate "
    "left_choice left_predicate right_choice right_predicate short_choice short_predicate small_predicate "
    "tall_choice tall_predicate thin_predicate wide_predicate".split())
QUANTITATIVE_CATEGORIES = sorted("direction distance_data height_data horizontal_distance_data "
                                 "vertical_distance_data width_data".split())
COUNTS = {"Below/Above": 24, "Left/Right": 24, "Big/Small": 12, "Tall/Short": 24, "Wide/Thin": 12,
          "Behind/Front": 24, "Direct distance": 16, "Horizontal distance": 20, "Vertical distance": 20,
          "Width": 10, "Height": 10, "Direction": 8}


def _answer(record) -> str:
    return record["conversations"][1]["value"]


def _write_predictions(path: Path, answers: dict[str, str]) -> Path:
    path.write_text(json.dumps([{"id": i, "answer": a} for i, a in answers.items()]))
    return path


def _score_json(capsys, *args) -> dict:
    assert main(["score", "--bench", str(BENCH), *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _error(capsys, *args) -> str:
    assert main(["score", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


# --------------------------------------------------------------------------- the fixture
def test_fixture_file_is_what_the_producer_script_writes():
    assert BENCH.read_text() == render()
    assert detect_format(BENCH) == "spatialbench"
    keys = {"id", "image_info", "qa_info", "conversations", "text_q", "bbox", "rle", "file_path"}
    assert all(set(r) == keys and set(r["qa_info"]) == {"type", "category", "class"} for r in RECORDS)
    by_type = {t: sorted({r["qa_info"]["category"] for r in RECORDS if r["qa_info"]["type"] == t})
               for t in ("qualitative", "quantitative")}
    assert by_type == {"qualitative": QUALITATIVE_CATEGORIES, "quantitative": QUANTITATIVE_CATEGORIES}
    answers = " ".join(_answer(r) for r in RECORDS)
    for unit in ("centimeters", "inches", "meters", "feet", "o'clock"):
        assert unit in answers


# --------------------------------------------------------------------------- reader
def test_reader_builds_samples(tmp_path):
    samples = read_spatialbench(BENCH, images_root=tmp_path / "images")
    assert [s.id for s in samples] == [r["id"] for r in RECORDS]
    first = samples[0]
    assert first.image == tmp_path / "images" / "omni3d" / "images" / "000000.jpg"
    assert first.turns == [("<image>\nIs <mask> to the left of <mask> from the viewer's perspective?",
                            "Yes, Region [0] is to the left of Region [1].")]
    assert first.regions == [Region("rle", r) for r in RECORDS[0]["rle"]]
    assert first.depth is None and first.depth_polarity == "near_bright" and first.category is None
    assert first.meta["qa_info"] == {"type": "qualitative", "category": "left_predicate", "class": ["chair", "table"]}
    assert first.meta["text_q"] == "Is Region [0] to the left of Region [1] from the viewer's perspective?"
    assert first.source == f"{BENCH}#record 0"
    width = next(s for s in samples if s.meta["qa_info"]["category"] == "width_data")
    assert len(width.regions) == 1 and width.question.count("<mask>") == 1


def test_reader_region_form_and_depths_root(tmp_path):
    sample = read_spatialbench(BENCH, images_root="imgs", depths_root=tmp_path / "depth", region_form="box")[0]
    assert sample.regions == [Region("box", [12.0, 40.5, 80.0, 210.0]), Region("box", [102.0, 40.5, 170.0, 210.0])]
    assert sample.depth == tmp_path / "depth" / "omni3d" / "images" / "000000.png"
    record = dict(RECORDS[0])
    record.pop("rle")
    path = tmp_path / "bench.json"
    path.write_text(json.dumps([record]))
    with pytest.raises(SampleError, match=r"'0000_left_predicate' in .*#record 0: region_form='rle' but the record "
                                          r"has no 'rle'"):
        read_spatialbench(path, images_root="imgs", region_form="rle")


@pytest.mark.parametrize("change, message", [
    (lambda r: r["conversations"][0].update(value="Is <mask> left?"), "the question has 1 <mask> tags but the record has 2 regions"),
    (lambda r: r.pop("qa_info"), "'qa_info' must be an object with string 'type' and 'category'"),
    (lambda r: r.update(image_info={"height": 3}), "'image_info' must be an object with a string 'file_path'"),
    (lambda r: (r.pop("rle"), r.update(bbox=[[1, 2, 3], [1, 2, 3, 4]])), r"bbox\[0\] must be \[x1, y1, x2, y2\]"),
])
def test_reader_errors_name_record_and_file(tmp_path, change, message):
    record = json.loads(json.dumps(RECORDS[0]))
    change(record)
    path = tmp_path / "bench.json"
    path.write_text(json.dumps([record]))
    with pytest.raises(SampleError, match=f"sample '0000_left_predicate' in {path}#record 0: {message}"):
        read_spatialbench(path, images_root=tmp_path)


# --------------------------------------------------------------------------- every template answer
@pytest.mark.parametrize("record", RECORDS, ids=[r["id"] for r in RECORDS])
def test_every_template_answer_reads_as_what_it_says(record):
    qa = record["qa_info"]
    result = evaluate_answer(record["id"], record["conversations"][0]["value"], _answer(record), _answer(record),
                             qa["type"], qa["category"])
    assert result is not None, "ground truth unreadable"
    expected = EXPECTED[record["id"]]
    if qa["category"] == "direction":
        assert result.gt == int(expected)
    elif qa["type"] == "quantitative":
        assert read_length(_answer(record)) == Decimal(expected)  # exact: value as written x unit factor
    else:
        assert result.gt == expected
    assert result.success and result.pred == result.gt


def test_ground_truth_as_predictions_scores_100_in_every_column(tmp_path, capsys):
    pred = _write_predictions(tmp_path / "gt_as_pred.json", {r["id"]: _answer(r) for r in RECORDS})
    data = _score_json(capsys, "--pred", str(pred))
    assert list(data["columns"]) == list(COLUMNS) == list(COUNTS)
    assert {c: (v["n"], v["success"]) for c, v in data["columns"].items()} == {c: (n, 100.0) for c, n in COUNTS.items()}
    assert all(v["abs_rel"] == 0.0 for c, v in data["columns"].items() if "abs_rel" in v)
    assert data["unreadable_ground_truth"] == 0 and data["unreadable_predictions"] == 0
    assert data["qualitative_average"] == 100.0 and data["quantitative_average"] == 100.0 and data["rule"] == "official"


def _wrong(record) -> str:
    """An answer that states the opposite: another record's answer with the other relation, twice the
    length, or three hours off."""
    qa = record["qa_info"]
    if qa["type"] == "qualitative":
        return next(_answer(r) for r in RECORDS if r["qa_info"]["category"] == qa["category"]
                    and EXPECTED[r["id"]] == OPPOSITE[EXPECTED[record["id"]]])
    if qa["category"] == "direction":
        return f"Region [1] is roughly at {(int(EXPECTED[record['id']]) + 2) % 12 + 1} o'clock from Region [0]."
    return f"It is {Decimal(EXPECTED[record['id']]) * 2} meters."


def test_wrong_answers_score_0_in_every_column(tmp_path, capsys):
    pred = _write_predictions(tmp_path / "wrong.json", {r["id"]: _wrong(r) for r in RECORDS})
    data = _score_json(capsys, "--pred", str(pred))
    assert {c: (v["n"], v["success"]) for c, v in data["columns"].items()} == {c: (n, 0.0) for c, n in COUNTS.items()}
    assert all(v["abs_rel"] == pytest.approx(1.0) for v in data["columns"].values() if "abs_rel" in v)
    assert data["unreadable_predictions"] == 0


# --------------------------------------------------------------------------- free-form predictions
@pytest.mark.parametrize("text, metres", [
    ("2 metres", "2"), ("2 meters", "2"), ("It is 2 m.", "2"), ("150 centimetres", "1.50"), ("150 cm", "1.50"),
    ("5 feet 3 inches", "1.6002"), ("63 in", "1.6002"), ("63 inches", "1.6002"), ("5 ft", "1.5240"),
    ("1 foot", "0.3048"), ("about 1 m 20 cm", "1.20"), ("two meters", "2"), ("30 in wide", "0.7620"),
])
def test_prediction_lengths_in_any_unit(text, metres):
    assert read_length(text) == Decimal(metres)


@pytest.mark.parametrize("text", ["300 pixels", "Region [0] is 300 px wide.", "no idea", ""])
def test_pixel_counts_and_unstated_lengths_are_unreadable(text):
    assert read_length(text) is None


def _one(category: str, k: int = 0) -> dict:
    return [r for r in RECORDS if r["qa_info"]["category"] == category][k]


@pytest.mark.parametrize("category, k, prediction, success, pred", [
    ("height_data", 0, "300 pixels", False, None),  # a pixel count is not 300 m
    ("distance_data", 0, "Region [0] is 0.4 metres from Region [1].", True, 0.4),  # gt "37.0 centimeters"
    ("left_predicate", 0, "No.", False, "right"),
    ("left_predicate", 0, "Region [1] is on the right of Region [0].", True, "left"),
    ("behind_predicate", 0, "Region [0] is closer to the camera than Region [1].", False, "front"),
    ("short_choice", 1, "Region [1].", True, "tall"),  # gt "Region [1] is shorter."
    ("tall_choice", 0, "Hmm.", False, None),
    ("direction", 0, "At around one o'clock.", True, 1),  # gt 12 o'clock: 12 and 1 are adjacent
    ("direction", 2, "nine o'clock", False, 9),  # gt 3 o'clock
])
def test_free_form_prediction_outcomes(category, k, prediction, success, pred):
    record = _one(category, k)
    qa = record["qa_info"]
    result = evaluate_answer(record["id"], record["conversations"][0]["value"], _answer(record), prediction,
                             qa["type"], qa["category"])
    assert result.success is success
    assert result.pred == (pytest.approx(pred) if isinstance(pred, float) else pred)


def test_ground_truth_that_states_nothing_is_left_out():
    result = evaluate_answer("x", "Is <mask> taller than <mask>?", "Hmm.", "Yes.", "qualitative", "tall_predicate")
    assert result is None
    overlap = "Region [0] and Region [1] overlap, so it's hard to tell how far apart they are vertically."
    assert evaluate_answer("y", "q", overlap, "1 m", "quantitative", "vertical_distance_data") is None
    supported = "Region [1] directly supports Region [0], with no vertical distance between them."
    assert read_length(supported) == 0


def test_bench_rule_official_and_exact_decimal_differ_on_the_bound():
    # gt 10.0 cm; 7.5 cm is 0.75 * gt as written, but 0.75 * 0.1 = 0.07500000000000001 > 0.075 in floats
    args = ("x", "How tall is <mask>?", "It is 10.0 centimeters.", "7.5 cm", "quantitative", "height_data")
    assert not (0.075 >= 0.75 * 0.1)
    assert evaluate_answer(*args).success is False
    assert evaluate_answer(*args, rule="exact-decimal").success is True


# --------------------------------------------------------------------------- columns, table, errors
@pytest.mark.parametrize("category", QUALITATIVE_CATEGORIES + QUANTITATIVE_CATEGORIES)
def test_every_bench_category_has_its_table_1_column(category):
    qa_type = "qualitative" if category in QUALITATIVE_CATEGORIES else "quantitative"
    column, asked = bench_column(qa_type, category)
    assert column in COLUMNS
    assert asked == (category.split("_")[0] if qa_type == "qualitative" else None)
    if asked:
        assert asked in column.lower().split("/")


def test_unknown_bench_category_is_an_error():
    with pytest.raises(SubmissionError, match="unknown SpatialRGPT-Bench category 'color_choice'"):
        bench_column("qualitative", "color_choice")


@pytest.mark.parametrize("text, hour", [("at 10 o'clock", 10), ("Roughly at ten o'clock.", 10), ("12 oclock", 12),
                                        ("at 0 o'clock", 12), ("at 13 o'clock", None), ("to the left", None)])
def test_clock_hour(text, hour):
    assert clock_hour(text) == hour


def test_hour_error_is_circular():
    assert [hour_error(12, 1), hour_error(1, 12), hour_error(11, 2), hour_error(3, 9), hour_error(6, 6)] == [1, 1, 3, 6, 0]


def test_table_layout_and_raw_records_equal_samples(tmp_path, capsys):
    answers = {r["id"]: (_answer(r) if k % 2 else _wrong(r)) for k, r in enumerate(RECORDS)}
    report = score_spatialbench(read_spatialbench(BENCH, images_root=tmp_path), answers)
    assert score_spatialbench(RECORDS, answers).to_dict() == report.to_dict()
    pred = _write_predictions(tmp_path / "half.json", answers)
    assert main(["score", "--bench", str(BENCH), "--pred", str(pred)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table == format_table(report, title=f"{pred} vs {BENCH}").splitlines()
    assert "| | Below/Above | Left/Right | Big/Small | Tall/Short | Wide/Thin | Behind/Front | Avg |" in table
    assert "| Success rate (%) ↑ | 50.00 | 50.00 | 50.00 | 50.00 | 50.00 | 50.00 | 50.00 |" in table
    assert "| | Direct distance | Horizontal distance | Vertical distance | Width | Height | Direction |" in table
    assert "| Success rate (%) ↑ | 50.00 | 50.00 | 50.00 | 50.00 | 50.00 | 50.00 |" in table
    assert "| Abs. rel. error ↓ | 0.50 | 0.50 | 0.50 | 0.50 | 0.50 | - |" in table
    assert "| n | 16 | 20 | 20 | 10 | 10 | 8 |" in table
    assert "unreadable ground-truth answers (left out): 0" in table


def test_spatialrgpt_own_answer_file_and_jsonl_are_accepted(tmp_path, capsys):
    own = tmp_path / "answer.jsonl"  # what SpatialRGPT's eval script writes, one line per question
    own.write_text("".join(json.dumps({"question_id": r["id"], "pred": _answer(r), "gt": _answer(r),
                                       "qa_info": r["qa_info"]}) + "\n" for r in RECORDS))
    assert _score_json(capsys, "--pred", str(own))["columns"]["Width"]["success"] == 100.0


def test_missing_predictions_are_an_error_unless_partial(tmp_path, capsys):
    pred = _write_predictions(tmp_path / "some.json", {r["id"]: _answer(r) for r in RECORDS[:3]})
    err = _error(capsys, "--bench", str(BENCH), "--pred", str(pred))
    assert err == ("smolrgpt score: error: 201 benchmark id(s) have no prediction ('0003_left_predicate', "
                   "'0004_left_predicate', '0005_left_predicate', '0006_right_predicate', '0007_right_predicate', "
                   "...); use --partial / partial=True to score the predicted ones only")
    data = _score_json(capsys, "--pred", str(pred), "--partial")
    assert data["columns"]["Left/Right"] == {"type": "qualitative", "n": 3, "correct": 3, "success": 100.0}
    assert data["columns"]["Width"]["success"] is None and len(data["missing"]) == 201


@pytest.mark.parametrize("content, message", [
    (json.dumps([{"id": "nope", "answer": "1 m"}] + [{"id": r["id"], "answer": "x"} for r in RECORDS]),
     "{pred}: 1 id(s) are not in the benchmark {bench} ('nope'); use --partial to score the overlap"),
    (json.dumps([{"id": RECORDS[0]["id"], "answer": "a"}, {"id": RECORDS[0]["id"], "answer": "b"}]),
     "{pred}: id '0000_left_predicate' appears more than once"),
    (json.dumps({r["id"]: _answer(r) for r in RECORDS[:2]}),
     '{pred}: expected a JSON array (or JSON Lines) of {{"id": ..., "answer": ...}} objects, got an object mapping '
     'keys to values (e.g. {{id: answer}})'),
    (json.dumps({"predictions": [{"id": "a", "answer": "b"}]}),
     '{pred}: expected a JSON array (or JSON Lines) of {{"id": ..., "answer": ...}} objects, got an object holding '
     "the list 'predictions'"),
    (json.dumps([{"id": "a", "normalized_answer": "left"}]),
     '{pred}: record 0 needs \'id\' and \'answer\' (has: id, normalized_answer); expected a JSON array (or JSON Lines) '
     'of {{"id": ..., "answer": ...}} objects'),
    (json.dumps(["left", "right"]),
     '{pred}: element 0 is a JSON str; expected a JSON array (or JSON Lines) of {{"id": ..., "answer": ...}} objects'),
])
def test_bad_prediction_files_give_one_clear_line(tmp_path, capsys, content, message):
    pred = tmp_path / "pred.json"
    pred.write_text(content)
    err = _error(capsys, "--bench", str(BENCH), "--pred", str(pred))
    assert err == "smolrgpt score: error: " + message.format(pred=pred, bench=BENCH)


def test_non_utf8_files_name_the_file(tmp_path, capsys):
    pred = tmp_path / "latin1.json"
    pred.write_bytes('[{"id": "a", "answer": "5 m\xe8tres"}]'.encode("latin-1"))
    assert _error(capsys, "--bench", str(BENCH), "--pred", str(pred)) == (
        f"smolrgpt score: error: {pred}: not UTF-8 text (byte 0xe8 at offset 27); save it as UTF-8 JSON")
    assert _error(capsys, "--bench", str(pred), "--pred", str(pred)).startswith(
        f"smolrgpt score: error: {pred}: not UTF-8 text")


def test_bad_bench_file_names_record_and_file(tmp_path, capsys):
    record = json.loads(json.dumps(RECORDS[5]))
    record["qa_info"]["category"] = "color_choice"
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps([RECORDS[0], record]))
    pred = _write_predictions(tmp_path / "p.json", {RECORDS[0]["id"]: "Yes."})
    assert _error(capsys, "--bench", str(bench), "--pred", str(pred)) == (
        f"smolrgpt score: error: record '0005_left_predicate' in {bench}#record 1: unknown SpatialRGPT-Bench "
        "category 'color_choice' (type 'qualitative')")


# --------------------------------------------------------------------------- eval
@pytest.fixture()
def small_bench(tmp_path) -> tuple[Path, Path]:
    """One record per category, with its images (the reader's layout: images_root / file_path)."""
    chosen, seen = [], set()
    for r in RECORDS:
        if r["qa_info"]["category"] not in seen:
            seen.add(r["qa_info"]["category"])
            chosen.append(r)
    images, depths = tmp_path / "images", tmp_path / "depths"
    rng = np.random.default_rng(0)
    for r in chosen:
        path = images / r["image_info"]["file_path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(path)
        depth = (depths / r["image_info"]["file_path"]).with_suffix(".png")  # a monocular model's output
        depth.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (480, 640), dtype=np.uint8), mode="L").save(depth)
    bench = tmp_path / "SpatialRGPT-Bench_v1.json"
    bench.write_text(json.dumps(chosen))
    return bench, images, depths


def test_eval_on_the_bench_writes_the_same_table_as_score(tmp_path, small_bench, capsys):
    bench, images, depths = small_bench
    checkpoint = tmp_path / "tiny"
    assert main(["init", "--preset", "smolrgpt-tiny", "--out", str(checkpoint), "--seed", "1"]) == 0
    out = tmp_path / "eval"
    assert main(["eval", "--model", str(checkpoint), "--data", str(bench), "--images-root", str(images),
                 "--depths-root", str(depths), "--out", str(out), "--max-new-tokens", "4", "--no-progress", "--format", "spatialbench"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert {c: v["n"] for c, v in report["columns"].items()} == {
        c: (4 if c in ("Below/Above", "Left/Right", "Tall/Short") else 2 if "/" in c else 1) for c in COLUMNS}
    assert report["unreadable_ground_truth"] == 0 and len(report["results"]) == 24
    table = (out / "report.txt").read_text()
    assert table.startswith("SpatialRGPT-Bench: SpatialRGPT-Bench_v1.json") and table.strip() in printed
    # the raw answers it wrote score to the same columns with `smolrgpt score --bench`
    data = json.loads(json.dumps(report))
    assert main(["score", "--bench", str(bench), "--pred", str(out / "predictions.jsonl"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["columns"] == data["columns"]


def test_eval_on_the_bench_refuses_gt_and_needs_depth_maps(tmp_path, small_bench, capsys):
    bench, images, depths = small_bench
    common = ["eval", "--model", str(tmp_path / "none"), "--data", str(bench), "--images-root", str(images),
              "--out", str(tmp_path / "e")]
    assert main(common + ["--depths-root", str(depths), "--gt", str(bench)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"smolrgpt eval: error: {bench} is SpatialRGPT-Bench, which holds its own answers: drop --gt")
    assert main(common) == 2
    assert capsys.readouterr().err.strip() == (
        f"smolrgpt eval: error: {bench} is SpatialRGPT-Bench, which ships no depth maps: pass --depths-root, a "
        "folder with one depth PNG per image at <depths-root>/<image_info.file_path with .png>, bright = near "
        "(as Depth Anything writes them)")
    assert not (tmp_path / "e").exists()  # refused before writing anything
