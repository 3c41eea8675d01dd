"""The official Track 3 scorer: every rule on hand-made cases, the shipped submissions, and the CLI."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from smolrgpt.cli import main
from smolrgpt.evaluation.score import (
    GroundTruth,
    SubmissionError,
    ground_truth_index,
    is_correct,
    is_valid_prediction,
    load_records,
    score_files,
    score_submission,
)

# The real files live in the shared folder beside the checkout; SMOLRGPT_TRACK3_DIR overrides.
TRACK3_DIR = Path(os.environ.get("SMOLRGPT_TRACK3_DIR",
                                 Path(__file__).resolve().parents[2] / "shared" / "data" / "track3"))
needs_track3 = pytest.mark.skipif(not (TRACK3_DIR / "val_answers.json").is_file(),
                                  reason=f"{TRACK3_DIR} not found (set SMOLRGPT_TRACK3_DIR)")

# Published scores (data README): count, distance, left_right, mcq, final.
PUBLISHED = {
    "val_predictions_partial.json": ("47.00", "49.79", "52.00", "47.15", "48.99"),
    "val_predictions_random.json": ("12.00", "9.47", "54.20", "8.11", "20.94"),
}


def _published_order(report) -> tuple[str, ...]:
    values = [report.categories[c] for c in ("count", "distance", "left_right", "mcq")] + [report.final]
    return tuple(f"{v:.2f}" for v in values)


# --------------------------------------------------------------------------- distance
@pytest.mark.parametrize("gt, pred, expected", [
    (10, 9.0, True), (10, "11", True), (10, 8.99, False), (10, "11.01", False),
    # on the bound as written, outside it in binary floats (0.9*4.2 = 3.7800000000000002, 1.1*1.13 =
    # 1.2429999999999999): the leaderboard's script rejects both, and so does the default rule
    (4.2, "3.78", False), (1.13, 1.243, False), (4.2, "3.7799", False), (1.13, "1.2431", False),
    ("6.36", "6.36", True), (13, "13.0", True), (6.36, "  6.5 ", True),
])
def test_distance_within_ten_percent_official_float_rule(gt, pred, expected):
    assert is_correct("distance", gt, pred) is expected
    assert is_correct("distance", gt, pred, rule="official") is expected


@pytest.mark.parametrize("gt, pred, expected", [
    (4.2, "3.78", True), (1.13, 1.243, True), (4.2, "3.7799", False), (1.13, "1.2431", False), (10, "11", True),
])
def test_distance_exact_decimal_rule_reads_the_bounds_as_written(gt, pred, expected):
    assert is_correct("distance", gt, pred, rule="exact-decimal") is expected


def _leaderboard(gt: float, pred: float) -> bool:
    """The leaderboard script's comparison, written here as the spec states it."""
    return pred <= 1.10 * gt and pred >= 0.90 * gt


def test_official_rule_is_the_leaderboard_expression_on_boundary_values():
    """Predictions at 0.9*gt and 1.1*gt computed as exact decimals: where float and decimal disagree,
    the default rule must side with the float expression, every time."""
    from decimal import Decimal

    differ = 0
    for hundredths in range(1, 1841):  # every 2-decimal gt from 0.01 to 18.40 m, the real range
        gt = Decimal(hundredths) / 100
        for factor in ("0.9", "1.1"):
            pred = str(gt * Decimal(factor))
            official = _leaderboard(float(gt), float(pred))
            assert is_correct("distance", str(gt), pred) is official, (gt, pred)
            assert is_correct("distance", str(gt), pred, rule="exact-decimal") is True, (gt, pred)
            differ += not official
    assert differ > 100  # the two rules really differ on this set (the count is in docs/evaluation.md)


def test_unknown_rule_is_an_error():
    with pytest.raises(SubmissionError, match="unknown comparison rule 'float' "
                                              r"\(expected one of official, exact-decimal\)"):
        score_submission(GT, [{"id": r["id"], "normalized_answer": r["normalized_answer"]} for r in GT], rule="float")


@pytest.mark.parametrize("pred, expected", [(0, True), ("0", True), ("0.00", True), (0.0, True),
                                            (0.01, False), ("-0.0", True), ("1e-9", False)])
def test_distance_zero_ground_truth_accepts_only_zero(pred, expected):
    assert is_correct("distance", 0, pred) is expected


@pytest.mark.parametrize("pred", ["abc", "6.36m", "", None, "nan", "inf", True, "unknown"])
def test_unreadable_distance_is_wrong_and_invalid(pred):
    assert is_correct("distance", 6.36, pred) is False
    assert is_valid_prediction("distance", pred) is False


# --------------------------------------------------------------------------- count
@pytest.mark.parametrize("gt, pred, expected", [
    (2, "2.9", True),  # truncation, not rounding
    (2, 2.0, True), ("2", 2, True), (3, "2.9", False), (2, "3", False), (0, "-0.5", True),
    (4, "4.999", True), (4, "5", False),
])
def test_count_truncates(gt, pred, expected):
    assert is_correct("count", gt, pred) is expected


@pytest.mark.parametrize("pred", ["three", "two pallets", None, "nan"])
def test_unreadable_count_is_wrong_and_invalid(pred):
    assert is_correct("count", 3, pred) is False
    assert is_valid_prediction("count", pred) is False


# --------------------------------------------------------------------------- left_right
@pytest.mark.parametrize("alias", ["l", "L", "left", " Left ", "left side", "LEFT SIDE", "left-hand", "left hand"])
def test_left_aliases(alias):
    assert is_correct("left_right", "left", alias)
    assert not is_correct("left_right", "right", alias)


@pytest.mark.parametrize("alias", ["r", "right", "Right side", "right-hand", "right hand"])
def test_right_aliases(alias):
    assert is_correct("left_right", "right", alias)
    assert not is_correct("left_right", "left", alias)


@pytest.mark.parametrize("pred", ["on the left", "lefts", "yes", "", None])
def test_left_right_needs_an_exact_alias(pred):
    assert not is_correct("left_right", "left", pred)
    assert not is_valid_prediction("left_right", pred)


# --------------------------------------------------------------------------- mcq
@pytest.mark.parametrize("gt, pred, expected", [
    ("3", "three", True), ("3", "Three", True), ("10", "ten", True), ("12", "12", True), (12, "12", True),
    ("12", "Region 12", True), ("12", "[Region 12] is best", True),
    ("1", "12", False),  # the whole first run of digits, not a prefix
    ("12", "12 or 3", True), ("3", "12 or 3", False),  # only the first integer counts
    ("2", "often 2", True),  # number words are whole words only: "often" keeps its "ten"
    ("11", "eleven", False),  # only zero..ten are number words
    ("0", "zero", True), ("5", 5.0, True),
])
def test_mcq_first_integer(gt, pred, expected):
    assert is_correct("mcq", gt, pred) is expected


def test_mcq_without_digits_is_invalid():
    assert not is_valid_prediction("mcq", "unknown")
    assert is_valid_prediction("mcq", "the pallet three")


def test_unknown_category_is_an_error():
    with pytest.raises(SubmissionError, match="unknown category 'size'"):
        is_correct("size", 1, 1)


# --------------------------------------------------------------------------- whole submissions
GT = [
    {"id": "d1", "category": "distance", "normalized_answer": 10.0},
    {"id": "d2", "category": "distance", "normalized_answer": "4"},
    {"id": "c1", "category": "count", "normalized_answer": 2},
    {"id": "c2", "category": "count", "normalized_answer": 3},
    {"id": "l1", "category": "left_right", "normalized_answer": "left"},
    {"id": "m1", "category": "mcq", "normalized_answer": "7"},
]


def test_macro_average_invalid_listing_and_errors():
    pred = [{"id": "d1", "normalized_answer": "10.5"}, {"id": "d2", "normalized_answer": "far"},
            {"id": "c1", "normalized_answer": "2.9"}, {"id": "c2", "normalized_answer": 5},
            {"id": "l1", "normalized_answer": "L"}, {"id": "m1", "normalized_answer": "eleven"}]
    report = score_submission(GT, pred)
    assert report.categories == {"left_right": 100.0, "count": 50.0, "distance": 50.0, "mcq": 0.0}
    assert report.counts == {"left_right": 1, "count": 2, "distance": 2, "mcq": 1}
    assert report.final == pytest.approx(50.0)  # macro: (100 + 50 + 50 + 0) / 4, not 3/6 overall
    assert report.invalid == ["d2", "m1"]  # "eleven" is not one of the number words zero..ten
    assert report.invalid_values == {"d2": "far", "m1": "eleven"}
    assert report.distance_mae == pytest.approx(0.5)  # only the numeric prediction
    assert report.distance_abs_rel == pytest.approx(0.05)
    assert report.count_mae == pytest.approx((0.9 + 2) / 2)
    assert report.missing == [] and report.extra == []


def test_missing_and_extra_ids_are_a_clear_error():
    pred = [{"id": r["id"], "normalized_answer": r["normalized_answer"]} for r in GT[:4]]
    pred.append({"id": "zz", "normalized_answer": "1"})
    with pytest.raises(SubmissionError) as info:
        score_submission(GT, pred)
    message = str(info.value)
    assert "2 ground-truth id(s) missing from the submission ('l1', 'm1')" in message
    assert "1 id(s) not in the ground truth ('zz')" in message
    assert "--partial" in message


def test_error_lists_at_most_five_examples():
    with pytest.raises(SubmissionError, match=r"6 ground-truth id\(s\) missing .*'c1', 'c2', 'l1', \.\.\.\)"):
        score_submission(GT, [])


def test_partial_scores_only_the_overlap():
    pred = [{"id": "d1", "normalized_answer": 10}, {"id": "l1", "normalized_answer": "right"},
            {"id": "zz", "normalized_answer": "1"}]
    report = score_submission(GT, pred, partial=True)
    assert report.counts == {"left_right": 1, "count": 0, "distance": 1, "mcq": 0}
    assert report.categories == {"left_right": 0.0, "count": None, "distance": 100.0, "mcq": None}
    assert report.final == pytest.approx(50.0)  # categories with no scored record are left out
    assert report.missing == ["d2", "c1", "c2", "m1"] and report.extra == ["zz"]
    assert report.partial is True


def test_duplicate_ids_are_an_error():
    with pytest.raises(SubmissionError, match="id 'd1' appears more than once"):
        score_submission(GT, [{"id": "d1", "normalized_answer": 1}] * 2, partial=True)
    with pytest.raises(SubmissionError, match="ground truth: id 'd1' appears more than once"):
        ground_truth_index(GT + GT[:1])


def test_full_track3_records_as_ground_truth_and_category_inference():
    record = {"id": "x", "conversations": [{"from": "human", "value": "<image>\nHow far is the pallet <mask> "
                                            "from the pallet <mask>?"}, {"from": "gpt", "value": "..."}],
              "normalized_answer": 6.36}
    index = ground_truth_index([record])
    assert index == {"x": GroundTruth("distance", 6.36)}
    with pytest.raises(SubmissionError, match="record 'y' has neither 'category' nor a question"):
        ground_truth_index([{"id": "y", "normalized_answer": 1}])


def test_loaders_accept_json_lines_and_name_the_bad_line(tmp_path):
    good = tmp_path / "p.jsonl"
    good.write_text('{"id": "a", "normalized_answer": 1}\n\n{"id": "b", "normalized_answer": "left"}\n')
    assert [r["id"] for r in load_records(good)] == ["a", "b"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "normalized_answer": 1}\n{"id": \n')
    with pytest.raises(SubmissionError, match=r"bad\.jsonl:2: not a JSON object"):
        load_records(bad)
    with pytest.raises(SubmissionError, match="cannot read"):
        load_records(tmp_path / "absent.json")


# --------------------------------------------------------------------------- shipped files
@needs_track3
@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_shipped_submissions_reproduce_published_scores(name):
    report = score_files(TRACK3_DIR / "val_answers.json", TRACK3_DIR / name)
    assert _published_order(report) == PUBLISHED[name]
    assert report.counts == {"left_right": 500, "count": 500, "distance": 486, "mcq": 456}
    assert report.invalid == []


@needs_track3
def test_shipped_submissions_score_the_same_with_the_official_float_formula():
    truth = {r["id"]: r for r in json.loads((TRACK3_DIR / "val_answers.json").read_text())}
    for name in PUBLISHED:
        for pred in json.loads((TRACK3_DIR / name).read_text()):
            gt = truth[pred["id"]]
            if gt["category"] == "distance":
                g, p = float(gt["normalized_answer"]), float(pred["normalized_answer"])
                assert is_correct("distance", g, p) == _leaderboard(g, p), pred["id"]
                assert is_correct("distance", g, p, rule="exact-decimal") == _leaderboard(g, p), pred["id"]


@needs_track3
def test_ground_truth_as_prediction_scores_100():
    gt = load_records(TRACK3_DIR / "val_answers.json")
    report = score_submission(gt, [{"id": r["id"], "normalized_answer": r["normalized_answer"]} for r in gt])
    assert _published_order(report) == ("100.00",) * 5
    train = load_records(TRACK3_DIR / "train_sample.json")  # full records, typed answers
    report = score_submission(train, {r["id"]: str(r["normalized_answer"]) for r in train})
    assert report.final == 100.0


# --------------------------------------------------------------------------- CLI
@needs_track3
def test_cli_table_json_and_chart(tmp_path, capsys):
    gt, pred = str(TRACK3_DIR / "val_answers.json"), str(TRACK3_DIR / "val_predictions_random.json")
    assert main(["score", "--gt", gt, "--pred", pred]) == 0
    table = capsys.readouterr().out
    assert "count               12.00       60    500" in table.splitlines()
    assert "distance             9.47       46    486" in table.splitlines()
    assert "final (macro)       20.94" in table.splitlines()
    assert "invalid predictions: none" in table

    chart = tmp_path / "charts" / "random.png"
    assert main(["score", "--gt", gt, "--pred", pred, "--json", "--chart", str(chart)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert round(data["final"], 2) == 20.94
    assert {k: round(v, 2) for k, v in data["categories"].items()} == {
        "left_right": 54.2, "count": 12.0, "distance": 9.47, "mcq": 8.11}
    assert data["counts"]["distance"] == 486 and data["invalid"] == [] and data["missing"] == []
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and chart.stat().st_size > 5000


def test_cli_reports_invalid_predictions_and_errors(tmp_path, capsys):
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps(GT))
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps([{"id": r["id"], "normalized_answer": "?"} for r in GT]))
    assert main(["score", "--gt", str(gt), "--pred", str(pred)]) == 0
    out = capsys.readouterr().out
    assert "invalid predictions (counted wrong): 6" in out and "  d1: '?'" in out
    assert "final (macro)        0.00" in out.splitlines()

    pred.write_text(json.dumps([{"id": "d1", "normalized_answer": 10}]))
    assert main(["score", "--gt", str(gt), "--pred", str(pred)]) == 2
    assert "smolrgpt score: error: 5 ground-truth id(s) missing" in capsys.readouterr().err
    assert main(["score", "--gt", str(gt), "--pred", str(pred), "--partial", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["categories"]["distance"] == 100.0 and data["missing"] == ["d2", "c1", "c2", "l1", "m1"]


def test_scoring_never_imports_torch(tmp_path):
    """The evaluation modules (and the cli dispatcher) must not pull in torch or the model.

    The package's own __init__ imports the model eagerly (not this module's concern), so the check
    registers a bare `smolrgpt` package first and then imports exactly what `smolrgpt score` uses.
    """
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps(GT))
    code = ("import importlib.util, sys, types\n"
            "spec = importlib.util.find_spec('smolrgpt')\n"
            "package = types.ModuleType('smolrgpt'); package.__path__ = list(spec.submodule_search_locations)\n"
            "sys.modules['smolrgpt'] = package\n"
            "from smolrgpt.cli import main\n"
            f"rc = main(['score', '--gt', {str(gt)!r}, '--pred', {str(gt)!r}, '--json'])\n"
            "import smolrgpt.evaluation.normalize, smolrgpt.evaluation.spatialbench, smolrgpt.data.spatialbench\n"
            "sys.exit(10 + rc if 'torch' in sys.modules else rc)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr or "torch was imported"
    assert json.loads(result.stdout)["final"] == 100.0


def test_eval_gt_of_another_split_says_so(tmp_path, capsys):
    from conftest import write_track3_split

    split = write_track3_split(tmp_path / "data", split="test", frames=2, questions_per_frame=2, with_answers=False)
    other = tmp_path / "val_answers.json"
    other.write_text(json.dumps(GT))
    args = ["eval", "--model", str(tmp_path / "unused"), "--data", str(split), "--out", str(tmp_path / "e"),
            "--no-progress", "--gt", str(other)]
    assert main(args) == 2
    assert capsys.readouterr().err.strip() == (
        f"smolrgpt eval: error: {other}: 4 of the 4 question ids of {split} are not in this answers file "
        "(e.g. '00000000000000000000000000000000'); none of them is there: it holds the answers of another split")
    some = json.loads(split.read_text())[:1]
    other.write_text(json.dumps([{"id": r["id"], "category": "count", "normalized_answer": 1} for r in some]))
    assert main(args) == 2
    assert "3 of the 4 question ids" in capsys.readouterr().err and not (tmp_path / "e").exists()


@pytest.mark.parametrize("content, message", [
    ('{"d1": 10, "d2": 1}', 'expected a JSON array (or JSON Lines) of {"id": ..., "normalized_answer": ...} objects, '
                            "got an object mapping keys to values (e.g. {id: answer})"),
    ('{"predictions": [{"id": "d1", "normalized_answer": 10}]}',
     'expected a JSON array (or JSON Lines) of {"id": ..., "normalized_answer": ...} objects, got an object holding '
     "the list 'predictions'"),
    ('[{"id": "d1", "answer": "10 m"}]', "record 0 needs 'id' and 'normalized_answer' (has: answer, id); expected a "
                                         'JSON array (or JSON Lines) of {"id": ..., "normalized_answer": ...} objects'),
])
def test_score_names_the_expected_submission_shape(tmp_path, capsys, content, message):
    gt, pred = tmp_path / "gt.json", tmp_path / "pred.json"
    gt.write_text(json.dumps(GT))
    pred.write_text(content)
    assert main(["score", "--gt", str(gt), "--pred", str(pred)]) == 2
    assert capsys.readouterr().err.strip() == f"smolrgpt score: error: {pred}: {message}"


def test_score_and_normalize_on_non_utf8_files_name_the_file(tmp_path, capsys):
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes('{"question": "Is it left?", "answer": "à gauche"}\n'.encode("latin-1"))
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps(GT))
    expected = f"{bad}: not UTF-8 text (byte 0xe0 at offset 39); save it as UTF-8 JSON"
    assert main(["score", "--gt", str(gt), "--pred", str(bad)]) == 2
    assert capsys.readouterr().err.strip() == f"smolrgpt score: error: {expected}"
    assert main(["score", "--gt", str(bad), "--pred", str(gt)]) == 2
    assert capsys.readouterr().err.strip() == f"smolrgpt score: error: {expected}"
    assert main(["normalize", "--in", str(bad), "--out", str(tmp_path / "out.jsonl")]) == 2
    assert capsys.readouterr().err.strip() == f"smolrgpt normalize: error: {expected}"


@needs_track3
def test_boundary_predictions_on_the_validation_ids_official_against_exact_decimal(tmp_path, capsys):
    """Every distance answer predicted exactly on a bound as written (0.9*gt and 1.1*gt in turn), every
    other answer right: the official float rule rejects 43 of 486 (all of them low bounds)."""
    from decimal import Decimal

    gt = load_records(TRACK3_DIR / "val_answers.json")
    preds, k = [], 0
    for r in gt:
        answer = r["normalized_answer"]
        if r["category"] == "distance":
            answer, k = str(Decimal(repr(answer)) * Decimal(("0.9", "1.1")[k % 2])), k + 1
        preds.append({"id": r["id"], "normalized_answer": answer})
    path = tmp_path / "boundary.json"
    path.write_text(json.dumps(preds))
    scores = {}
    for rule in ("official", "exact-decimal"):
        assert main(["score", "--gt", str(TRACK3_DIR / "val_answers.json"), "--pred", str(path), "--json",
                     *(["--rule", rule] if rule != "official" else [])]) == 0
        data = json.loads(capsys.readouterr().out)
        scores[rule] = (data["correct"]["distance"], f"{data['categories']['distance']:.2f}", f"{data['final']:.2f}")
    assert scores == {"official": (443, "91.15", "97.79"), "exact-decimal": (486, "100.00", "100.00")}
    differ = [p for p, r in zip(preds, gt) if r["category"] == "distance"
              and is_correct("distance", r["normalized_answer"], p["normalized_answer"])
              != is_correct("distance", r["normalized_answer"], p["normalized_answer"], rule="exact-decimal")]
    assert len(differ) == 43
